"""The backend base classes: configuration checks, values, `async with`, and the
autoscaler's never-raising backlog read."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest
import reference_backends as rb
from tideflow.compiler.ir import EnvRef, SecretRef, TopicNode
from tideflow.plugins.api import (
    BackendConfigError,
    BackendContext,
    BacklogFailure,
    BacklogReading,
    Field,
    IntType,
    NotifyEvent,
    StringType,
    UnknownTopicError,
)

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Configured(rb.MemoryBroker):
    """A broker with options of several kinds."""

    options: ClassVar[tuple[Field, ...]] = (
        *rb.MemoryBroker.options,
        Field("retries", IntType(), "How often to retry.", default=3),
        Field("label", StringType(), "A label."),
    )


def topic(name: str = "orders", partitions: int = 2) -> TopicNode:
    return TopicNode(name=name, broker="b", partitions=partitions)


def test_options_get_their_defaults() -> None:
    broker = Configured({"namespace": "x"}, [topic()])
    assert dict(broker.config) == {"namespace": "x", "retries": 3}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"namespace": "x", "retires": 1}, 'unknown option `retires` for broker "memory"'),
        ({"namespace": "x", "retires": 1}, "did you mean `retries`?"),
        ({}, 'missing required option `namespace` for broker "memory"'),
        ({"namespace": SecretRef("NS")}, 'option `namespace` of broker "memory" holds an '),
        ({"namespace": "x", "label": [EnvRef("L")]}, "unresolved env() or secret()"),
    ],
)
def test_options_are_checked(config: dict[str, object], message: str) -> None:
    with pytest.raises(BackendConfigError) as raised:
        Configured(config, [topic()])
    assert message in str(raised.value)


def test_context_says_where_relative_paths_start(tmp_path: Path) -> None:
    flow = tmp_path / "flows" / "orders.flow"
    assert BackendContext("main", flow).base_dir == tmp_path / "flows"
    assert BackendContext().base_dir == Path.cwd()


def test_a_broker_knows_only_its_topics() -> None:
    broker = rb.MemoryBroker({"namespace": "t"}, [topic("orders"), topic("refunds")])
    assert broker.topic("refunds").name == "refunds"
    with pytest.raises(UnknownTopicError, match=r'topic "invoices" .* \(topics: orders, refunds\)'):
        broker.topic("invoices")


@pytest.mark.parametrize(
    ("total", "per_partition", "partitions", "message"),
    [
        (5, {0: 2, 1: 2}, 2, "not the sum"),
        (1, {2: 1}, 2, "outside 0..1"),
        (0, {}, 0, "at least one partition"),
        (-1, {0: -1}, 1, "cannot be negative"),
    ],
)
def test_backlog_reading_is_consistent(
    total: int, per_partition: dict[int, int], partitions: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        BacklogReading("t", "g", total, per_partition, partitions, NOW)


def test_backlog_reading_age() -> None:
    reading = BacklogReading("t", "g", 3, {0: 1, 1: 2}, 2, NOW)
    assert reading.age(NOW + timedelta(seconds=4)) == timedelta(seconds=4)


async def test_read_backlog_returns_a_reading() -> None:
    async with rb.MemoryBroker({"namespace": "rb-ok"}, [topic()]) as broker:
        reading = await broker.read_backlog("orders", "g", timeout=1)
    assert isinstance(reading, BacklogReading)
    assert (reading.total, reading.partitions) == (0, 2)


class FailingBacklog(rb.MemoryBroker):
    async def backlog(self, topic: str, group: str) -> BacklogReading:
        raise ConnectionRefusedError("connection refused")


class SlowBacklog(rb.MemoryBroker):
    async def backlog(self, topic: str, group: str) -> BacklogReading:
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("broker_class", "error"),
    [
        (FailingBacklog, "ConnectionRefusedError: connection refused"),
        (SlowBacklog, "no answer within 0.05s"),
    ],
)
async def test_read_backlog_turns_failures_into_a_failure_record(
    broker_class: type[rb.MemoryBroker], error: str
) -> None:
    async with broker_class({"namespace": "rb-fail"}, [topic()]) as broker:
        reading = await broker.read_backlog("orders", "workers", timeout=0.05)
    assert isinstance(reading, BacklogFailure)
    assert (reading.topic, reading.group, reading.error) == ("orders", "workers", error)
    assert reading.taken_at.tzinfo is UTC


async def test_async_with_closes_even_when_the_body_fails() -> None:
    broker = rb.MemoryBroker({"namespace": "rb-close"}, [topic()])
    with pytest.raises(KeyError):
        async with broker as entered:
            assert entered is broker
            raise KeyError("boom")
    assert broker.closed


def test_notify_event_as_json_data() -> None:
    event = NotifyEvent(
        "failure", "orders", "extract failed", NOW, job="extract", attempt=3, details={"rc": 1}
    )
    assert event.as_dict() == {
        "event": "failure",
        "flow": "orders",
        "summary": "extract failed",
        "occurred_at": "2026-03-01T12:00:00+00:00",
        "job": "extract",
        "consumer": None,
        "run_id": None,
        "attempt": 3,
        "details": {"rc": 1},
    }


def test_scaler_keeps_its_consumer() -> None:
    consumer = rb.consumer_record("workers")
    scaler = rb.MemoryScaler({}, consumer, context=BackendContext("workers"))
    assert scaler.consumer is consumer
    assert scaler.context.block == "workers"
