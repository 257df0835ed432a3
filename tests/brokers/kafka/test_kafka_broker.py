"""The `kafka` broker against a real Kafka-compatible server (Tansu): options,
topics, exact backlog readings, acknowledgement and nack semantics, consumer
groups sharing partitions, and a consumer that dies without acknowledging."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.api import (
    BackendConfigError,
    BackendContext,
    BackendError,
    Message,
    OutgoingMessage,
)
from tideflow.plugins.kafka import KafkaBroker, ledger_group
from tideflow.plugins.manager import load_plugins

from tideflow.testing import receive, unique_name

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

WAIT = 20.0  # longest wait for something that must happen

BrokerMaker = Callable[..., KafkaBroker]


def new_topic(partitions: int = 3, **fields: Any) -> TopicNode:
    return TopicNode(name=unique_name("kt"), broker="main", partitions=partitions, **fields)


def keyed(count: int, prefix: str = "m") -> list[OutgoingMessage]:
    return [
        OutgoingMessage(f"{prefix}{i}".encode(), key=f"{prefix}-key-{i}".encode())
        for i in range(count)
    ]


async def log_ends(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Log-end offsets read with a plain confluent-kafka consumer, as a check on the
    broker's own reading."""

    def read() -> dict[int, int]:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("probe")})
        try:
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)
            }
        finally:
            consumer.close()

    return await asyncio.to_thread(read)


