"""The interfaces every backend implements: `Broker`, `Scaler` and `Notifier`.

Hooks are synchronous and only hand classes to a registry (see `hookspecs`); the
work happens in these classes, whose methods are `async`. Each class declares:

- `name`: the word a `.flow` file uses (`kind = "redis"`, `backend = "local"`);
- `options`: its option schema, a tuple of `tideflow.compiler.schema.Field`, which
  the compiler checks the block against and `tideflow plugins --describe` prints;
- a docstring, whose first line is the backend's one-line description;
- for brokers, `partitioned`: whether consumer instances beyond the partition
  count would idle; `subject_routed`: whether a topic's `subjects` decide where a
  message goes, so that a topic whose subjects all have wildcards needs each
  message to name its subject (`SUBJECT_HEADER`).

A backend is an async resource (trio's `AsyncResource`): `aclose()` releases it,
is idempotent and never fails because of an earlier failure, and `async with`
calls it on the way out.
"""

from __future__ import annotations

import abc
import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self, final

from tideflow.dsl.suggest import suggest  # imports nothing else of tideflow

if TYPE_CHECKING:
    from tideflow.compiler.ir import ConsumerNode, TopicNode
    from tideflow.compiler.schema import Field

__all__ = [
    "SUBJECT_HEADER",
    "Backend",
    "BackendClosedError",
    "BackendConfigError",
    "BackendContext",
    "BackendError",
    "BacklogFailure",
    "BacklogReading",
    "Broker",
    "Message",
    "Notifier",
    "NotifyEvent",
    "OutgoingMessage",
    "Scaler",
    "UnknownTopicError",
    "backend_summary",
    "check_backend_class",
]

BACKEND_NAME = re.compile(r"[a-z][a-z0-9_-]*\Z")

#: Header naming the subject a message is published on, for a broker that routes
#: by subject (`Broker.subject_routed`); `ctx.publish(..., subject=...)` sets it.
SUBJECT_HEADER: Final = "Tideflow-Subject"


# --- errors ------------------------------------------------------------------------


class BackendError(Exception):
    """A backend could not do what was asked (server unreachable, bad reply, ...)."""


class BackendConfigError(BackendError):
    """The options given to a backend's constructor do not match its schema."""


class BackendClosedError(BackendError):
    """A method was called after `aclose()`."""


class UnknownTopicError(BackendError):
    """A broker was asked about a topic it was not constructed with."""


# --- values ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackendContext:
    """Where a backend runs.

    `block` is the name of the block that configured it (`broker "main"` gives
    "main"); `source` is the `.flow` file, and relative paths in options are
    relative to its directory (`base_dir`). `flow_ir_json` is the flow's compiled
    IR as JSON text (what `tideflow compile` prints), given to scalers so that
    the instances they start run the flow their orchestrator runs, without
    compiling `source` again (None when the caller has no IR).
    """

    block: str = ""
    source: Path | None = None
    flow_ir_json: str | None = field(default=None, repr=False)

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source is not None else Path.cwd()


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


# --- the interfaces ----------------------------------------------------------------


