"""What flows through backends: messages, backlog readings, notification events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

__all__ = [
    "SUBJECT_HEADER",
    "BacklogFailure",
    "BacklogReading",
    "Message",
    "NotifyEvent",
    "OutgoingMessage",
]

#: Header naming the subject a message is published on, for a broker that routes
#: by subject (`Broker.subject_routed`); `ctx.publish(..., subject=...)` sets it.
SUBJECT_HEADER: Final = "Tideflow-Subject"


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message to publish. Messages with the same key keep their order on
    partitioned brokers (they land on the same partition)."""

    value: bytes
    key: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Message:
    """A message delivered to a consumer group, to be acknowledged or not.

    `id` is the broker's identity of the message within its partition (a Kafka
    offset in decimal, a Redis stream entry id, a JetStream sequence); it does not
    change when the message is delivered again. `delivery_count` is 1 on the first
    delivery and grows with each redelivery; the worker dead-letters a message
    after `max_failures` by publishing it elsewhere. `receipt` is the backend's
    private handle for `ack`/`nack` and is not part of the value.

    Treat a message as read-only: brokers build one per delivered message, so it
    is not `frozen` (a frozen dataclass's `__init__` costs five times as much in
    CPython 3.11: 1.5 µs against 0.3 µs). A broker that delivers a message again
    builds a new one (`dataclasses.replace`).
    """

    topic: str
    group: str
    value: bytes
    key: bytes | None
    headers: Mapping[str, str]
    partition: int
    id: str
    delivery_count: int
    receipt: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class BacklogReading:
    """How far behind a consumer group is on a topic, at `taken_at`.

    `total` counts messages not yet acknowledged by the group: those not yet
    delivered plus those delivered and in flight. `per_partition` maps partition
    numbers (0 .. partitions - 1) to their share; a partition may be left out when
    its backlog is zero. Brokers without partitions report one partition, 0.
    """

    topic: str
    group: str
    total: int
    per_partition: Mapping[int, int]
    partitions: int
    taken_at: datetime

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError(f"a topic has at least one partition, not {self.partitions}")
        if any(not 0 <= p < self.partitions for p in self.per_partition):
            raise ValueError(
                f"partitions {sorted(self.per_partition)} outside 0..{self.partitions - 1}"
            )
        if any(n < 0 for n in self.per_partition.values()) or self.total < 0:
            raise ValueError("a backlog cannot be negative")
        if sum(self.per_partition.values()) != self.total:
            raise ValueError(
                f"total {self.total} is not the sum of the partitions' backlogs "
                f"{dict(self.per_partition)}"
            )

    def age(self, now: datetime | None = None) -> timedelta:
        """Time since the reading was taken; the autoscaler ignores stale readings."""
        return (now or datetime.now(UTC)) - self.taken_at


@dataclass(frozen=True, slots=True)
class BacklogFailure:
    """A backlog that could not be read. The autoscaler holds (or uses its declared
    fallback) and never scales to zero on a failure."""

    topic: str
    group: str
    error: str
    taken_at: datetime


@dataclass(frozen=True, slots=True)
class NotifyEvent:
    """Something a `notify` block may be told about (`failure`, `retry`, ...)."""

    event: str
    flow: str
    summary: str
    occurred_at: datetime
    job: str | None = None
    consumer: str | None = None
    run_id: str | None = None
    attempt: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data (what a webhook receives)."""
        return {
            "event": self.event,
            "flow": self.flow,
            "summary": self.summary,
            "occurred_at": self.occurred_at.isoformat(),
            "job": self.job,
            "consumer": self.consumer,
            "run_id": self.run_id,
            "attempt": self.attempt,
            "details": dict(self.details),
        }
