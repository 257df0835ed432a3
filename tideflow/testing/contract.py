"""The contract every broker and scaler passes, built-in or third-party.

Enable it in a test module of your package::

    from tideflow.testing import BrokerContract

    class TestRedisBroker(BrokerContract):
        pass

with a `tideflow_broker_factory` fixture (usually in `conftest.py`) returning a
callable that takes the topic records a test needs and returns a configured,
unopened broker; every broker it returns in one test must reach the same
server namespace (a unique key prefix per test keeps tests apart). Scalers work
the same way with `ScalerContract` and `tideflow_scaler_factory` (a callable
taking nothing). Notifiers use `NotifierContract` with two fixtures:
`tideflow_notifier_factory` (a callable taking nothing, returning a notifier
that delivers somewhere the test can read) and `tideflow_notifier_delivered` (a
callable returning the JSON events delivered there so far, oldest first); a
`tideflow_failing_notifier_factory` (a notifier whose deliveries fail) is
optional.

Two fixtures tune the waits: `tideflow_contract_timeout` (longest wait for
something that must happen, default 15 s) and `tideflow_quiet_period` (how long
nothing must happen to count as "never", default 2 s: set it above your test
configuration's redelivery delay).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import anyio
import pytest

from tideflow.compiler.ir import TopicNode
from tideflow.plugins.api import (
    BackendClosedError,
    BackendError,
    Broker,
    Message,
    Notifier,
    NotifyEvent,
    OutgoingMessage,
    Scaler,
    UnknownTopicError,
    check_backend_class,
)

__all__ = [
    "BrokerContract",
    "BrokerFactory",
    "NotifierContract",
    "NotifierDelivered",
    "NotifierFactory",
    "ScalerContract",
    "ScalerFactory",
    "receive",
    "unique_name",
]

BrokerFactory: TypeAlias = Callable[[Sequence[TopicNode]], Broker]
ScalerFactory: TypeAlias = Callable[[], Scaler]
NotifierFactory: TypeAlias = Callable[[], Notifier]
#: The JSON events delivered so far where the factory's notifiers deliver, oldest first.
NotifierDelivered: TypeAlias = Callable[[], Sequence[Mapping[str, Any]]]

# topics in the suite have this many partitions; unpartitioned brokers report one
PARTITIONS = 3


def unique_name(prefix: str) -> str:
    """A name no other test uses: letters, digits and `-` only, which every broker
    accepts as a topic, stream or group name."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_topic(partitions: int = PARTITIONS) -> TopicNode:
    return TopicNode(name=unique_name("tf-topic"), broker="contract", partitions=partitions)


def expected_partitions(broker: Broker, topic: TopicNode) -> int:
    return topic.partitions if type(broker).partitioned else 1


async def receive(
    broker: Broker,
    topic: str,
    group: str,
    count: int,
    *,
    timeout: float,
    ack: bool = True,
    max_messages: int = 100,
) -> list[Message]:
    """Consume until `count` messages came (acknowledging each batch when `ack`);
    fails the test when they do not come within `timeout` seconds."""
    received: list[Message] = []
    deadline = anyio.current_time() + timeout
    while len(received) < count:
        left = deadline - anyio.current_time()
        if left <= 0:
            pytest.fail(
                f"received {len(received)} of {count} messages on {topic!r} "
                f"(group {group!r}) within {timeout:g}s"
            )
        batch = await broker.consume(
            topic, group, max_messages=min(max_messages, count - len(received)), wait=min(left, 1.0)
        )
        if ack and batch:
            await broker.ack(batch)
        received.extend(batch)
    return received


async def eventually(
    probe: Callable[[], Awaitable[object]],
    expected: object,
    *,
    timeout: float,
    what: str,
) -> None:
    """Wait until `await probe() == expected`; fails with the last value seen."""
    deadline = anyio.current_time() + timeout
    delay = 0.01
    while True:
        seen = await probe()
        if seen == expected:
            return
        if anyio.current_time() >= deadline:
            pytest.fail(f"{what}: expected {expected!r}, still {seen!r} after {timeout:g}s")
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.25)


async def nothing_arrives(broker: Broker, topic: str, group: str, *, quiet: float) -> list[Message]:
    """What the group receives during `quiet` seconds (the caller expects nothing)."""
    got: list[Message] = []
    deadline = anyio.current_time() + quiet
    while (left := deadline - anyio.current_time()) > 0:
        got.extend(await broker.consume(topic, group, max_messages=100, wait=min(left, 1.0)))
    return got


