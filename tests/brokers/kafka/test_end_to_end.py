"""End to end: 100,000 messages published in batches while three consumers of one
group (three broker objects, each in its own task) drain them."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import pytest
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.api import OutgoingMessage
from tideflow.plugins.kafka import KafkaBroker

from tideflow.testing import unique_name

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

COUNT = 100_000
BATCH = 1_000
CONSUMERS = 3
HANG = 300.0  # bounds a hang only: what it waits for is a condition


async def test_three_consumers_drain_a_hundred_thousand_messages(
    make_broker: Callable[..., KafkaBroker],
    record_property: Callable[[str, object], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = TopicNode(name=unique_name("kt"), broker="main", partitions=6)
    group = unique_name("g")
    # ordinary batching: nothing here reads Tansu's log-end offsets
    publisher = make_broker([topic], config={})
    consumers = [make_broker([topic], config={}) for _ in range(CONSUMERS)]
    handled: Counter[bytes] = Counter()
    per_consumer = [0] * CONSUMERS
    everything = asyncio.Event()

    async def work(index: int, broker: KafkaBroker) -> None:
        while not everything.is_set():
            batch = await broker.consume(topic.name, group, max_messages=500, wait=0.2)
            handled.update(m.value for m in batch)
            per_consumer[index] += len(batch)
            await broker.ack(batch)
            if len(handled) == COUNT:
                everything.set()

    values = [f"{i:07}".encode().ljust(100, b".") for i in range(COUNT)]
    started = time.monotonic()
    try:
        await publisher.ensure_topic(topic.name, [group])
        workers = [asyncio.create_task(work(i, b)) for i, b in enumerate(consumers)]
        # Every consumer owns partitions before the first message: one that joined
        # late (when the machine gets round to it) would find the others had drained
        # everything, and its share would prove nothing about the group.
        joined_by = time.monotonic() + HANG

        def owned() -> list[list[int]]:
            return [b.assigned_partitions(topic.name, group) for b in consumers]

        while not (all(owned()) and sum(map(len, owned())) == topic.partitions):
            assert time.monotonic() < joined_by, f"the group never settled: {owned()}"
            await asyncio.sleep(0.05)
        for start in range(0, COUNT, BATCH):
            await publisher.publish(
                topic.name, [OutgoingMessage(v, key=v[:7]) for v in values[start : start + BATCH]]
            )
        published = time.monotonic()
        await asyncio.wait_for(everything.wait(), HANG)
        drained = time.monotonic()
        await asyncio.gather(*workers)
    finally:
        for broker in (publisher, *consumers):
            await broker.aclose()

    twice = sum(n - 1 for n in handled.values())
    record_property("handled_twice", twice)
    with capsys.disabled():
        print(
            f"\nkafka end to end: {COUNT} messages, published in {published - started:.1f}s, "
            f"drained {drained - started:.1f}s after the start; per consumer {per_consumer}; "
            f"handled twice: {twice}"
        )
    assert set(handled) == set(values)
    assert all(per_consumer), f"a consumer handled nothing: {per_consumer}"
