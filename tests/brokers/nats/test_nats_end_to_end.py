"""End to end on a real server: 100,000 messages published while three consumers of
one group drain them; every message is handled at least once, and the duplicates
are reported (there should be none without failures)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import anyio
import pytest
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.api import OutgoingMessage
from tideflow.plugins.nats_broker import NatsBroker

from tideflow.testing import unique_name

pytestmark = pytest.mark.anyio

BrokerMaker = Callable[..., NatsBroker]
TopicMaker = Callable[..., TopicNode]

MESSAGES = 100_000
PUBLISH_BATCH = 2_000
CONSUME_BATCH = 250
CONSUMERS = 3
DEADLINE = 60.0


async def test_three_consumers_drain_100k_messages(
    brokers: BrokerMaker, new_topic: TopicMaker, record_property: Callable[[str, object], None]
) -> None:
    topic, group = new_topic(), unique_name("tf-group")
    publisher = brokers([topic])
    consumers = [brokers([topic]) for _ in range(CONSUMERS)]
    await publisher.ensure_topic(topic.name, [group])
    handled: Counter[bytes] = Counter()
    per_consumer = [0] * CONSUMERS
    published = anyio.Event()

    async def publish() -> None:
        for start in range(0, MESSAGES, PUBLISH_BATCH):
            batch = [
                OutgoingMessage(f"{i:06}".encode().ljust(100, b"."), key=f"k{i % 97}".encode())
                for i in range(start, start + PUBLISH_BATCH)
            ]
            await publisher.publish(topic.name, batch)
        published.set()

    async def consume(index: int) -> None:
        broker = consumers[index]
        while not (published.is_set() and len(handled) == MESSAGES):
            batch = await broker.consume(topic.name, group, max_messages=CONSUME_BATCH, wait=0.2)
            handled.update(m.value[:6] for m in batch)  # the "handler"
            per_consumer[index] += len(batch)
            await broker.ack(batch)

    started = time.perf_counter()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(publish)
            for index in range(CONSUMERS):
                tasks.start_soon(consume, index)
    elapsed = time.perf_counter() - started

    assert set(handled) == {f"{i:06}".encode() for i in range(MESSAGES)}
    duplicates = sum(handled.values()) - len(handled)
    assert all(per_consumer), f"a consumer got nothing: {per_consumer}"
    assert (await publisher.backlog(topic.name, group)).total == 0
    record_property("duplicates", duplicates)
    record_property("seconds", round(elapsed, 2))
    print(
        f"{MESSAGES} messages, {CONSUMERS} consumers {per_consumer}: "
        f"{elapsed:.1f}s, {duplicates} duplicates"
    )
