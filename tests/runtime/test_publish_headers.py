"""`ctx.publish(..., headers=..., subject=...)` of jobs and consumer handlers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest
from tideflow.plugins.api import SUBJECT_HEADER, OutgoingMessage
from tideflow.runtime.consumer.handler import ConsumerContext
from tideflow.runtime.context import BrokerPublisher, JobContext


class RecordingPublisher:
    """A publisher as third parties wrote them before headers existed: three arguments
    are all it takes when a message has none."""

    def __init__(self) -> None:
        self.published: list[tuple[Any, ...]] = []

    def publish(self, topic: str, value: bytes, key: bytes | None, *rest: Any) -> None:
        self.published.append((topic, value, key, *rest))

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


def job_context(publisher: RecordingPublisher) -> JobContext:
    return JobContext(
        run_id=1,
        flow="shop",
        job="supply",
        attempt=1,
        scheduled_at=None,
        params={},
        logger=logging.getLogger("tideflow.job.supply"),
        env={},
        publishes=("orders",),
        publisher_for=lambda topic: publisher,
    )


def test_a_job_names_the_subject_and_headers_of_a_message() -> None:
    publisher = RecordingPublisher()
    ctx = job_context(publisher)
    ctx.publish("orders", {"id": 7}, key="7", subject="nc.orders.changed.eu")
    ctx.publish("orders", "x", headers={"trace": "t-1"}, subject="nc.orders.changed.us")
    ctx.publish("orders", "plain")
    assert publisher.published == [
        ("orders", b'{"id":7}', b"7", {SUBJECT_HEADER: "nc.orders.changed.eu"}),
        ("orders", b"x", None, {"trace": "t-1", SUBJECT_HEADER: "nc.orders.changed.us"}),
        ("orders", b"plain", None),  # no headers: the three-argument call of old
    ]


@pytest.mark.parametrize(
    ("headers", "subject", "complaint"),
    [
        ({"n": 1}, None, "message headers are text"),
        ({1: "x"}, None, "message headers are text"),
        (None, "", "`subject` is a non-empty string"),
    ],
)
def test_headers_and_subjects_are_text(
    headers: Mapping[Any, Any] | None, subject: str | None, complaint: str
) -> None:
    publisher = RecordingPublisher()
    with pytest.raises(TypeError, match=complaint):
        job_context(publisher).publish("orders", "x", headers=headers, subject=subject)
    assert publisher.published == []


def test_a_handler_names_the_subject_and_headers_of_a_message() -> None:
    ctx = ConsumerContext(
        consumer="workers",
        flow="shop",
        instance_id="workers-1",
        params={},
        logger=logging.getLogger("tideflow.consumer.workers"),
        topics=("orders", "receipts"),
    )
    ctx.publish("receipts", "r", headers={"trace": "t-2"}, subject="nc.receipts.eu")
    ctx.publish("receipts", "plain")
    assert ctx.outbox == [
        (
            "receipts",
            OutgoingMessage(b"r", None, {"trace": "t-2", SUBJECT_HEADER: "nc.receipts.eu"}),
        ),
        ("receipts", OutgoingMessage(b"plain", None, {})),
    ]


class _Batches:
    """Just what BrokerPublisher calls on a broker."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[OutgoingMessage]]] = []

    async def ensure_topic(self, topic: str) -> None:
        return None

    async def publish(self, topic: str, messages: list[OutgoingMessage]) -> None:
        self.batches.append((topic, list(messages)))

    async def aclose(self) -> None:
        return None


def test_the_default_publisher_hands_headers_to_the_broker() -> None:
    broker = _Batches()
    publisher = BrokerPublisher(broker)  # type: ignore[arg-type]
    try:
        publisher.publish("orders", b"a", None, {SUBJECT_HEADER: "nc.orders.a"})
        publisher.publish("orders", b"b", b"k")
        publisher.flush()
    finally:
        publisher.close()
    assert broker.batches == [
        (
            "orders",
            [
                OutgoingMessage(b"a", None, {SUBJECT_HEADER: "nc.orders.a"}),
                OutgoingMessage(b"b", b"k", {}),
            ],
        )
    ]