async def ledger_ends(bootstrap: str, group: str, level: int, topic: str, partitions: int) -> int:
    """The sum over partitions of one delivery-ledger level's ends (0 for none)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(
        ledger_group(group, level), [TopicPartition(topic, p) for p in range(partitions)]
    )
    (future,) = admin.list_consumer_group_offsets([request]).values()
    result = await asyncio.wrap_future(future)
    return sum(max(tp.offset, 0) for tp in result.topic_partitions)


async def eventually(
    probe: Callable[[], Awaitable[object]], expected: object, *, what: str
) -> None:
    deadline = time.monotonic() + WAIT
    seen: object = None
    while time.monotonic() < deadline:
        seen = await probe()
        if seen == expected:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{what}: expected {expected!r}, still {seen!r} after {WAIT:g}s")


async def backlog_of(broker: KafkaBroker, topic: str, group: str) -> dict[int, int]:
    return dict((await broker.backlog(topic, group)).per_partition)


async def total_of(broker: KafkaBroker, topic: str, group: str) -> int:
    return (await broker.backlog(topic, group)).total


# --- registration and options (no server needed) -----------------------------------


def test_registers_through_its_hook() -> None:
    plugins = load_plugins(
        default_plugins=("tideflow.plugins.kafka",),
        environ={"TIDEFLOW_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert [p.message for p in plugins.problems] == []
    assert plugins.broker_class("kafka") is KafkaBroker


def test_options_become_librdkafka_settings(tmp_path: Path) -> None:
    broker = KafkaBroker(
        {
            "bootstrap": "127.0.0.1:1",
            "security_protocol": "sasl_ssl",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "alice",
            "sasl_password": "s3cret",
            "ssl_ca_location": "certs/ca.pem",
            "config": {"linger.ms": "7", "producer.batch.size": "1000", "admin.retries": "1"},
        },
        context=BackendContext("main", tmp_path / "orders.flow"),
    )
    producer, consumer = broker.client_conf("producer"), broker.client_conf("consumer")
    assert producer["security.protocol"] == "sasl_ssl"
    assert producer["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (producer["sasl.username"], producer["sasl.password"]) == ("alice", "s3cret")
    assert producer["ssl.ca.location"] == str(tmp_path / "certs" / "ca.pem")
    assert producer["linger.ms"] == consumer["linger.ms"] == "7"
    assert producer["batch.size"] == "1000"
    assert "batch.size" not in consumer
    assert "retries" not in producer
    assert broker.client_conf("admin")["retries"] == "1"


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"sasl.password": "hunter2"}, "use the option `sasl_password`"),
        ({"consumer.session.timeout.ms": "100"}, "use the option `session_timeout`"),
        ({"group.id": "other"}, "cannot set `group.id`"),
        ({"enable.auto.commit": "true"}, "cannot set `enable.auto.commit`"),
    ],
)
def test_config_cannot_override_what_tideflow_manages(config: dict[str, str], error: str) -> None:
    with pytest.raises(BackendConfigError, match=error) as raised:
        KafkaBroker({"bootstrap": "127.0.0.1:1", "config": config})
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"session_timeout": 2.0, "heartbeat_interval": 2.0}, "shorter than `session_timeout`"),
        ({"heartbeat_interval": 0.0}, "`heartbeat_interval` .* must be positive"),
        ({"request_timeout": -1.0}, "`request_timeout` .* must be positive"),
    ],
)
def test_timeouts_are_checked(options: dict[str, float], error: str) -> None:
    with pytest.raises(BackendConfigError, match=error):
        KafkaBroker({"bootstrap": "127.0.0.1:1", **options})


# --- topics --------------------------------------------------------------------------


async def test_ensure_topic_creates_partitions_and_retention_idempotently(
    make_broker: BrokerMaker, kafka_bootstrap: str
) -> None:
    topic = new_topic(partitions=4, retention=90.0)
    async with make_broker([topic]) as broker:
        await broker.ensure_topic(topic.name, ["g1"])
        await broker.ensure_topic(topic.name, ["g1", "g2"])
        reading = await broker.backlog(topic.name, "g2")
    assert reading.partitions == 4
    assert reading.total == 0

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic.name)
    (future,) = admin.describe_configs([resource]).values()
    assert future.result(10)["retention.ms"].value == "90000"
    assert len(admin.list_topics(topic.name, timeout=10).topics[topic.name].partitions) == 4


async def test_backlog_of_a_missing_topic_is_an_error(make_broker: BrokerMaker) -> None:
    topic = new_topic()
    async with make_broker([topic]) as broker:
        with pytest.raises(BackendError, match=topic.name):
            await broker.backlog(topic.name, "g")
        failure = await broker.read_backlog(topic.name, "g", timeout=5)
    assert topic.name in failure.error  # type: ignore[union-attr]


# --- backlog -------------------------------------------------------------------------


@pytest.mark.parametrize("offset_reset", ["earliest", "latest"])
async def test_backlog_before_any_commit_follows_offset_reset(
    make_broker: BrokerMaker, kafka_bootstrap: str, offset_reset: str
) -> None:
    topic, group = new_topic(), unique_name("g")
    async with make_broker([topic], offset_reset=offset_reset) as broker:
        await broker.ensure_topic(topic.name)  # no group: it never committed
        empty = await backlog_of(broker, topic.name, group)
        await broker.publish(topic.name, keyed(30))
        ends = await log_ends(kafka_bootstrap, topic.name, 3)
        reading = await broker.backlog(topic.name, group)
    assert sum(ends.values()) == 30, "one record per batch keeps Tansu's log-end exact"
    if offset_reset == "earliest":  # KEDA: the log-end offset, all the group would read
        assert empty == {0: 0, 1: 0, 2: 0}
        assert dict(reading.per_partition) == ends
        assert reading.total == 30
    else:  # KEDA: a lag of 1 per partition, so that one consumer starts
        assert empty == {0: 1, 1: 1, 2: 1}
        assert dict(reading.per_partition) == {0: 1, 1: 1, 2: 1}
        assert reading.total == 3


async def test_backlog_is_log_end_minus_the_acknowledged_prefix(
    make_broker: BrokerMaker, kafka_bootstrap: str
) -> None:
    topic, group = new_topic(), unique_name("g")
    async with make_broker([topic], offset_reset="earliest") as broker:
        await broker.ensure_topic(topic.name)
        await broker.publish(topic.name, keyed(30))
        ends = await log_ends(kafka_bootstrap, topic.name, 3)
        assert all(n >= 3 for n in ends.values()), ends
        got = await receive(broker, topic.name, group, 30, timeout=WAIT, ack=False)
        assert await backlog_of(broker, topic.name, group) == ends, "in flight still counts"

        # everything but offset 2 of each partition: commits stop in front of it
        await broker.ack([m for m in got if m.id != "2"])
        expected = {p: end - 2 for p, end in ends.items()}
        await eventually(lambda: backlog_of(broker, topic.name, group), expected, what="backlog")

        await broker.ack([m for m in got if m.id == "2"])
        drained = dict.fromkeys(ends, 0)
        await eventually(lambda: backlog_of(broker, topic.name, group), drained, what="drained")
    assert Counter(m.partition for m in got) == Counter(ends)  # each message once


async def test_group_ensured_before_publishing_counts_everything_after(
    make_broker: BrokerMaker,
) -> None:
    topic, group = new_topic(), unique_name("g")
    async with make_broker([topic], offset_reset="latest") as broker:
        await broker.ensure_topic(topic.name)
        await broker.publish(topic.name, keyed(6, "before"))
        await broker.ensure_topic(topic.name, [group])  # starts at the log end
        assert (await broker.backlog(topic.name, group)).total == 0
        await broker.publish(topic.name, keyed(9, "after"))
        assert (await broker.backlog(topic.name, group)).total == 9
        got = await receive(broker, topic.name, group, 9, timeout=WAIT)
    assert sorted(m.value for m in got) == sorted(f"after{i}".encode() for i in range(9))


# --- nack, redelivery, poison messages -----------------------------------------------


async def test_nacked_message_comes_back_while_its_partition_flows(
    make_broker: BrokerMaker,
) -> None:
    topic, group = new_topic(partitions=1), unique_name("g")
    async with make_broker([topic]) as broker:
        await broker.ensure_topic(topic.name, [group])
        await broker.publish(topic.name, [OutgoingMessage(f"v{i}".encode()) for i in range(5)])
        (poison,) = await receive(
            broker, topic.name, group, 1, timeout=WAIT, ack=False, max_messages=1
        )
        assert (poison.value, poison.delivery_count) == (b"v0", 1)

        nacked_at = time.monotonic()
        await broker.nack([poison], delay=0.5)
        rest = await receive(broker, topic.name, group, 4, timeout=WAIT)
        assert [m.value for m in rest] == [b"v1", b"v2", b"v3", b"v4"]

        (again,) = await receive(broker, topic.name, group, 1, timeout=WAIT, ack=False)
        assert time.monotonic() - nacked_at >= 0.5, "came back before its delay"
        assert (again.id, again.value, again.delivery_count) == (poison.id, b"v0", 2)
        await broker.nack([again])
        (third,) = await receive(broker, topic.name, group, 1, timeout=WAIT, ack=False)
        assert third.delivery_count == 3
    # closed holding it: the commit stayed in front of it, although v1..v4 were
    # acknowledged, so the cluster delivers everything from it again
    async with make_broker([topic]) as broker:
        assert (await broker.backlog(topic.name, group)).total == 5
        redelivered = await receive(broker, topic.name, group, 5, timeout=WAIT, ack=False)
        assert [m.value for m in redelivered] == [b"v0", b"v1", b"v2", b"v3", b"v4"]
        assert [m.delivery_count for m in redelivered] == [2] * 5
        await broker.ack(redelivered[:1])  # dead-lettered elsewhere, then acknowledged
        await eventually(lambda: total_of(broker, topic.name, group), 4, what="backlog")
        await broker.ack(redelivered[1:])
        await eventually(lambda: total_of(broker, topic.name, group), 0, what="backlog")


async def test_cancelled_consume_loses_nothing(make_broker: BrokerMaker) -> None:
    topic, group = new_topic(partitions=1), unique_name("g")
    async with make_broker([topic]) as broker:
        await broker.ensure_topic(topic.name, [group])
        waiting = asyncio.create_task(broker.consume(topic.name, group, wait=30))
        await broker.publish(topic.name, [OutgoingMessage(b"only")])
        await asyncio.sleep(0)  # let the consume start waiting
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        (got,) = await receive(broker, topic.name, group, 1, timeout=WAIT)
    assert (got.value, got.delivery_count) == (b"only", 1)


# --- consumer groups -----------------------------------------------------------------


async def drain(
    consumers: Sequence[KafkaBroker],
    topic: str,
    group: str,
    until: Callable[[], bool],
    *,
    ack: Sequence[bool],
    into: Sequence[list[Message]],
) -> None:
    """Consume with every consumer in turn until `until()` holds."""
    deadline = time.monotonic() + WAIT
    while not until():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up draining; received {[len(c) for c in into]}")
        for consumer, acks, received in zip(consumers, ack, into, strict=True):
            batch = await consumer.consume(topic, group, max_messages=50, wait=0.1)
            if acks:
                await consumer.ack(batch)
            received.extend(batch)


async def test_two_consumers_split_the_partitions_and_take_over_unacked_work(
    make_broker: BrokerMaker,
) -> None:
    topic, group = new_topic(partitions=4), unique_name("g")
    count = 80
    first, second = make_broker([topic]), make_broker([topic])
    try:
        await first.ensure_topic(topic.name, [group])
        # warming up: both join, until each has received something
        warm: tuple[list[Message], list[Message]] = ([], [])
        for round_ in range(20):
            await first.publish(topic.name, keyed(20, f"warm{round_}-"))
            await drain(
                (first, second),
                topic.name,
                group,
                lambda expected=20 * (round_ + 1): (
                    len({m.value for m in warm[0] + warm[1]}) == expected
                ),
                ack=(True, True),
                into=warm,
            )
            if all(warm):
                break
        else:
            pytest.fail("the second consumer never got a partition")
        # then on the settled assignment; the second one acknowledges nothing
        await first.publish(topic.name, keyed(count, "two"))
        by_first: list[Message] = []
        by_second: list[Message] = []
        await drain(
            (first, second),
            topic.name,
            group,
            lambda: len({m.value for m in by_first + by_second}) == count,
            ack=(True, False),
            into=(by_first, by_second),
        )
        assert by_first
        assert by_second
        assert not {m.partition for m in by_first} & {m.partition for m in by_second}
    finally:
        await second.aclose()  # with its messages unacknowledged
    taken_back: list[Message] = []
    try:
        await drain(
            (first,),
            topic.name,
            group,
            lambda: {m.value for m in taken_back} >= {m.value for m in by_second},
            ack=(True,),
            into=(taken_back,),
        )
        await eventually(lambda: total_of(first, topic.name, group), 0, what="backlog")
    finally:
        await first.aclose()
    again = {(m.partition, m.id): m.delivery_count for m in taken_back}
    assert all(again[(m.partition, m.id)] >= 2 for m in by_second)


async def test_cooperative_rebalance_keeps_the_partitions_that_stay(
    make_broker: BrokerMaker,
) -> None:
    """The first consumer holds unacknowledged messages of every partition when a
    second one joins; only the partitions that move are redelivered (an eager
    rebalance would revoke them all and redeliver everything to someone)."""
    topic, group = new_topic(partitions=4), unique_name("g")
    count = 40
    first, second = make_broker([topic]), make_broker([topic])
    again_to_first: list[Message] = []
    by_second: list[Message] = []
    try:
        await first.ensure_topic(topic.name, [group])
        await first.publish(topic.name, keyed(count))
        held = await receive(first, topic.name, group, count, timeout=WAIT, ack=False)
        await drain(
            (first, second),
            topic.name,
            group,
            lambda: bool(by_second),
            ack=(True, True),
            into=(again_to_first, by_second),
        )
        await first.ack(held)  # acks of the partitions that moved are ignored
        deadline = time.monotonic() + WAIT
        while await total_of(first, topic.name, group):
            assert time.monotonic() < deadline, "the group never caught up"
            for consumer, into in ((first, again_to_first), (second, by_second)):
                batch = await consumer.consume(topic.name, group, max_messages=50, wait=0.1)
                await consumer.ack(batch)
                into.extend(batch)
    finally:
        await first.aclose()
        await second.aclose()
    moved = {m.partition for m in by_second}
    assert moved
    assert moved < {0, 1, 2, 3}
    assert again_to_first == [], "a partition the first consumer kept was redelivered"
    assert sorted(m.value for m in by_second) == sorted(
        m.value for m in held if m.partition in moved
    )


CRASHING_CONSUMER = """
import asyncio, sys
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.kafka import KafkaBroker

