"""The `nats` broker: NATS JetStream through nats-py.

Topics and streams
    A topic is one JetStream stream. Its subjects are the topic's `subjects`, or
    the topic's name when it has none. The stream is named after the topic: the
    name itself when it holds only letters, digits, `_` and `-`, otherwise those
    characters with `_` for the others and a short hash of the name appended (so
    `events.clicks` and `events_clicks` stay two streams). Storage (`file` or
    `memory`) and `replicas` come from the broker block, `max_age` from the
    topic's `retention` (none: messages are kept until deleted by an operator; the
    stream uses JetStream's `limits` retention, so acknowledged messages stay
    until they age out and a group created later can still read them).
    `ensure_topic` creates the stream when missing and updates its subjects,
    `max_age` and replicas when they differ; JetStream cannot change a stream's
    storage, which is then an error. `publish` and `consume` create a missing
    stream too, so a job may publish before the orchestrator ensured the topic.

Publishing
    Messages go out with `js.publish_async` (no round trip per message); `publish`
    returns once every message's PubAck arrived, and raises `BackendError` when
    some did not within `timeout`. The key travels in the `Tideflow-Key` header
    (base64, since keys are bytes and header values text). Every message carries a
    `Nats-Msg-Id` (a random prefix per call and the message's index; a
    `Nats-Msg-Id` header the publisher set is kept instead), so JetStream drops
    duplicates within the stream's duplicate window (2 minutes, or `retention`
    when shorter). That is what makes it safe for `publish` to send a message
    again when the connection was lost or no PubAck came: after a reconnect it
    re-sends every message not yet acknowledged, until all are or `timeout` ends.
    The header costs about a tenth of the throughput, publishing and consuming
    (nats-py encodes and parses it for each message); `deduplicate = false` leaves
    it out, and a message sent again may then be stored twice.
    A message goes to the topic's default subject: its first subject without
    wildcards (the topic's name when it has no `subjects`). A
    `Tideflow-Subject` header (`SUBJECT_HEADER`; a job or handler sets it with
    `ctx.publish(..., subject=...)`) picks another one; it must be a subject the
    topic captures. A topic whose subjects all have wildcards needs it on every
    message (lint warns, W411).
    Publishing is at least once: a caller that publishes a batch again after a
    `BackendError` gets new message ids, so messages already stored are stored
    twice. Messages are stored in the order they were sent, except those sent
    again after an outage.

Consumer groups
    A group is a durable pull consumer named after the group (sanitized like
    stream names) with explicit acknowledgement, `ack_wait` and `max_deliver`
    from the broker block. One made by `ensure_topic` uses the `new` deliver
    policy: it counts, and gets, only messages published after the call; one that
    first appears in `consume` starts at the oldest message kept, as in the
    `embedded` broker. `ensure_topic` updates `ack_wait` and `max_deliver` of an
    existing durable when they differ. `consume` is one `fetch` of up to
    `max_messages` on a pull subscription bound to the durable (one per topic and
    group in each broker object); it never returns more (messages that reached
    the subscription after an earlier fetch gave up waiting, which nats-py's
    `fetch` adds to its result, are kept for the next `consume`). `Message.id` is
    the stream sequence and `delivery_count` the server's delivery count. Delivered headers are the
    publisher's, without `Tideflow-Key` and JetStream's own `Nats-` headers, plus
    `Tideflow-Subject`, the subject the message was published on.

Acknowledgements
    `ack` sends the acknowledgements without waiting, except the last one for
    each durable, which waits for the server's reply (`ack_sync`): the server
    applies one connection's acknowledgements of a durable in order, so when
    that reply comes, all of them were applied, and `backlog` read afterwards
    already excludes them (one round trip per call, not per message). `nack`
    sends `-NAK` with the delay given or, when the delay is 0 and the block sets
    `backoff`, `backoff[delivery_count - 1]` (the last entry once the list runs
    out); then it flushes. The backoff is applied here rather than as
    JetStream's consumer `BackOff`, because JetStream would also use its first
    entry in place of `ack_wait`. After `max_deliver` deliveries the server stops
    delivering a message and it leaves the backlog. `aclose` gives back, at once,
    the messages this object received and neither acknowledged nor negatively
    acknowledged; messages that reached the client after a `fetch` gave up
    waiting are delivered again after `ack_wait`.

Backlog
    `num_pending + num_ack_pending` of the durable (KEDA's reading), as one
    partition, 0. A group that has no durable yet counts every message the stream
    keeps (where `consume` would start it).

Connection and outages
    One connection per broker object, opened on first use. nats-py reconnects
    forever, `reconnect_wait` apart; meanwhile every call fails with
    `BackendError` within a bounded time instead of hanging: `publish` after
    `timeout` (it keeps re-sending until then), `consume` after its `wait` when
    nothing came and the connection is down, `ack`, `nack` and `backlog` after
    `timeout`. Acknowledgements sent during an outage are buffered and reach the
    server after the reconnect; if they never do, the messages are delivered
    again after `ack_wait` (at least once, never lost). The first connection
    attempt also gives up after `timeout` ("could not connect"; only a connection
    that was up is logged as "disconnected, reconnecting"). While JetStream does not answer (a
    server starting or stopping) `consume` tries again until its `wait` is over.
    A stream or durable that a restart lost (memory storage) is made again by the
    next `publish` or `consume`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import math
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, final

from . import builtin_options
from .api import (
    SUBJECT_HEADER,
    BackendClosedError,
    BackendConfigError,
    BackendContext,
    BackendError,
    BacklogReading,
    Broker,
    Message,
    OutgoingMessage,
    hookimpl,
)

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg as NatsMsg
    from nats.js.api import ConsumerConfig, StreamConfig
    from nats.js.client import JetStreamContext
    from tideflow.compiler.ir import TopicNode

    from .api import BackendRegistry

__all__ = [
    "KEY_HEADER",
    "SUBJECT_HEADER",
    "NatsBroker",
    "durable_name",
    "stream_name",
    "subject_captures",
    "tideflow_register_brokers",
]

log = logging.getLogger(__name__)

#: Header carrying a message's key, base64-encoded.
KEY_HEADER: Final = "Tideflow-Key"
#: JetStream's de-duplication header.
MSG_ID_HEADER: Final = "Nats-Msg-Id"
#: Delivered headers starting with this are JetStream's, not the publisher's.
NATS_HEADER_PREFIX: Final = "Nats-"
#: `publish` sends again what is still unacknowledged when no PubAck came for this
#: long while the connection stayed up (a reconnect makes it send again at once).
RESEND_AFTER: Final = 2.0
#: While waiting for a PubAck, how often `publish` checks for a reconnect.
RECHECK_EVERY: Final = 0.25
#: Publishes in flight (sent, PubAck not yet received) per connection.
MAX_IN_FLIGHT: Final = 4000
#: Longest `publish_async` may wait for room among nats-py's in-flight publishes
#: when other calls hold them all, before `publish` looks at its acknowledgements.
STALL_WAIT: Final = 0.5
#: First pause before fetching again when JetStream did not answer (503).
UNAVAILABLE_PAUSE: Final = 0.02
#: `fetch` needs a positive wait.
MIN_FETCH_WAIT: Final = 0.01
#: JetStream API error code (`err_code`) of a missing stream.
STREAM_NOT_FOUND: Final = 10059

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")


# --- names and subjects ------------------------------------------------------------


def _safe_name(text: str) -> str:
    safe = _UNSAFE_NAME.sub("_", text)
    if safe == text and safe:
        return safe
    digest = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{safe}_{digest}"


def stream_name(topic: str) -> str:
    """The JetStream stream of a topic (see the module's docstring)."""
    return _safe_name(topic)


def durable_name(group: str) -> str:
    """The durable consumer of a consumer group (sanitized like stream names)."""
    return _safe_name(group)


def _is_literal(subject: str) -> bool:
    tokens = subject.split(".")
    return all(tokens) and not any(t in ("*", ">") for t in tokens)


def subject_captures(pattern: str, subject: str) -> bool:
    """Whether the stream subject `pattern` (wildcards `*` and `>` allowed) captures
    the literal `subject`."""
    wanted, given = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(given) > index
        if index >= len(given) or (token != "*" and token != given[index]):
            return False
    return len(wanted) == len(given)


def _sequence_and_deliveries(msg: NatsMsg) -> tuple[str, int]:
    """A JetStream message's stream sequence and delivery count, read from its reply
    subject: `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...` (9 tokens),
    or with a domain and an account hash after `$JS.ACK` (12 tokens, ADR-15). Cheaper
    than nats-py's `metadata`, which parses every field, on every message."""
    tokens = (msg.reply or "").split(".")
    if tokens[:2] == ["$JS", "ACK"]:
        if len(tokens) == 9:
            return tokens[5], int(tokens[4])
        if len(tokens) >= 11:
            return tokens[7], int(tokens[6])
    metadata = msg.metadata  # raises for a message that is not JetStream's
    return str(metadata.sequence.stream), metadata.num_delivered


def _describe(error: BaseException) -> str:
    from nats.js.errors import APIError

    if isinstance(error, APIError) and error.description:
        return str(error.description)
    if isinstance(error, TimeoutError):
        return "no answer from the nats server in time"
    text = str(error).removeprefix("nats: ")
    return text or type(error).__name__


# --- per-topic and per-group state -----------------------------------------------


@dataclass(frozen=True, slots=True)
class _TopicPlan:
    """What the broker derives from a topic record once."""

    stream: str
    subjects: tuple[str, ...]
    default_subject: str | None


@dataclass(frozen=True, slots=True)
class _Reader:
    """A pull subscription bound to one group's durable; one `fetch` at a time."""

    subscription: JetStreamContext.PullSubscription
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: delivered beyond what a `consume` asked for, handed out by the next one
    surplus: list[NatsMsg] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _RoundOutcome:
    """How a round of sending went: an error that sending again would not cure, and
    whether the server answered that no stream takes the subject."""

    refused: BackendError | None
    no_stream: bool = False


@final
class NatsBroker(Broker):
    """NATS JetStream (nats-py): a topic is a stream, a consumer group a durable pull consumer.

    See the module's docstring for naming, publishing, acknowledgements and
    outages.
    """

    name: ClassVar[str] = "nats"
    partitioned: ClassVar[bool] = False
    subject_routed: ClassVar[bool] = True
    options = builtin_options.NATS_BROKER

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: Sequence[TopicNode] = (),
        *,
        context: BackendContext | None = None,
    ) -> None:
        super().__init__(config, topics, context=context)
        try:
            import nats  # noqa: F401 - only checks that nats-py is installed
        except ImportError:
            raise BackendConfigError(
                "the nats broker needs nats-py; install it with `pip install 'tideflow[nats]'`"
            ) from None
        servers = self.config["servers"]
        self._servers: list[str] = [servers] if isinstance(servers, str) else list(servers)
        self._timeout = float(self.config["timeout"])
        self._ack_wait = float(self.config["ack_wait"])
        self._max_deliver = int(self.config["max_deliver"])
        self._deduplicate = bool(self.config["deduplicate"])
        self._backoff: tuple[float, ...] = tuple(float(d) for d in self.config.get("backoff", ()))
        self._plans: dict[str, _TopicPlan] = {}
        for node in self.topics.values():
            self._plans[node.name] = self._plan(node)

        block = self.context.block
        self._label = f'nats broker "{block}"' if block else "nats broker"
        self._client: NatsClient | None = None
        self._jetstream: JetStreamContext | None = None
        self._connect_lock = asyncio.Lock()
        self._setup_lock = asyncio.Lock()
        self._closed = False
        self._connected = asyncio.Event()
        self._reconnects = 0  # grows at each reconnect: publish re-sends what was in flight
        self._streams_ready: set[str] = set()
        self._readers: dict[tuple[str, str], _Reader] = {}
        # delivered, neither acked nor nacked: given back by aclose (keyed by reply subject)
        self._held: dict[str, NatsMsg] = {}

    @staticmethod
    def _plan(node: TopicNode) -> _TopicPlan:
        subjects = node.subjects or (node.name,)
        default = next((s for s in subjects if _is_literal(s)), None)
        return _TopicPlan(stream_name(node.name), tuple(subjects), default)

    # --- connection --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackendClosedError(f"this {self.name} broker is closed")

    async def _js(self) -> JetStreamContext:
        """The JetStream context, connecting on first use (bounded by `timeout`)."""
        self._check_open()
        client, jetstream = self._client, self._jetstream
        if client is not None and jetstream is not None and not client.is_closed:
            return jetstream
        async with self._connect_lock:
            self._check_open()
            if self._client is not None and self._client.is_closed:
                self._client = self._jetstream = None  # closed for good: start again
            if self._client is None or self._jetstream is None:
                client = await self._connect()
                if self._closed:  # aclose() ran while connecting
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.close(), self._timeout)
                    raise BackendClosedError(f"this {self.name} broker is closed")
                self._client = client
                self._jetstream = self._client.jetstream(
                    timeout=self._timeout, publish_async_max_pending=MAX_IN_FLIGHT
                )
                self._connected.set()
            return self._jetstream

    async def _connect(self) -> NatsClient:
        import nats
        from nats.aio.client import Client

        async def on_error(error: Exception) -> None:
            # failed reconnection attempts are expected while the server is away
            level = logging.WARNING if self._connected.is_set() else logging.DEBUG
            log.log(level, "%s: %s", self._label, _describe(error))

        established = False  # nats-py reports a failed first connection as a disconnect

        async def on_disconnected() -> None:
            self._connected.clear()
            if not self._closed and established:
                log.warning("%s: disconnected, reconnecting", self._label)

        async def on_reconnected() -> None:
            self._reconnects += 1
            self._connected.set()
            log.info("%s: reconnected", self._label)

        options: dict[str, Any] = {
            "servers": self._servers,
            "name": f"tideflow {block}" if (block := self.context.block) else "tideflow",
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,  # forever; calls are bounded by `timeout`
            "reconnect_time_wait": float(self.config["reconnect_wait"]),
            "connect_timeout": min(self._timeout, 2.0),
            "error_cb": on_error,
            "disconnected_cb": on_disconnected,
            "reconnected_cb": on_reconnected,
        }
        for option in ("user", "password", "token"):
            if self.config.get(option) is not None:
                options[option] = self.config[option]
        if self.config.get("creds") is not None:
            options["user_credentials"] = str(self.context.base_dir / self.config["creds"])
        client = Client()
        try:
            await asyncio.wait_for(client.connect(**options), self._timeout)
        except BaseException as error:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), self._timeout)
            if isinstance(error, TimeoutError):
                raise BackendError(
                    f"could not connect to the nats servers (option `servers`) "
                    f"within {self._timeout:g}s"
                ) from None
            if isinstance(error, nats.errors.Error | OSError):
                raise BackendError(
                    f"could not connect to the nats servers: {_describe(error)}"
                ) from error
            raise
        established = True
        return client

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn nats-py's errors into `BackendError`s that say what failed."""
        import nats.errors

        try:
            yield
        except BackendError:
            raise
        except nats.errors.ConnectionClosedError as error:
            if self._closed:
                raise BackendClosedError(f"this {self.name} broker is closed") from error
            raise BackendError(f"{what}: the connection is closed") from error
        except (nats.errors.Error, TimeoutError, OSError) as error:
            raise BackendError(f"{what}: {_describe(error)}") from error

    # --- streams and durables ---------------------------------------------------

    def _topic_plan(self, topic: str) -> tuple[TopicNode, _TopicPlan]:
        node = self.topic(topic)
        return node, self._plans[node.name]

    def _stream_config(self, node: TopicNode, plan: _TopicPlan) -> StreamConfig:
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig

        return StreamConfig(
            name=plan.stream,
            description=node.description or f"tideflow topic {node.name}",
            subjects=list(plan.subjects),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE if self.config["storage"] == "file" else StorageType.MEMORY,
            num_replicas=int(self.config["replicas"]),
            max_age=node.retention,
        )

    async def _ensure_stream(self, node: TopicNode, plan: _TopicPlan, *, update: bool) -> None:
        """Create the topic's stream when missing; with `update`, also bring its
        subjects, max age and replicas in line with the topic."""
        from nats.js.errors import NotFoundError

        js = await self._js()
        wanted = self._stream_config(node, plan)
        with self._errors(f'could not set up the stream of topic "{node.name}"'):
            try:
                info = await js.stream_info(plan.stream)
            except NotFoundError:
                try:
                    await js.add_stream(wanted)
                except Exception:
                    # another process may have created it at the same time
                    with contextlib.suppress(NotFoundError):
                        await js.stream_info(plan.stream)
                        self._streams_ready.add(plan.stream)
                        return
                    raise
                self._streams_ready.add(plan.stream)
                return
            if update:
                await self._update_stream(node, plan, info.config, wanted)
        self._streams_ready.add(plan.stream)

    async def _update_stream(
        self, node: TopicNode, plan: _TopicPlan, current: StreamConfig, wanted: StreamConfig
    ) -> None:
        if current.storage != wanted.storage:
            have = getattr(current.storage, "value", current.storage)
            want = getattr(wanted.storage, "value", wanted.storage)
            raise BackendError(
                f'stream "{plan.stream}" of topic "{node.name}" uses {have} storage, the broker '
                f"asks for {want}; JetStream cannot change a stream's storage (delete the "
                "stream, or set `storage` to match)"
            )
        same_age = math.isclose(current.max_age or 0.0, wanted.max_age or 0.0, abs_tol=1e-6)
        if (
            sorted(current.subjects or ()) == sorted(plan.subjects)
            and same_age
            and (current.num_replicas or 1) == wanted.num_replicas
        ):
            return
        js = await self._js()
        changes: dict[str, Any] = {
            "subjects": list(plan.subjects),
            "max_age": wanted.max_age,
            "num_replicas": wanted.num_replicas,
        }
        if not same_age:
            changes["duplicate_window"] = 0  # the server derives it from the new max age
        await js.update_stream(current.evolve(**changes))

    def _consumer_config(self, group: str, *, new_only: bool) -> ConsumerConfig:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        durable = durable_name(group)
        return ConsumerConfig(
            name=durable,
            durable_name=durable,
            description=f"tideflow group {group}",
            deliver_policy=DeliverPolicy.NEW if new_only else DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_deliver=self._max_deliver,
        )

    async def _ensure_durable(
        self, node: TopicNode, plan: _TopicPlan, group: str, *, new_only: bool, update: bool
    ) -> None:
        from nats.js.errors import NotFoundError

        js = await self._js()
        durable = durable_name(group)
        with self._errors(f'could not set up group "{group}" of topic "{node.name}"'):
            try:
                info = await js.consumer_info(plan.stream, durable)
            except NotFoundError as missing:
                if missing.err_code == STREAM_NOT_FOUND:
                    await self._ensure_stream(node, plan, update=False)
                try:
                    await js.add_consumer(
                        plan.stream, self._consumer_config(group, new_only=new_only)
                    )
                except Exception:
                    # made at the same time by another consumer, perhaps with the other
                    # deliver policy: theirs stands
                    with contextlib.suppress(NotFoundError):
                        await js.consumer_info(plan.stream, durable)
                        return
                    raise
                return
            current = info.config
            if update and (
                not math.isclose(current.ack_wait or 0.0, self._ack_wait, abs_tol=1e-6)
                or current.max_deliver != self._max_deliver
            ):
                await js.add_consumer(
                    plan.stream,
                    current.evolve(ack_wait=self._ack_wait, max_deliver=self._max_deliver),
                )

    async def ensure_topic(self, topic: str, groups: Sequence[str] = ()) -> None:
        """Create or update the topic's stream, and create the groups' durables
        (deliver policy `new`) or update their `ack_wait` and `max_deliver`."""
        self._check_open()
        node, plan = self._topic_plan(topic)
        async with self._setup_lock:
            await self._ensure_stream(node, plan, update=True)
            for group in groups:
                await self._ensure_durable(node, plan, group, new_only=True, update=True)

    async def _reader(self, node: TopicNode, plan: _TopicPlan, group: str) -> _Reader:
        reader = self._readers.get((node.name, group))
        if reader is not None:
            return reader
        async with self._setup_lock:
            reader = self._readers.get((node.name, group))
            if reader is not None:
                return reader
            js = await self._js()
            if plan.stream not in self._streams_ready:
                await self._ensure_stream(node, plan, update=False)
            await self._ensure_durable(node, plan, group, new_only=False, update=False)
            with self._errors(f'could not subscribe group "{group}" to topic "{node.name}"'):
                subscription = await js.pull_subscribe_bind(
                    durable=durable_name(group), stream=plan.stream
                )
            reader = self._readers[(node.name, group)] = _Reader(subscription)
            return reader

    # --- publishing --------------------------------------------------------------

    def _outgoing(
        self, node: TopicNode, plan: _TopicPlan, messages: Sequence[OutgoingMessage]
    ) -> list[tuple[str, bytes, dict[str, str] | None]]:
        """(subject, payload, headers) of each message, with its id and key; no
        headers at all when there are none (nats-py then sends a plain PUB)."""
        prefix = f"{uuid.uuid4().hex}-" if self._deduplicate else None
        prepared: list[tuple[str, bytes, dict[str, str] | None]] = []
        for index, message in enumerate(messages):
            subject = plan.default_subject
            headers: dict[str, str] | None = None
            if message.headers:
                headers = dict(message.headers)
                chosen = headers.pop(SUBJECT_HEADER, None)
                if chosen is not None and chosen != subject:
                    subject = self._captured_subject(node, plan, chosen)
                if prefix is not None:
                    headers.setdefault(MSG_ID_HEADER, f"{prefix}{index}")
            elif prefix is not None:
                headers = {MSG_ID_HEADER: f"{prefix}{index}"}
            if subject is None:
                raise BackendError(
                    f'topic "{node.name}" captures only subjects with wildcards '
                    f"({', '.join(plan.subjects)}): name each message's subject, "
                    f'`ctx.publish("{node.name}", value, subject=...)` (the '
                    f"`{SUBJECT_HEADER}` header)"
                )
            if message.key is not None:
                if headers is None:
                    headers = {}
                headers[KEY_HEADER] = base64.b64encode(message.key).decode("ascii")
            prepared.append((subject, message.value, headers or None))
        return prepared

    @staticmethod
    def _captured_subject(node: TopicNode, plan: _TopicPlan, subject: str) -> str:
        if _is_literal(subject) and any(subject_captures(p, subject) for p in plan.subjects):
            return subject
        raise BackendError(
            f'subject "{subject}" (header `{SUBJECT_HEADER}`) is not one topic '
            f'"{node.name}" captures ({", ".join(plan.subjects)})'
        )

    async def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> None:
        """Publish with `publish_async`; returns when every PubAck arrived, re-sending
        after a reconnect (de-duplicated by `Nats-Msg-Id`); `BackendError` when some
        are still missing after `timeout`."""
        self._check_open()
        node, plan = self._topic_plan(topic)
        if not messages:
            return
        prepared = self._outgoing(node, plan, messages)
        js = await self._js()
        if plan.stream not in self._streams_ready:
            async with self._setup_lock:
                await self._ensure_stream(node, plan, update=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        waiting = set(range(len(prepared)))  # not acknowledged yet
        what = f'could not publish to topic "{node.name}"'
        pause = UNAVAILABLE_PAUSE
        while waiting:
            outcome = await self._publish_round(js, prepared, waiting, deadline, what)
            if not waiting:
                return
            if outcome.refused is not None:
                raise outcome.refused
            if loop.time() >= deadline:
                raise BackendError(
                    f"{what}: {len(waiting)} of {len(prepared)} messages not acknowledged "
                    f"by the nats server within {self._timeout:g}s (the others were stored)"
                )
            if not self._connected.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._connected.wait(), deadline - loop.time())
            elif outcome.no_stream:
                # nothing took the subject: JetStream still starting, or the stream
                # gone (memory storage after a restart); make it again, then resend
                await asyncio.sleep(min(pause, max(deadline - loop.time(), 0.0)))
                pause = min(pause * 2, 0.5)
                with contextlib.suppress(BackendError, TimeoutError):
                    async with asyncio.timeout_at(deadline), self._setup_lock:
                        await self._ensure_stream(node, plan, update=False)

    async def _publish_round(
        self,
        js: JetStreamContext,
        prepared: list[tuple[str, bytes, dict[str, str] | None]],
        waiting: set[int],
        deadline: float,
        what: str,
    ) -> _RoundOutcome:
        """Send the `waiting` messages and collect their PubAcks, in order, until all
        came, the connection was re-established, none came for `RESEND_AFTER`, or
        the deadline. Acknowledged indexes leave `waiting`."""
        import nats.errors
        import nats.js.errors

        loop = asyncio.get_running_loop()
        reconnects = self._reconnects
        sent: list[tuple[asyncio.Future[Any], int]] = []
        settled = 0  # sent[:settled] are done
        last_progress = loop.time()

        async def settle(upto: int) -> bool:
            """Wait until sent[:upto] are done; False when it is not worth waiting
            any longer (a reconnect, no PubAck for a while, the deadline)."""
            nonlocal settled, last_progress
            while settled < upto:
                future = sent[settled][0]
                if not future.done():
                    # PubAcks come in bursts: most futures are done when looked at,
                    # and awaiting them in order costs no callback per message
                    now = loop.time()
                    give_up = min(deadline, last_progress + RESEND_AFTER)
                    if self._reconnects != reconnects or now >= give_up:
                        return False
                    await asyncio.wait((future,), timeout=min(give_up - now, RECHECK_EVERY))
                    if not future.done():
                        continue
                    last_progress = loop.time()
                settled += 1
            return True

        refused: list[BaseException] = []
        no_stream = False
        room = 0  # publishes before nats-py's limit of those in flight is looked at again
        try:
            for index in sorted(waiting):
                # nats-py bounds the publishes in flight with a semaphore; waiting on
                # it with a timeout costs a task per message, so wait here instead
                stall: float | None = None
                if room <= 0:
                    room = MAX_IN_FLIGHT - js.publish_async_pending()
                    unsettled = len(sent) - settled
                    if room <= 0 and unsettled:
                        if not await settle(settled + max(unsettled // 2, 1)):
                            break
                        room = MAX_IN_FLIGHT - js.publish_async_pending()
                    if room <= 0:  # other calls hold the slots: wait for one, bounded
                        stall = min(STALL_WAIT, max(deadline - loop.time(), 0.001))
                room -= 1
                subject, payload, headers = prepared[index]
                try:
                    future = await js.publish_async(
                        subject, payload, wait_stall=stall, headers=headers
                    )
                except (
                    nats.js.errors.TooManyStalledMsgsError,
                    nats.errors.OutboundBufferLimitError,
                ):
                    break  # look at the acknowledgements, then send the rest
                except nats.errors.ConnectionClosedError as error:
                    if self._closed:
                        raise BackendClosedError(f"this {self.name} broker is closed") from error
                    return _RoundOutcome(BackendError(f"{what}: the connection is closed"))
                except nats.errors.Error as error:
                    return _RoundOutcome(BackendError(f"{what}: {_describe(error)}"))
                sent.append((future, index))
                if self._reconnects != reconnects:
                    break
            await settle(len(sent))
        finally:
            for future, index in sent:
                if not future.done():
                    future.cancel()  # frees nats-py's slot; a late PubAck is ignored
                elif not future.cancelled():
                    answer = future.exception()
                    if answer is None:
                        waiting.discard(index)
                    elif isinstance(answer, nats.js.errors.NoStreamResponseError) or (
                        isinstance(answer, nats.js.errors.APIError) and answer.code == 503
                    ):
                        no_stream = True
                    else:
                        refused.append(answer)  # the server said no: sending again won't help
        if refused:
            return _RoundOutcome(BackendError(f"{what}: {_describe(refused[0])}"))
        return _RoundOutcome(None, no_stream=no_stream)

    # --- consuming ---------------------------------------------------------------

    async def consume(
        self, topic: str, group: str, *, max_messages: int = 100, wait: float = 1.0
    ) -> list[Message]:
        """One `fetch` of up to `max_messages` on the group's durable, waiting at most
        `wait` seconds; `BackendError` when nothing came and the connection is down."""
        self._check_open()
        node, plan = self._topic_plan(topic)
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, not {max_messages}")
        from nats.js.errors import APIError, ServiceUnavailableError

        what = f'could not consume group "{group}" of topic "{node.name}"'
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait, MIN_FETCH_WAIT)
        pause = UNAVAILABLE_PAUSE
        while True:
            try:
                reader = await self._reader(node, plan, group)
                break
            except BackendError:
                # JetStream starting (503 at once) is worth another try within `wait`
                if self._closed or loop.time() + pause >= deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)
        async with reader.lock:
            if reader.surplus:
                taken = reader.surplus[:max_messages]
                del reader.surplus[:max_messages]
                return [self._delivered(node.name, group, msg) for msg in taken]
            while True:
                with self._errors(what):
                    try:
                        fetched = await reader.subscription.fetch(
                            max_messages, timeout=max(deadline - loop.time(), MIN_FETCH_WAIT)
                        )
                        break
                    except TimeoutError:  # nats-py's, or asyncio's: nothing came
                        fetched = []
                        break
                    except ServiceUnavailableError as error:
                        # nothing behind the consumer: a server starting or stopping, or
                        # a durable gone (memory storage after a restart); try again
                        # until `wait` is over rather than spin, then set up anew
                        if loop.time() + pause >= deadline:
                            await self._forget_reader(node.name, group, reader)
                            raise BackendError(
                                f"{what}: jetstream did not answer for the group's consumer "
                                "(a server starting or stopping?)"
                            ) from error
                    except APIError as error:
                        if error.code in (404, 409):  # the durable was deleted
                            await self._forget_reader(node.name, group, reader)
                        raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.25)
            if len(fetched) > max_messages:
                # nats-py's fetch also returns what reached the subscription after an
                # earlier fetch gave up waiting; hold no more than was asked for
                reader.surplus.extend(fetched[max_messages:])
                for msg in fetched[max_messages:]:
                    self._held[msg.reply] = msg  # given back by aclose
                fetched = fetched[:max_messages]
        if not fetched and not self._connected.is_set():
            raise BackendError(f"{what}: not connected to the nats server (reconnecting)")
        return [self._delivered(node.name, group, msg) for msg in fetched]

    async def _forget_reader(self, topic: str, group: str, reader: _Reader) -> None:
        """Drop a pull subscription whose durable may be gone: the next `consume`
        makes the durable again (when missing) and subscribes anew."""
        if self._readers.get((topic, group)) is reader:
            del self._readers[(topic, group)]
        with contextlib.suppress(Exception):
            await reader.subscription.unsubscribe()

    def _delivered(self, topic: str, group: str, msg: NatsMsg) -> Message:
        stream_sequence, delivery_count = _sequence_and_deliveries(msg)
        key: bytes | None = None
        headers: dict[str, str] = {}
        for name, value in (msg.headers or {}).items():
            if name == KEY_HEADER:
                with contextlib.suppress(binascii.Error, ValueError):
                    key = base64.b64decode(value, validate=True)
            elif not name.startswith(NATS_HEADER_PREFIX):
                headers[name] = value
        headers[SUBJECT_HEADER] = msg.subject
        self._held[msg.reply] = msg
        return Message(
            topic=topic,
            group=group,
            value=msg.data,
            key=key,
            headers=headers,
            partition=0,
            id=stream_sequence,
            delivery_count=delivery_count,
            receipt=msg,
        )

    def _receipts(self, messages: Sequence[Message]) -> list[NatsMsg]:
        from nats.aio.msg import Msg

        receipts: list[NatsMsg] = []
        for message in messages:
            receipt = message.receipt
            if not isinstance(receipt, Msg):
                raise BackendError(
                    f"message {message.id} of topic {message.topic!r} was not received "
                    "from a nats broker"
                )
            self._held.pop(receipt.reply, None)
            receipts.append(receipt)
        return receipts

    async def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge; returns once the server applied every acknowledgement
        (the last one is sent with `ack_sync`, see the module's docstring)."""
        self._check_open()
        if not messages:
            return
        import nats.errors

        receipts = self._receipts(messages)
        # the server applies one durable's acknowledgements in the order they come:
        # a confirmed last one per durable (topic and group) means all of its are
        last = {(m.topic, m.group): r for m, r in zip(messages, receipts, strict=True)}
        confirming = {id(receipt) for receipt in last.values()}
        with self._errors(f"could not acknowledge {len(receipts)} messages"):
            for receipt in receipts:
                if id(receipt) not in confirming:
                    with contextlib.suppress(nats.errors.MsgAlreadyAckdError):
                        await receipt.ack()
            await asyncio.gather(*(self._ack_confirmed(receipt) for receipt in last.values()))

    async def _ack_confirmed(self, receipt: NatsMsg) -> None:
        import nats.errors

        try:
            await receipt.ack_sync(timeout=self._timeout)
        except nats.errors.MsgAlreadyAckdError:
            await self._flush()

    async def nack(self, messages: Sequence[Message], *, delay: float = 0.0) -> None:
        """Negatively acknowledge: delivered again after `delay`, or after the
        block's `backoff` for the message's delivery count when `delay` is 0."""
        self._check_open()
        if not messages:
            return
        import nats.errors

        receipts = self._receipts(messages)
        with self._errors(f"could not give back {len(receipts)} messages"):
            for message, receipt in zip(messages, receipts, strict=True):
                with contextlib.suppress(nats.errors.MsgAlreadyAckdError):
                    await receipt.nak(delay=self._redelivery_delay(message, delay) or None)
            await self._flush()

    async def _flush(self) -> None:
        """Wait until the server has read everything sent so far (one PING/PONG)."""
        client = self._client
        if client is None:
            raise BackendClosedError(f"this {self.name} broker is closed")
        await client.flush(timeout=math.ceil(self._timeout))

    def _redelivery_delay(self, message: Message, delay: float) -> float:
        if delay > 0 or not self._backoff:
            return max(delay, 0.0)
        step = min(max(message.delivery_count, 1), len(self._backoff)) - 1
        return self._backoff[step]

    # --- backlog -----------------------------------------------------------------

    async def backlog(self, topic: str, group: str) -> BacklogReading:
        """`num_pending + num_ack_pending` of the group's durable; a group without a
        durable yet counts every message the stream keeps."""
        self._check_open()
        node, plan = self._topic_plan(topic)
        from nats.js.errors import NotFoundError

        js = await self._js()
        with self._errors(f'could not read the backlog of group "{group}" on topic "{node.name}"'):
            try:
                info = await js.consumer_info(plan.stream, durable_name(group))
                total = info.num_pending + info.num_ack_pending
            except NotFoundError as missing:
                if missing.err_code == STREAM_NOT_FOUND:
                    raise BackendError(
                        f'topic "{node.name}" has no stream "{plan.stream}" on the nats server; '
                        "ensure_topic creates it"
                    ) from None
                stream = await js.stream_info(plan.stream)
                total = stream.state.messages
        return BacklogReading(
            topic=node.name,
            group=group,
            total=total,
            per_partition={0: total},
            partitions=1,
            taken_at=datetime.now(UTC),
        )

    # --- closing -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Give back the messages received and not settled (delivered again at once),
        then close the connection. Idempotent; never raises for an earlier failure."""
        if self._closed:
            return
        self._closed = True
        client, self._client, self._jetstream = self._client, None, None
        held, self._held = list(self._held.values()), {}
        self._readers.clear()
        if client is None:
            return
        try:
            if held and client.is_connected:
                with contextlib.suppress(Exception):
                    for msg in held:
                        await msg.nak()
                    await client.flush(timeout=math.ceil(self._timeout))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), self._timeout)


@hookimpl
def tideflow_register_brokers(registry: BackendRegistry[Broker]) -> None:
    """Register the `nats` broker."""
    registry.register(NatsBroker)