class BrokerContract:
    """The broker contract. Needs a `tideflow_broker_factory` fixture."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_declares_name_options_and_docs(
        self, tideflow_broker_factory: BrokerFactory
    ) -> None:
        broker = tideflow_broker_factory([new_topic()])
        try:
            assert check_backend_class(type(broker)) == []
            assert isinstance(type(broker).partitioned, bool)
        finally:
            await broker.aclose()

    async def test_publish_then_consume_round_trip(
        self, tideflow_broker_factory: BrokerFactory, tideflow_contract_timeout: float
    ) -> None:
        topic, group = new_topic(), unique_name("tf-group")
        payload = bytes(range(256))
        async with tideflow_broker_factory([topic]) as broker:
            await broker.ensure_topic(topic.name, [group])
            await broker.publish(
                topic.name,
                [
                    OutgoingMessage(payload, key=b"k1", headers={"trace": "t-1"}),
                    OutgoingMessage(b"second"),
                ],
            )
            got = await receive(broker, topic.name, group, 2, timeout=tideflow_contract_timeout)
        by_value = {m.value: m for m in got}
        assert set(by_value) == {payload, b"second"}
        first, second = by_value[payload], by_value[b"second"]
        assert first.key == b"k1"
        assert second.key is None
        assert first.headers.get("trace") == "t-1"
        for message in got:
            assert message.topic == topic.name
            assert message.group == group
            assert message.delivery_count == 1
            assert 0 <= message.partition < expected_partitions(broker, topic)
            assert isinstance(message.id, str)
            assert message.id
        assert (first.partition, first.id) != (second.partition, second.id)

    async def test_empty_batch_publishes_nothing(
        self, tideflow_broker_factory: BrokerFactory
    ) -> None:
        topic, group = new_topic(), unique_name("tf-group")
        async with tideflow_broker_factory([topic]) as broker:
            await broker.ensure_topic(topic.name, [group])
            await broker.publish(topic.name, [])
            assert (await broker.backlog(topic.name, group)).total == 0
            assert await broker.consume(topic.name, group, wait=0.05) == []

    async def test_messages_with_one_key_keep_their_order(
        self, tideflow_broker_factory: BrokerFactory, tideflow_contract_timeout: float
    ) -> None:
        topic, group = new_topic(), unique_name("tf-group")
        values = [f"m{i:03}".encode() for i in range(30)]
        async with tideflow_broker_factory([topic]) as broker:
            await broker.ensure_topic(topic.name, [group])
            for start in range(0, len(values), 10):  # several batches
                await broker.publish(
                    topic.name,
                    [OutgoingMessage(v, key=b"same") for v in values[start : start + 10]],
                )
            got = await receive(
                broker,
                topic.name,
                group,
                len(values),
                timeout=tideflow_contract_timeout,
                max_messages=7,
            )
        assert [m.value for m in got] == values
        assert len({m.partition for m in got}) == 1

    async def test_backlog_reports_partitions(
        self, tideflow_broker_factory: BrokerFactory, tideflow_contract_timeout: float
    ) -> None:
        topic, group = new_topic(), unique_name("tf-group")
        count = 60
        async with tideflow_broker_factory([topic]) as broker:
            await broker.ensure_topic(topic.name, [group])
            await broker.publish(
                topic.name,
                [OutgoingMessage(b"x", key=f"key-{i}".encode()) for i in range(count)],
            )

            async def total() -> int:
                return (await broker.backlog(topic.name, group)).total

            await eventually(total, count, timeout=tideflow_contract_timeout, what="backlog")
            reading = await broker.backlog(topic.name, group)
            got = await receive(broker, topic.name, group, count, timeout=tideflow_contract_timeout)
        partitions = expected_partitions(broker, topic)
        assert reading.partitions == partitions
        assert reading.topic == topic.name
        assert reading.group == group
        by_partition = Counter(m.partition for m in got)
        assert {p: n for p, n in reading.per_partition.items() if n} == dict(by_partition)
        if partitions > 1:
            assert len(by_partition) > 1, "distinct keys should spread over the partitions"

    async def test_ack_means_no_redelivery(
        self,
        tideflow_broker_factory: BrokerFactory,
        tideflow_contract_timeout: float,
        tideflow_quiet_period: float,
    ) -> None:
        topic, group = new_topic(), unique_name("tf-group")
        async with tideflow_broker_factory([topic]) as first:
            await first.ensure_topic(topic.name, [group])
            await first.publish(topic.name, [OutgoingMessage(f"{i}".encode()) for i in range(5)])
            await receive(first, topic.name, group, 5, timeout=tideflow_contract_timeout)
        async with tideflow_broker_factory([topic]) as second:
            again = await nothing_arrives(second, topic.name, group, quiet=tideflow_quiet_period)
            assert [m.value for m in again] == []
            assert (await second.backlog(topic.name, group)).total == 0

    async def test_nack_redelivers(
        self, tideflow_broker_factory: BrokerFactory, tideflow_contract_timeout: float
    ) -> None:
        topic, group = new_topic(), unique_name("tf-group")
        async with tideflow_broker_factory([topic]) as broker:
            await broker.ensure_topic(topic.name, [group])
            await broker.publish(topic.name, [OutgoingMessage(b"retry-me")])
            (first,) = await receive(
                broker, topic.name, group, 1, timeout=tideflow_contract_timeout, ack=False
            )
            await broker.nack([first])
            (again,) = await receive(
                broker, topic.name, group, 1, timeout=tideflow_contract_timeout
            )
        assert again.value == b"retry-me"
        assert (again.partition, again.id) == (first.partition, first.id)
        assert again.delivery_count == first.delivery_count + 1

    async def test_unacked_messages_go_to_another_consumer_after_close(
        self, tideflow_broker_factory: BrokerFactory, tideflow_contract_timeout: float
    ) -> None:
        topic, group = new_topic(), unique_name("tf-group")
        async with tideflow_broker_factory([topic]) as first:
            await first.ensure_topic(topic.name, [group])
            await first.publish(topic.name, [OutgoingMessage(f"{i}".encode()) for i in range(3)])
            taken = await receive(
                first, topic.name, group, 3, timeout=tideflow_contract_timeout, ack=False
            )
        async with tideflow_broker_factory([topic]) as second:
            again = await receive(second, topic.name, group, 3, timeout=tideflow_contract_timeout)
        assert sorted((m.partition, m.id) for m in again) == sorted(
            (m.partition, m.id) for m in taken
        )
        assert all(m.delivery_count >= 2 for m in again)

    async def test_backlog_counts_pending_and_in_flight(
        self, tideflow_broker_factory: BrokerFactory, tideflow_contract_timeout: float
    ) -> None:
        topic, group = new_topic(), unique_name("tf-group")
        async with tideflow_broker_factory([topic]) as broker:
            await broker.ensure_topic(topic.name, [group])
            await broker.publish(topic.name, [OutgoingMessage(f"{i}".encode()) for i in range(10)])

            async def total() -> int:
                return (await broker.backlog(topic.name, group)).total

            await eventually(total, 10, timeout=tideflow_contract_timeout, what="backlog")
            in_flight = await receive(
                broker,
                topic.name,
                group,
                4,
                timeout=tideflow_contract_timeout,
                ack=False,
                max_messages=4,
            )
            reading = await broker.backlog(topic.name, group)
            assert reading.total == 10, "delivered but unacknowledged messages count"
            assert abs(reading.taken_at - datetime.now(UTC)) < timedelta(minutes=1)
            await broker.ack(in_flight)
            await eventually(total, 6, timeout=tideflow_contract_timeout, what="backlog after ack")
            await receive(broker, topic.name, group, 6, timeout=tideflow_contract_timeout)
            await eventually(total, 0, timeout=tideflow_contract_timeout, what="drained backlog")

    async def test_consumers_of_one_group_share_the_work(
        self, tideflow_broker_factory: BrokerFactory, tideflow_contract_timeout: float
    ) -> None:
        topic, group = new_topic(), unique_name("tf-group")
        count = 40
        async with (
            tideflow_broker_factory([topic]) as first,
            tideflow_broker_factory([topic]) as second,
        ):
            await first.ensure_topic(topic.name, [group])
            await first.publish(
                topic.name,
                [OutgoingMessage(f"{i}".encode(), key=f"k{i}".encode()) for i in range(count)],
            )
            taken: dict[int, list[bytes]] = {0: [], 1: []}
            deadline = anyio.current_time() + tideflow_contract_timeout
            while sum(map(len, taken.values())) < count and anyio.current_time() < deadline:
                for index, consumer in enumerate((first, second)):
                    batch = await consumer.consume(topic.name, group, max_messages=2, wait=0.2)
                    await consumer.ack(batch)
                    taken[index].extend(m.value for m in batch)
        everything = taken[0] + taken[1]
        assert sorted(everything) == sorted(f"{i}".encode() for i in range(count))
        assert taken[0]
        assert taken[1], "the second consumer of the group received nothing"

    async def test_every_group_receives_every_message(
        self, tideflow_broker_factory: BrokerFactory, tideflow_contract_timeout: float
    ) -> None:
        topic = new_topic()
        groups = [unique_name("tf-group"), unique_name("tf-group")]
        async with tideflow_broker_factory([topic]) as broker:
            await broker.ensure_topic(topic.name, groups)
            await broker.publish(topic.name, [OutgoingMessage(f"{i}".encode()) for i in range(10)])
            for group in groups:
                got = await receive(
                    broker, topic.name, group, 10, timeout=tideflow_contract_timeout
                )
                assert sorted(m.value for m in got) == sorted(f"{i}".encode() for i in range(10))

    async def test_large_batch_round_trip(
        self, tideflow_broker_factory: BrokerFactory, tideflow_contract_timeout: float
    ) -> None:
        topic, group = new_topic(), unique_name("tf-group")
        values = [f"{i:06}".encode().ljust(100, b".") for i in range(2000)]
        async with tideflow_broker_factory([topic]) as broker:
            await broker.ensure_topic(topic.name, [group])
            await broker.publish(topic.name, [OutgoingMessage(v) for v in values])
            got = await receive(
                broker,
                topic.name,
                group,
                len(values),
                timeout=tideflow_contract_timeout,
                max_messages=500,
            )
        assert sorted(m.value for m in got) == values

    async def test_unknown_topic_is_refused(self, tideflow_broker_factory: BrokerFactory) -> None:
        topic = new_topic()
        async with tideflow_broker_factory([topic]) as broker:
            with pytest.raises(UnknownTopicError):
                await broker.publish("tf-not-configured", [OutgoingMessage(b"x")])
            with pytest.raises(UnknownTopicError):
                await broker.consume("tf-not-configured", "g", wait=0.1)

    async def test_aclose_is_idempotent_and_final(
        self, tideflow_broker_factory: BrokerFactory, tideflow_contract_timeout: float
    ) -> None:
        topic, group = new_topic(), unique_name("tf-group")
        unused = tideflow_broker_factory([topic])
        await unused.aclose()
        await unused.aclose()

        broker = tideflow_broker_factory([topic])
        await broker.ensure_topic(topic.name, [group])
        await broker.publish(topic.name, [OutgoingMessage(b"x")])
        await receive(broker, topic.name, group, 1, timeout=tideflow_contract_timeout, ack=False)
        await broker.aclose()
        await broker.aclose()
        with pytest.raises(BackendClosedError):
            await broker.publish(topic.name, [OutgoingMessage(b"y")])

    async def test_async_with_releases_after_an_error(
        self, tideflow_broker_factory: BrokerFactory
    ) -> None:
        topic, group = new_topic(), unique_name("tf-group")

        class Boom(Exception):
            pass

        broker = tideflow_broker_factory([topic])
        with pytest.raises(Boom):
            async with broker:
                await broker.ensure_topic(topic.name, [group])
                with pytest.raises(UnknownTopicError):
                    await broker.publish("tf-not-configured", [OutgoingMessage(b"x")])
                raise Boom
        with pytest.raises(BackendClosedError):
            await broker.publish(topic.name, [OutgoingMessage(b"x")])
        await broker.aclose()


class ScalerContract:
    """The scaler contract. Needs a `tideflow_scaler_factory` fixture; the suite
    leaves the scaler at zero instances."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_declares_name_options_and_docs(
        self, tideflow_scaler_factory: ScalerFactory
    ) -> None:
        scaler = tideflow_scaler_factory()
        try:
            assert check_backend_class(type(scaler)) == []
        finally:
            await scaler.aclose()

    async def test_scale_up_down_and_to_zero(self, tideflow_scaler_factory: ScalerFactory) -> None:
        async with tideflow_scaler_factory() as scaler:
            try:
                for instances in (2, 3, 1, 0, 1):
                    await scaler.scale(instances)
                    assert await scaler.current() == instances
            finally:
                await scaler.scale(0)
            assert await scaler.current() == 0

    async def test_scale_is_idempotent(self, tideflow_scaler_factory: ScalerFactory) -> None:
        async with tideflow_scaler_factory() as scaler:
            try:
                await scaler.scale(2)
                await scaler.scale(2)
                assert await scaler.current() == 2
            finally:
                await scaler.scale(0)

    async def test_negative_instances_are_refused(
        self, tideflow_scaler_factory: ScalerFactory
    ) -> None:
        async with tideflow_scaler_factory() as scaler:
            before = await scaler.current()
            with pytest.raises(ValueError):
                await scaler.scale(-1)
            assert await scaler.current() == before

    async def test_aclose_is_idempotent_and_final(
        self, tideflow_scaler_factory: ScalerFactory
    ) -> None:
        scaler = tideflow_scaler_factory()
        await scaler.scale(1)
        await scaler.scale(0)
        await scaler.aclose()
        await scaler.aclose()
        with pytest.raises(BackendClosedError):
            await scaler.scale(1)


