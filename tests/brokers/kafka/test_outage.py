"""The kafka broker through a broker outage: the Tansu process frozen (SIGSTOP)
while messages are being published and consumed, then thawed (SIGCONT)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.api import BackendError, BacklogFailure, OutgoingMessage
from tideflow.plugins.kafka import KafkaBroker
from tideflow.plugins.kafka.client import GRACE

from tideflow.testing import unique_name
from tideflow.testing.kafka import KafkaServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

WAIT = 30.0
#: request_timeout of the brokers here: shorter than the freeze below, which lasts
#: until a publish has failed for it
TIMEOUT = 3.0


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {WAIT:g}s")
        await asyncio.sleep(0.02)


async def test_publish_and_consume_through_a_frozen_server(
    make_broker: Callable[..., KafkaBroker], kafka_server: KafkaServer
) -> None:
    topic = TopicNode(name=unique_name("kt"), broker="main", partitions=3)
    group = unique_name("g")
    publisher = make_broker([topic], request_timeout=TIMEOUT)
    consumer = make_broker([topic], request_timeout=TIMEOUT)
    acknowledged: set[bytes] = set()  # published, and publish() returned
    received: set[bytes] = set()
    outcomes: list[tuple[float, float, bool]] = []  # (started, took, succeeded)
    stop_publishing = asyncio.Event()

    async def publish_batches() -> None:
        for number in range(1_000_000):
            if stop_publishing.is_set():
                return
            values = [f"b{number}-{i}".encode() for i in range(20)]
            started = time.monotonic()
            try:
                await publisher.publish(topic.name, [OutgoingMessage(v, key=v) for v in values])
            except BackendError:
                outcomes.append((started, time.monotonic() - started, False))
            else:
                outcomes.append((started, time.monotonic() - started, True))
                acknowledged.update(values)

    async def consume_and_ack() -> None:
        while True:
            batch = await consumer.consume(topic.name, group, max_messages=200, wait=0.2)
            received.update(m.value for m in batch)
            await consumer.ack(batch)

    try:
        await publisher.ensure_topic(topic.name, [group])
        tasks = [asyncio.create_task(publish_batches()), asyncio.create_task(consume_and_ack())]
        await until(lambda: len(received) >= 100, "consuming before the outage")

        with kafka_server.frozen():
            frozen_at = time.monotonic()
            failure = await consumer.read_backlog(topic.name, group, timeout=1.0)
            assert isinstance(failure, BacklogFailure)
            await until(lambda: any(not ok for _, _, ok in outcomes), "a publish failing")
        thawed_at = time.monotonic()

        await until(
            lambda: any(ok and start > thawed_at for start, _, ok in outcomes),
            "a publish succeeding after the outage",
        )
        stop_publishing.set()
        await asyncio.wait_for(tasks[0], WAIT)
        await until(lambda: acknowledged <= received, "every acknowledged message consumed")

        async def backlog() -> int:
            return (await consumer.backlog(topic.name, group)).total

        deadline = time.monotonic() + WAIT
        while (left := await backlog()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert left == 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.aclose()
        await consumer.aclose()

    assert acknowledged - received == set(), "an acknowledged publish was lost"
    longest = max(took for _, took, _ in outcomes)
    assert longest < TIMEOUT + 2 * GRACE + 1.0, f"a publish took {longest:.1f}s"
    # the batches that failed were in flight during the outage
    assert all(frozen_at - 1.0 <= start <= thawed_at for start, _, ok in outcomes if not ok)