def backend_summary(cls: type[Backend]) -> str:
    """The first line of a backend class's docstring: its one-line description."""
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def _contains_unresolved(value: object) -> bool:
    # imported here: the IR module pulls in networkx, which a plugin listing never needs
    from tideflow.compiler.ir import EnvRef, SecretRef

    if isinstance(value, EnvRef | SecretRef):
        return True
    if isinstance(value, Mapping):
        return any(_contains_unresolved(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_contains_unresolved(v) for v in value)
    return False


class Backend(abc.ABC):
    """What brokers, scalers and notifiers share: a name, an option schema, a
    configuration checked against it, and `async with` support."""

    kind: ClassVar[str]  # "broker" | "scaler" | "notifier": the catalog it goes in
    name: ClassVar[str]
    options: ClassVar[tuple[Field, ...]] = ()

    def __init__(self, config: Mapping[str, Any], *, context: BackendContext | None = None) -> None:
        """`config` holds the block's options, already validated by the compiler and
        with `env()`/`secret()` resolved by the caller; options left out take their
        schema default. Raises `BackendConfigError` for options the schema lacks,
        missing required ones, and unresolved `env()`/`secret()` values."""
        self.config: Mapping[str, Any] = self.with_defaults(config)
        self.context = context if context is not None else BackendContext()

    @classmethod
    def with_defaults(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """`config` completed with the schema's defaults, after the checks above."""
        known = {f.name: f for f in cls.options}
        what = f'{cls.kind} "{cls.name}"'
        for key in config:
            if key not in known:
                close = suggest(key, known)
                hint = f"; {close}" if close else ""
                raise BackendConfigError(f"unknown option `{key}` for {what}{hint}")
        for key, value in config.items():
            if _contains_unresolved(value):
                raise BackendConfigError(
                    f"option `{key}` of {what} holds an unresolved env() or secret(); "
                    "resolve it before constructing the backend"
                )
        complete = dict(config)
        for option in cls.options:
            if option.name in complete:
                continue
            if option.required:
                raise BackendConfigError(f"missing required option `{option.name}` for {what}")
            if option.default is not None:
                complete[option.name] = option.default
        return complete

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release everything the backend holds. Idempotent; it must release even
        after a failed call, and must not raise because of one."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class Broker(Backend):
    """A messaging platform: topics (streams, queues), publishing, consumer groups.

    Delivery is at least once: a consumer acknowledges (`ack`) a message after its
    handler succeeds; a message that is negatively acknowledged (`nack`), or that
    was delivered to a consumer which closed or died without acknowledging it, is
    delivered again to the group. Consumers in one group share the messages;
    every group sees every message.

    One broker object is one client: when it consumes, it is one consumer of the
    group (two objects in the same group share the work).
    """

    kind: ClassVar[str] = "broker"
    partitioned: ClassVar[bool] = False
    #: The topic's `subjects` (wildcards allowed) decide where a message goes; one
    #: whose subjects all have wildcards needs a `SUBJECT_HEADER` on each message.
    subject_routed: ClassVar[bool] = False

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: Sequence[TopicNode] = (),
        *,
        context: BackendContext | None = None,
    ) -> None:
        """`topics` are the records (from the IR) of the topics this broker carries;
        the methods below accept only their names."""
        super().__init__(config, context=context)
        self.topics: Mapping[str, TopicNode] = {t.name: t for t in topics}

    def topic(self, name: str) -> TopicNode:
        """The record of a topic this broker was constructed with."""
        try:
            return self.topics[name]
        except KeyError:
            known = ", ".join(sorted(self.topics)) or "none"
            raise UnknownTopicError(
                f'topic "{name}" is not carried by this {self.name} broker (topics: {known})'
            ) from None

    @abc.abstractmethod
    async def ensure_topic(self, topic: str, groups: Sequence[str] = ()) -> None:
        """Create the topic (stream, queue) and the consumer `groups` that read it,
        when missing; idempotent. A group created here counts, and is later
        delivered, every message published after this call returns."""

    async def ensure_topics(self, groups: Mapping[str, Sequence[str]] | None = None) -> None:
        """`ensure_topic` for every topic of this broker; `groups` maps a topic to
        the consumer groups that read it."""
        for name in self.topics:
            await self.ensure_topic(name, (groups or {}).get(name, ()))

    @abc.abstractmethod
    async def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> None:
        """Publish a batch; returns once the broker has accepted every message
        (durably, as far as the broker promises durability), or raises."""

    @abc.abstractmethod
    async def consume(
        self, topic: str, group: str, *, max_messages: int = 100, wait: float = 1.0
    ) -> list[Message]:
        """Up to `max_messages` messages for this consumer of `group`, waiting at
        most `wait` seconds for the first one; an empty list when none came.

        Redeliveries (nacked messages, messages of consumers that went away) come
        through here too, with a higher `delivery_count`. Messages of one
        partition are delivered in the order they were published."""

    @abc.abstractmethod
    async def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge messages received from `consume`: the group never receives
        them again and they leave its backlog."""

    @abc.abstractmethod
    async def nack(self, messages: Sequence[Message], *, delay: float = 0.0) -> None:
        """Give messages back: they are delivered again (to any consumer of the
        group), no sooner than `delay` seconds from now where the broker supports a
        delay."""

    async def keep_membership(self, topic: str, group: str) -> None:
        """Called instead of `consume`, about twice a second, while this consumer of
        `group` holds as many messages as it may handle at once: stay a live member
        of the group and take part in its rebalances (give up the partitions that
        new members should own), without handing out messages, so that consumers
        that join meanwhile get work. The default does nothing (right for a broker
        whose consumers share one queue and have no membership to keep)."""
        return None

    @abc.abstractmethod
    async def backlog(self, topic: str, group: str) -> BacklogReading:
        """The group's backlog on the topic, read now: messages not yet delivered
        plus messages delivered and not yet acknowledged. A group that has not
        consumed yet counts everything published since it was ensured. Raises
        `BackendError` when the backlog cannot be read."""

    @final
    async def read_backlog(
        self, topic: str, group: str, *, timeout: float
    ) -> BacklogReading | BacklogFailure:
        """`backlog()` for the autoscaler: never raises for a failed read (other
        than cancellation) and never takes longer than `timeout` seconds."""
        try:
            return await asyncio.wait_for(self.backlog(topic, group), timeout)
        except TimeoutError:
            error = f"no answer within {timeout:g}s"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return BacklogFailure(topic, group, error, datetime.now(UTC))


class Scaler(Backend):
    """Starts and stops the instances of one consumer.

    `scale(n)` returns once the backend has been told to run `n` instances;
    `current()` then reports `n`. What `aclose()` does to running instances is
    the backend's documented choice (it releases the scaler's own resources).
    """

    kind: ClassVar[str] = "scaler"

    def __init__(
        self,
        config: Mapping[str, Any],
        consumer: ConsumerNode,
        *,
        context: BackendContext | None = None,
    ) -> None:
        """`consumer` is the IR record of the consumer whose instances are scaled;
        `config` holds the options of its `scale` block that belong to this backend."""
        super().__init__(config, context=context)
        self.consumer = consumer

    @abc.abstractmethod
    async def current(self) -> int:
        """How many instances run (or are starting) now."""

    @abc.abstractmethod
    async def scale(self, instances: int) -> None:
        """Run `instances` instances (≥ 0; `ValueError` otherwise). Idempotent."""


class Notifier(Backend):
    """Delivers events (failures, retries, crash loops, ...) somewhere people look."""

    kind: ClassVar[str] = "notifier"

    @abc.abstractmethod
    async def send(self, event: NotifyEvent) -> None:
        """Deliver one event; raises `BackendError` when it could not be delivered.
        Must never include a `secret()` value in what it sends or raises."""


def check_backend_class(cls: type[Backend]) -> list[str]:
    """What is wrong with a backend class's declarations (empty when nothing is)."""
    from tideflow.compiler.schema import Field  # the compiler imports this package

    problems: list[str] = []
    where = f"{cls.__module__}.{cls.__qualname__}"
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not BACKEND_NAME.match(name):
        problems.append(
            f"{where} must set `name` to a lower-case word (letters, digits, `_`, `-`), "
            f"not {name!r}"
        )
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    if abstract:
        problems.append(f"{where} leaves {', '.join(abstract)} unimplemented")
    options = getattr(cls, "options", None)
    if not isinstance(options, tuple) or not all(isinstance(o, Field) for o in options):
        problems.append(f"{where}.options must be a tuple of tideflow.compiler.schema.Field")
    else:
        seen: set[str] = set()
        for option in options:
            if option.name in seen:
                problems.append(f"{where} declares option `{option.name}` twice")
            seen.add(option.name)
            if option.required and option.default is not None:
                problems.append(f"{where}: required option `{option.name}` has a default")
            if not option.doc.strip():
                problems.append(f"{where}: option `{option.name}` has no doc")
    if not backend_summary(cls):
        problems.append(f"{where} has no docstring (its first line describes the backend)")
    return problems