def notify_event(number: int = 1) -> NotifyEvent:
    """An event as the runtime sends one, with details of every JSON kind."""
    return NotifyEvent(
        event="failure",
        flow="orders",
        summary=f'job "extract" failed (attempt {number})',
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        job="extract",
        run_id=unique_name("run"),
        attempt=number,
        details={"exit_status": 1, "retrying": False, "tags": ["nightly"], "note": None},
    )


async def delivered_count(
    delivered: NotifierDelivered, count: int, *, timeout: float
) -> Sequence[Mapping[str, Any]]:
    """The delivered events once there are `count` of them; fails after `timeout`."""
    deadline = anyio.current_time() + timeout
    while len(found := delivered()) < count:
        if anyio.current_time() >= deadline:
            pytest.fail(f"{len(found)} of {count} events delivered within {timeout:g}s")
        await anyio.sleep(0.01)
    return found


class NotifierContract:
    """The notifier contract. Needs `tideflow_notifier_factory` and
    `tideflow_notifier_delivered` fixtures (and, for the failure test,
    `tideflow_failing_notifier_factory`)."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_declares_name_options_and_docs(
        self, tideflow_notifier_factory: NotifierFactory
    ) -> None:
        notifier = tideflow_notifier_factory()
        try:
            assert check_backend_class(type(notifier)) == []
        finally:
            await notifier.aclose()

    async def test_send_delivers_the_event_as_json(
        self,
        tideflow_notifier_factory: NotifierFactory,
        tideflow_notifier_delivered: NotifierDelivered,
        tideflow_contract_timeout: float,
    ) -> None:
        event = notify_event()
        async with tideflow_notifier_factory() as notifier:
            await notifier.send(event)
        (got,) = await delivered_count(
            tideflow_notifier_delivered, 1, timeout=tideflow_contract_timeout
        )
        assert dict(got) == event.as_dict()

    async def test_events_arrive_in_the_order_they_were_sent(
        self,
        tideflow_notifier_factory: NotifierFactory,
        tideflow_notifier_delivered: NotifierDelivered,
        tideflow_contract_timeout: float,
    ) -> None:
        events = [notify_event(number) for number in (1, 2, 3)]
        async with tideflow_notifier_factory() as notifier:
            for event in events:
                await notifier.send(event)
        got = await delivered_count(
            tideflow_notifier_delivered, len(events), timeout=tideflow_contract_timeout
        )
        assert [e["run_id"] for e in got] == [e.run_id for e in events]

    async def test_a_failed_delivery_raises_backend_error(
        self, tideflow_failing_notifier_factory: NotifierFactory | None
    ) -> None:
        if tideflow_failing_notifier_factory is None:
            pytest.skip("no `tideflow_failing_notifier_factory` fixture")
        async with tideflow_failing_notifier_factory() as notifier:
            with pytest.raises(BackendError):
                await notifier.send(notify_event())

    async def test_aclose_is_idempotent(self, tideflow_notifier_factory: NotifierFactory) -> None:
        notifier = tideflow_notifier_factory()
        await notifier.aclose()
        await notifier.aclose()
