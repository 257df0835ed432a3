"""`consume` never returns more than `max_messages` (issue 11, item 2: an instance
must hold no more than its free slots). nats-py's `fetch` also returns whatever
reached the pull subscription after an earlier fetch gave up waiting; the broker
keeps that for the next `consume`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.api import OutgoingMessage
from tideflow.plugins.nats_broker import NatsBroker, durable_name, stream_name

from tideflow.testing import unique_name

pytestmark = pytest.mark.anyio

BrokerMaker = Callable[..., NatsBroker]
TopicMaker = Callable[..., TopicNode]
WAIT = 10.0


async def test_messages_delivered_after_a_fetch_gave_up_wait_for_the_next_consume(
    brokers: BrokerMaker, new_topic: TopicMaker
) -> None:
    topic, group = new_topic(), unique_name("g")
    broker = brokers([topic])
    await broker.ensure_topic(topic.name, [group])
    assert await broker.consume(topic.name, group, max_messages=1, wait=0.05) == []
    await broker.publish(topic.name, [OutgoingMessage(f"m{i}".encode()) for i in range(5)])

    # a pull request whose messages arrive when no fetch waits for them (as when
    # one ended a moment before the server answered)
    subscription = broker._readers[(topic.name, group)].subscription
    client = broker._client
    assert client is not None
    request = json.dumps({"batch": 5, "no_wait": True}).encode()
    await client.publish(
        f"$JS.API.CONSUMER.MSG.NEXT.{stream_name(topic.name)}.{durable_name(group)}",
        request,
        reply=subscription._deliver,
    )
    deadline = time.monotonic() + WAIT
    while subscription.pending_msgs < 5:
        assert time.monotonic() < deadline, "the messages never reached the subscription"
        await asyncio.sleep(0.01)

    first = await broker.consume(topic.name, group, max_messages=2, wait=1.0)
    assert [m.value for m in first] == [b"m0", b"m1"]
    rest = await broker.consume(topic.name, group, max_messages=10, wait=1.0)
    assert [m.value for m in rest] == [b"m2", b"m3", b"m4"]
    await broker.ack(first + rest)
    assert (await broker.backlog(topic.name, group)).total == 0
