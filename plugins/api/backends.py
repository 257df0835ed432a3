"""The interfaces every backend implements: `Broker`, `Scaler` and `Notifier`.

Hooks are synchronous and only hand classes to a registry (see `hookspecs`); the
work happens in these classes, whose methods are `async`. Each class declares:

- `name`: the word a `.flow` file uses (`kind = "redis"`, `backend = "local"`);
- `options`: its option schema, a tuple of `tideflow.plugins.api.Field`, which
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
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self, final

from .errors import BackendConfigError, UnknownTopicError
from .messages import BacklogFailure, BacklogReading, Message, NotifyEvent, OutgoingMessage
from .options import EnvRef, Field, SecretRef
from .suggest import suggest

if TYPE_CHECKING:
    from tideflow.compiler.ir import ConsumerNode, TopicNode

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "Backend",
    "BackendContext",
    "Broker",
    "Notifier",
    "Scaler",
    "backend_summary",
    "check_backend_class",
    "ready_message",
]

BACKEND_NAME = re.compile(r"[a-z][a-z0-9_-]*\Z")


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


def backend_summary(cls: type[Backend]) -> str:
    """The first line of a backend class's docstring: its one-line description."""
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def _contains_unresolved(value: object) -> bool:
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

    kind: ClassVar[str]  # "broker" | "scaler" | "notifier" | "executor": its catalog
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


#: How long a stopped instance of a consumer without a `scale` block gets to drain
#: before it is killed (the default of `scale { drain_timeout }`): a scaler's budget
#: and the instance's own.
DEFAULT_DRAIN_TIMEOUT: Final = 30.0


def ready_message(instance_id: str) -> str:
    """What the line an instance logs once it consumes contains ("consumer C:
    instance ID started (...)"): a scaler that starts processes watches their
    output for it."""
    return f"instance {instance_id} started"


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
        problems.append(f"{where}.options must be a tuple of tideflow.plugins.api.Field")
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
