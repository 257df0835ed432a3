"""A group member whose consumer is busy (issue 11, item 2): it holds all it may
handle, calls `keep_membership` instead of `consume`, and its prefetch buffer is
full; a consumer that joins the group still gets partitions within seconds, and
nothing is lost by pausing the fetch while the buffer is full."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.api import Message
from tideflow.plugins.kafka import KafkaBroker
from tideflow.plugins.kafka.member import PREFETCH, REFILL_AT

from tideflow.testing import unique_name

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

#: Longest wait for something that must happen (librdkafka's max.poll.interval.ms,
#: after which a member that stopped polling would leave, is 300 s).
WAIT = 20.0

BrokerMaker = Callable[..., KafkaBroker]


def produce_to_both_partitions(bootstrap: str, topic: str, count: int) -> None:
    """Message i to partition i % 2, with the plain client: without keys librdkafka
    may put a whole batch in one partition, and then the consumer that keeps the
    other would have nothing to prove."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(count):
        producer.produce(topic, str(i).encode(), partition=i % 2)
    assert producer.flush(30) == 0, "every message delivered"


async def test_a_busy_member_with_a_full_buffer_lets_a_new_one_in(
    make_broker: BrokerMaker, kafka_bootstrap: str
) -> None:
    topic = TopicNode(name=unique_name("kt"), broker="main", partitions=2)
    group = unique_name("g")
    count = PREFETCH + PREFETCH // 2
    first, second = make_broker([topic]), make_broker([topic])
    held: list[Message] = []
    taken: dict[KafkaBroker, list[Message]] = {first: [], second: []}
    try:
        await first.ensure_topic(topic.name, [group])
        await asyncio.to_thread(produce_to_both_partitions, kafka_bootstrap, topic.name, count)
        deadline = time.monotonic() + WAIT
        while not held:
            assert time.monotonic() < deadline, "the first consumer got nothing"
            held = await first.consume(topic.name, group, max_messages=1, wait=1.0)
        member = first._member(topic.name, group)
        while len(member.fetched) <= REFILL_AT:  # the buffer fills up
            assert time.monotonic() < deadline, "the prefetch buffer never filled"
            await first.keep_membership(topic.name, group)
            await asyncio.sleep(0.05)

        # busy: the first one only keeps its membership while the second joins
        while not taken[second]:
            assert time.monotonic() < deadline, "the new consumer never got a partition"
            await first.keep_membership(topic.name, group)
            batch = await second.consume(topic.name, group, max_messages=100, wait=0.5)
            await second.ack(batch)
            taken[second] += batch
        assert first.assigned_partitions(topic.name, group) != [0, 1]
        await first.ack(held)

        # and then everything comes, once (the partition that moved from the
        # offset the first consumer committed)
        deadline = time.monotonic() + 3 * WAIT
        values = {m.value for m in held + taken[second]}
        while len(values) < count:
            assert time.monotonic() < deadline, f"{count - len(values)} messages never came"
            for consumer in (first, second):
                batch = await consumer.consume(topic.name, group, max_messages=500, wait=0.1)
                await consumer.ack(batch)
                taken[consumer] += batch
                values.update(m.value for m in batch)
    finally:
        await first.aclose()
        await second.aclose()
    assert values == {str(i).encode() for i in range(count)}
    assert taken[first] and taken[second]
    assert first.assigned_partitions(topic.name, group) == []  # closed