async def main(bootstrap, topic, group, count):
    broker = KafkaBroker(
        {"bootstrap": bootstrap, "session_timeout": 2.0, "heartbeat_interval": 0.5},
        [TopicNode(name=topic, broker="main", partitions=2)],
    )
    taken = []
    while len(taken) < count:
        taken += await broker.consume(topic, group, max_messages=count, wait=1.0)
    print(" ".join(m.id + "@" + str(m.partition) for m in taken), flush=True)
    await asyncio.sleep(3600)  # killed here, holding them unacknowledged

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


async def test_messages_of_a_killed_consumer_come_back_counted(
    make_broker: BrokerMaker, kafka_bootstrap: str
) -> None:
    topic, group = new_topic(partitions=2), unique_name("g")
    async with make_broker([topic]) as broker:
        await broker.ensure_topic(topic.name, [group])
        await broker.publish(topic.name, keyed(6))
        ends = await log_ends(kafka_bootstrap, topic.name, 2)
        crashing = subprocess.Popen(
            [sys.executable, "-c", CRASHING_CONSUMER, kafka_bootstrap, topic.name, group, "6"],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert crashing.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(crashing.stdout.readline), WAIT)
            # deliveries are recorded asynchronously (within a millisecond or so):
            # kill it once they are, as a crash in the middle of handling would
            await eventually(
                lambda: ledger_ends(kafka_bootstrap, group, 1, topic.name, 2),
                sum(ends.values()),
                what="deliveries recorded",
            )
        finally:
            crashing.kill()
            crashing.wait()
            assert crashing.stdout is not None
            crashing.stdout.close()
        held = sorted(line.decode().split())
        assert len(held) == 6
        again = await receive(broker, topic.name, group, 6, timeout=WAIT)
    assert sorted(f"{m.id}@{m.partition}" for m in again) == held
    assert [m.delivery_count for m in again] == [2] * 6


async def test_delivery_counts_survive_one_consumer_after_another(
    make_broker: BrokerMaker, kafka_bootstrap: str
) -> None:
    """Each consumer that closes without acknowledging raises the next one's count."""
    topic, group = new_topic(partitions=1), unique_name("g")
    counts = []
    for _ in range(3):
        async with make_broker([topic]) as broker:
            await broker.ensure_topic(topic.name, [group])
            if not counts:
                await broker.publish(topic.name, [OutgoingMessage(b"poison")])
            (got,) = await receive(broker, topic.name, group, 1, timeout=WAIT, ack=False)
            counts.append(got.delivery_count)
    assert counts == [1, 2, 3]
    # the record lives in ledger groups next to the group itself
    assert await ledger_ends(kafka_bootstrap, group, 3, topic.name, 1) == 1
