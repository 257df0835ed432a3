"""The `kafka` broker: Apache Kafka, and servers speaking its protocol, through
confluent-kafka (librdkafka).

Clients and threads
    One broker object holds, each made on first use: one idempotent producer, one
    admin client, and one member per (topic, group) it consumes from, a consumer
    of that group. confluent-kafka's synchronous clients are used from threads of
    their own, never blocking the event loop: the producer from one thread, each
    member's consumer from one thread, which fetches up to `PREFETCH` records
    ahead, runs the rebalance callbacks and commits. `consume` takes records from
    that buffer without a thread hop and builds the messages on the event loop.
    librdkafka blocks a consumer call made while another thread runs one of that
    consumer's callbacks, so the event loop never calls a member's consumer: `ack`
    and `nack` update state under a lock. Admin requests return futures, which are
    awaited. The threads are daemons, so that a cluster which stops answering
    cannot keep the process from exiting.

    confluent_kafka.aio (2.16) was measured and not used: `AIOProducer.produce`
    refuses message headers (NotImplementedError), which tideflow messages carry,
    and resolves one asyncio future per message; `AIOConsumer` wraps the same
    synchronous consumer in a thread pool and runs rebalance callbacks as
    coroutines on the event loop while a pool thread waits for them. Figures:
    bench/broker_bench_kafka.py --aio.

Publishing
    `publish` hands its batch to the producer's thread and returns once the
    cluster acknowledged every message: `enable.idempotence=true` (so `acks=all`,
    and no duplicates or reordering from the client's own retries), one delivery
    callback per batch counting the reports down. The thread takes every batch
    waiting, produces them, then flushes (which sends at once rather than after
    `linger.ms`, and serves the delivery reports), so concurrent publishes share
    round trips. A message not acknowledged within `request_timeout` (librdkafka's
    `message.timeout.ms`) makes `publish` raise `BackendError` naming the failure;
    some messages of that batch may have been written (at least once). After an
    error that leaves the producer failing every later message (a fatal one, or
    PRODUCER_FENCED, which Tansu 0.6 answers once messages timed out during an
    outage), the next `publish` starts a new producer. Keys are hashed with
    murmur2, as Java clients do, so that one key lands on one partition whichever
    client published it.

Consuming, acknowledging, committing
    Auto-commit is off. Per assigned partition a member keeps the offsets it
    delivered and that were not acknowledged. Acknowledgements commit, per
    partition, the first offset not yet acknowledged (or one past the last
    delivered when all were): the contiguous acknowledged prefix, never past a
    message still in flight. Commits are asynchronous and made by the member's
    thread within `POLL_SLICE`; a failed one is sent again. Revoked partitions and
    `aclose` commit synchronously.

Nack and redelivery
    Kafka has no per-message redelivery, so a nacked message is kept by the member
    and returned by a later `consume` (after `delay`), with `delivery_count + 1`,
    while the rest of its partition keeps flowing: a poison message does not stop
    its partition. Its offset stays uncommitted until it is acknowledged (the worker
    dead-letters it, then acknowledges it), so a crash, or a rebalance that moves
    the partition, delivers it again from the cluster.

Delivery counts
    Kafka does not count deliveries either. A member records how far it delivered
    each partition in "ledger" consumer groups, `<group>.tideflow-delivered-<k>`,
    which never have members: the committed offset of level k is one past the last
    offset delivered with `delivery_count == k`. A message at offset o is delivered
    with a count of 1 + the number of levels beyond o. Partitions are read in
    order from the committed offset, so a level beyond o means that o itself was
    delivered that often: the count is a lower bound, and a redelivery after a
    crash or a rebalance counts, so a message that kills its consumer every time
    is eventually dead-lettered. The first level is sent (an asynchronous commit)
    before a batch is handed out; a consumer killed within the millisecond or so
    before it lands counts that batch low, never high. Nacks are counted in memory
    only. Offset-commit metadata would be the usual place for this, but some
    Kafka-compatible servers drop it (Tansu 0.6 does). Up to `LEDGER_LEVELS`
    levels are kept; with ACLs the client needs access to these groups too.

Rebalancing
    `partition.assignment.strategy=cooperative-sticky`: a rebalance moves only the
    partitions that change hands. On revoke the member commits what is
    acknowledged and drops its state for those partitions (their in-flight and
    nacked messages go to the next owner, which redelivers them from the committed
    offset; later acks for them are ignored); lost partitions are dropped without a
    commit. Rebalance callbacks run only within `poll`, so a member keeps polling
    while its consumer is busy (it calls `keep_membership` instead of `consume`
    when all its in-flight slots are taken), with the fetch of its partitions
    paused while the prefetch buffer is full: a consumer that joins gets its
    partitions within seconds, not after `max.poll.interval.ms`. (The price: an
    instance whose handlers hang keeps its partitions until it is stopped.)

Backlog (as KEDA's Kafka scaler counts lag)
    Per partition: the log-end offset (high watermark) minus the group's committed
    offset. A partition with no committed offset follows `offset_reset` exactly as
    KEDA's `offsetResetPolicy` does (kedacore/keda, pkg/scalers/kafka_scaler.go,
    `getLagForPartition`, with its default `scaleToZeroOnInvalidOffset: false`):
    `latest` reports a lag of 1, so that one consumer runs to read new messages and
    commit; `earliest` reports the log-end offset, everything the group would read.
    `ensure_topic` commits the log-end offsets for a group that has none, so a group
    it creates counts, and receives, every message published afterwards.

Timeouts
    Every wait on the cluster is bounded by `request_timeout`: publish
    acknowledgements, admin requests, commits on revoke and on close (librdkafka's
    `socket.timeout.ms`). A broker that stops answering makes calls raise
    `BackendError` (`backlog` too, which `read_backlog` turns into a failure),
    never hang; `consume` returns what it has after `wait`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import heapq
import importlib
import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar, cast, final

from . import builtin_options
from .backends import (
    BackendClosedError,
    BackendConfigError,
    BackendContext,
    BackendError,
    BacklogReading,
    Broker,
    Message,
    OutgoingMessage,
)
from .hookspecs import hookimpl

if TYPE_CHECKING:
    from tideflow.compiler.ir import TopicNode

    from .registry import BackendRegistry

__all__ = ["LEDGER_LEVELS", "KafkaBroker", "ledger_group", "tideflow_register_brokers"]

T = TypeVar("T")

_LOG: Final = logging.getLogger(__name__)

#: Delivery counts are recorded up to this many deliveries (see "Delivery counts").
LEDGER_LEVELS: Final = 10
#: Longest a member's thread waits for records between its other duties (commits).
POLL_SLICE: Final = 0.05
#: Records a member fetches ahead of `consume`. It fetches again once `consume`
#: has taken the buffer down to `REFILL_AT`, not after every call: each round of
#: its loop also commits (a request to the cluster), and a refill started early
#: is done before the buffer runs dry (the thread may wait for the GIL while the
#: event loop is busy building messages). Above `REFILL_AT` it pauses its
#: partitions and keeps polling, which serves rebalances: the buffer never keeps
#: a partition from a member that joins (on revoke, its records are dropped).
PREFETCH: Final = 4000
REFILL_AT: Final = PREFETCH * 3 // 4
#: A member polls its consumer (fetching, serving rebalances) only while `consume`
#: is being called, or `keep_membership` (by a consumer whose in-flight slots are
#: all taken): until this long after the last call. Then it stops, as a plain
#: Kafka consumer whose application stops polling does, so that librdkafka's
#: `max.poll.interval.ms` still removes a stuck worker from its group.
IDLE_AFTER: Final = 1.0
#: Extra time given to librdkafka, beyond its own timeout, to report a failure.
GRACE: Final = 2.0

# librdkafka settings that the options set, and the option that sets each
_OPTION_KEYS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "bootstrap.servers": "bootstrap",
        "metadata.broker.list": "bootstrap",
        "client.id": "client_id",
        "security.protocol": "security_protocol",
        "sasl.mechanism": "sasl_mechanism",
        "sasl.mechanisms": "sasl_mechanism",
        "sasl.username": "sasl_username",
        "sasl.password": "sasl_password",
        "ssl.ca.location": "ssl_ca_location",
        "auto.offset.reset": "offset_reset",
        "session.timeout.ms": "session_timeout",
        "heartbeat.interval.ms": "heartbeat_interval",
        "message.timeout.ms": "request_timeout",
        "delivery.timeout.ms": "request_timeout",
    }
)
# librdkafka settings that would break the guarantees above
_FIXED_KEYS: Final = frozenset({"group.id", "enable.auto.commit", "enable.auto.offset.store"})
_CLIENT_PREFIXES: Final = ("producer.", "consumer.", "admin.")

_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})

# Delivery errors after which a producer fails every later message: its idempotence
# state is gone. Seen on Tansu 0.6: after messages time out, librdkafka bumps the
# producer epoch and the server answers PRODUCER_FENCED from then on. A new
# producer (a new producer id) starts over.
_PRODUCER_RESET_ERRORS: Final = frozenset(
    {"PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH", "_FENCED", "_FATAL"}
)


def ledger_group(group: str, level: int) -> str:
    """The consumer group whose committed offsets record how far `group` delivered
    each partition with a delivery count of `level` (see "Delivery counts")."""
    return f"{group}.tideflow-delivered-{level}"


def _client_library() -> tuple[ModuleType, ModuleType]:
    """`confluent_kafka` and `confluent_kafka.admin`, imported on first use: the
    compiler and `tideflow plugins` list this broker without them."""
    try:
        return (
            importlib.import_module("confluent_kafka"),
            importlib.import_module("confluent_kafka.admin"),
        )
    except ImportError:  # an optional dependency: `pip install tideflow[kafka]`
        raise BackendConfigError(
            'the "kafka" broker needs confluent-kafka; install it with '
            "`pip install 'tideflow[kafka]'`"
        ) from None


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _describe(exc: BaseException) -> str:
    """A KafkaException as its error's own words (`KafkaError{code=...}` otherwise)."""
    error: Any = exc.args[0] if exc.args else None
    if hasattr(error, "str") and hasattr(error, "name"):
        return f"{error.str()} ({error.name()})"
    return str(exc) or type(exc).__name__


def _error_name(exc: BaseException) -> str:
    error: Any = exc.args[0] if exc.args else None
    return str(error.name()) if hasattr(error, "name") else ""


async def _bounded(future: concurrent.futures.Future[T], timeout: float, what: str) -> T:
    """Await a thread's or librdkafka's future; `BackendError` after `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.wrap_future(future)
    except TimeoutError:
        raise BackendError(f"{what}: no answer from the cluster within {timeout:g}s") from None


# --- publishing --------------------------------------------------------------------


@final
class _Batch:
    """One `publish` call: its messages, counted down by their delivery reports (on
    the producer's thread), and the future its caller awaits."""

    __slots__ = (
        "deadline",
        "done",
        "failures",
        "first_error",
        "left",
        "loop",
        "messages",
        "publisher",
        "topic",
    )

    def __init__(
        self,
        publisher: _Publisher,
        topic: str,
        messages: Sequence[OutgoingMessage],
        deadline: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.publisher = publisher
        self.topic = topic
        self.messages = messages
        self.deadline = deadline
        self.left = len(messages)
        self.failures = 0
        self.first_error: str | None = None
        self.loop = loop
        self.done: asyncio.Future[None] = loop.create_future()

    def on_delivery(self, error: Any, _message: Any) -> None:
        if error is not None:
            self.failures += 1
            described = f"{error.str()} ({error.name()})"
            if self.first_error is None:
                self.first_error = described
            if error.fatal() or error.name() in _PRODUCER_RESET_ERRORS:
                self.publisher.broken = described
        self.left -= 1
        if self.left == 0:
            self._settle(None)

    def fail(self, error: BackendError) -> None:
        """Give up on the batch before every message was handed to librdkafka."""
        self._settle(error)

    def _settle(self, error: BackendError | None) -> None:
        def settle() -> None:
            if self.done.done():
                return
            if error is not None:
                self.done.set_exception(error)
            else:
                self.done.set_result(None)

        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            self.loop.call_soon_threadsafe(settle)


@final
class _Publisher:
    """The producer and the one thread that uses it. The thread takes every batch
    waiting, hands their messages to librdkafka, then flushes: a flush sends at once
    (it does not wait for `linger.ms`) and serves the delivery reports, on this
    thread only. Batches published concurrently share one flush."""

    def __init__(self, kafka: ModuleType, conf: dict[str, Any], name: str, timeout: float) -> None:
        #: why this producer must be replaced, once it must
        self.broken: str | None = None
        self.producer = kafka.Producer({**conf, "error_cb": self._on_error})
        self._timeout = timeout
        self._batches: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self.closed: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, name=f"{name}-producer", daemon=True)
        self._thread.start()

    def submit(self, batch: _Batch) -> None:
        self._batches.put(batch)

    def close(self) -> concurrent.futures.Future[int]:
        """Deliver what is queued, then stop; the future gives how many messages
        were still undelivered after the timeout (their `publish` raised)."""
        self._batches.put(None)
        return self.closed

    def _refuse_late_batches(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                late = self._batches.get_nowait()
                if late is not None:
                    late.fail(BackendError("the kafka producer was replaced; publish again"))

    def _on_error(self, error: Any) -> None:
        if error.fatal():
            self.broken = f"{error.str()} ({error.name()})"
        _LOG.debug("kafka producer: %s", error.str())

    def _run(self) -> None:
        closing = False
        while not closing:
            waiting = [self._batches.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    waiting.append(self._batches.get_nowait())
            for batch in waiting:
                if batch is None:
                    closing = True
                else:
                    self._produce(batch)
            if not closing:
                self.producer.flush(self._timeout + GRACE)
        try:
            left = int(self.producer.flush(self._timeout))
            if left:  # fail them now rather than at their deadline
                self.producer.purge()
                self.producer.flush(GRACE)
            self.producer.close()
        except BaseException as exc:
            self.closed.set_exception(exc)
        else:
            self.closed.set_result(left)
        finally:
            self._refuse_late_batches()

    def _produce(self, batch: _Batch) -> None:
        produce = self.producer.produce
        topic, on_delivery = batch.topic, batch.on_delivery
        for message in batch.messages:
            headers = list(message.headers.items()) if message.headers else None
            while True:
                try:
                    produce(
                        topic, message.value, message.key, headers=headers, on_delivery=on_delivery
                    )
                    break
                except BufferError:  # librdkafka's queue is full: deliver some first
                    if time.monotonic() >= batch.deadline:
                        batch.fail(
                            BackendError(
                                f"publishing to topic {topic!r}: the producer's queue stayed full"
                            )
                        )
                        return
                    self.producer.poll(0.01)
                except Exception as exc:
                    batch.fail(
                        BackendError(f"publishing to topic {topic!r} failed: {_describe(exc)}")
                    )
                    return


# --- consuming ---------------------------------------------------------------------


@final
class _Assignment:
    """A partition while it is assigned to a member: what the member delivered from
    it and that was not acknowledged. A partition assigned again gets a new object,
    so the receipts of an earlier assignment are recognised (and ignored)."""

    __slots__ = (
        "committed",
        "end",
        "fresh_from",
        "ledger",
        "member",
        "partition",
        "queued",
        "unacked",
    )

    def __init__(self, member: _Member, partition: int, ledger: list[int]) -> None:
        self.member = member
        self.partition = partition
        #: delivered and not acknowledged, offset -> delivery count, in offset order
        #: (records come in offset order and a redelivery keeps its entry)
        self.unacked: dict[int, int] = {}
        #: offsets nacked and waiting in the member's redelivery queue
        self.queued: set[int] = set()
        self.end = -1  # one past the highest offset delivered, once one was
        self.committed = -1  # the last offset committed (or being committed)
        #: ledger[k - 1]: one past the last offset delivered k times (-1: none)
        self.ledger = ledger
        #: offsets from here on were never delivered (beyond every ledger level)
        self.fresh_from = max(ledger, default=-1)

    def count_for(self, offset: int) -> int:
        """The delivery count of a message fetched from the cluster."""
        if offset >= self.fresh_from:
            return 1
        return 1 + sum(1 for end in self.ledger if offset < end)

    def commit_point(self) -> int:
        """The offset to commit: the first unacknowledged one, or one past the last
        delivered; -1 when nothing was delivered."""
        for first in self.unacked:
            return first
        return self.end

    def raise_ledger(self, count: int, end: int) -> bool:
        """Record that the offsets before `end` were delivered `count` times; whether
        that moved the ledger."""
        ledger = self.ledger
        if len(ledger) < count:
            ledger.extend([-1] * (count - len(ledger)))
        if end <= ledger[count - 1]:
            return False
        ledger[count - 1] = end
        self.fresh_from = max(self.fresh_from, end)
        return True


@final
@dataclasses.dataclass(frozen=True, slots=True, order=True)
class _Redelivery:
    """A nacked message waiting in a member's queue."""

    due: float
    seq: int
    message: Message = dataclasses.field(compare=False)
    count: int = dataclasses.field(compare=False)


@final
class _Member:
    """One consumer of one group on one topic.

    Its thread owns the librdkafka consumer: it fetches records into a buffer of up
    to `PREFETCH` records, runs the rebalance callbacks, and commits what was
    acknowledged. `consume` takes from that buffer on the event loop, without a
    thread hop: it builds the messages, records their delivery, and sends the
    first ledger level. The delivery state (assignments, buffer, redeliveries) is
    shared under a lock; the event loop never calls the consumer itself."""

    def __init__(self, broker: KafkaBroker, topic: str, group: str) -> None:
        self.broker = broker
        self.topic = topic
        self.group = group
        self.lock = threading.Lock()
        self.assignments: dict[int, _Assignment] = {}
        self.fetched: collections.deque[Any] = collections.deque()  # records not handed out
        self.redeliveries: list[_Redelivery] = []  # a heap by due time
        self.waiters: list[asyncio.Future[None]] = []  # `consume` calls waiting for records
        self._seq = itertools.count()
        self.closed = False
        self.fatal: str | None = None
        self.consumer: Any = None  # made on the member's thread
        #: writes the first ledger level (see `_write_ledger`); made with the consumer
        self.ledger_committer: Any = None
        self.ledger_sent: dict[int, int] = {}  # partition -> first level's end
        self.ledger_writes: list[concurrent.futures.Future[Any]] = []  # the other levels
        self._space = threading.Event()  # the buffer has room again, or `consume` came
        self._resting = False  # the thread waits on `_space` (no demand)
        self._paused = False  # fetching is paused: the buffer is full
        self.last_demand = time.monotonic()  # the last `consume` call
        self._stopping = threading.Event()
        self.stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, name=f"tideflow-kafka-{group}", daemon=True
        )
        self._thread.start()

    # --- the member's thread -----------------------------------------------------

    def _run(self) -> None:
        try:
            consumer = self._start()
            while not self._stopping.is_set():
                self.commit_acknowledged(asynchronous=True)
                self._settle_ledger()
                with self.lock:
                    room = PREFETCH - len(self.fetched)
                    wanted = self.waiters or time.monotonic() - self.last_demand < IDLE_AFTER
                    full = len(self.fetched) > REFILL_AT
                    self._resting = not wanted
                    if self._resting:
                        self._space.clear()
                if self._resting:
                    self._space.wait(POLL_SLICE)
                    continue
                if full or self._paused:
                    # paused each round: a rebalance may have assigned more partitions
                    self._pause(consumer, full)
                if full:
                    # serve the group (rebalances, revocations) without fetching more:
                    # a member that stopped polling would keep its partitions from
                    # members that join meanwhile
                    record = consumer.poll(POLL_SLICE)
                    if record is not None:  # fetched before the pause took effect
                        self._buffer([record])
                    continue
                first = consumer.poll(POLL_SLICE)
                if first is not None:
                    records = [first, *consumer.consume(room - 1, 0)] if room > 1 else [first]
                    self._buffer(records)
            self._finish()
        except BaseException as exc:
            with self.lock:
                self.fatal = self.fatal or _describe(exc)
                self.closed = True
                self._wake()
            for client in (self.consumer, self.ledger_committer):
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
            self.stopped.set_exception(exc)
        else:
            self.stopped.set_result(None)

    def _pause(self, consumer: Any, pause: bool) -> None:
        """Pause fetching the assigned partitions while the buffer is full, resume it
        at `REFILL_AT` (librdkafka resumes after the last record it returned)."""
        assigned = consumer.assignment()
        if assigned:
            if pause:
                consumer.pause(assigned)
            else:
                consumer.resume(assigned)
        self._paused = pause

    def _start(self) -> Any:
        broker = self.broker
        conf = {
            **broker.client_conf("consumer"),
            "group.id": self.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": broker.config["offset_reset"],
            "session.timeout.ms": _ms(float(broker.config["session_timeout"])),
            "heartbeat.interval.ms": _ms(float(broker.config["heartbeat_interval"])),
            "on_commit": self._on_commit,
            "error_cb": self._on_error,
        }
        conf.setdefault("partition.assignment.strategy", "cooperative-sticky")
        # made now, so that it has found its group coordinator by the first delivery
        self.ledger_committer = broker.kafka.Consumer(
            {
                **broker.client_conf("consumer"),
                "group.id": ledger_group(self.group, 1),
                "enable.auto.commit": False,
            }
        )
        consumer = broker.kafka.Consumer(conf)
        consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self.consumer = consumer
        return consumer

    def _buffer(self, records: list[Any]) -> None:
        # Filtered before taking the lock, which `consume` waits for: only this
        # thread changes `assignments` (in the rebalance callbacks, run by `poll`).
        assignments = self.assignments
        kept = []
        for record in records:
            error = record.error()
            if error is not None:
                if error.fatal():
                    self.fatal = f"{error.str()} ({error.name()})"
                else:
                    _LOG.debug("kafka consumer of group %r: %s", self.group, error.str())
            elif record.partition() in assignments:  # else revoked meanwhile
                kept.append(record)
        with self.lock:
            self.fetched.extend(kept)
            self._wake()

    def _wake(self) -> None:
        """Wake the waiting `consume` calls (with the lock held)."""
        for waiter in self.waiters:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                waiter.get_loop().call_soon_threadsafe(_resolve, waiter)
        self.waiters.clear()

    def _on_error(self, error: Any) -> None:
        if error.fatal():
            self.fatal = f"{error.str()} ({error.name()})"
        _LOG.debug("kafka consumer of group %r: %s", self.group, error.str())

    def _on_commit(self, error: Any, partitions: list[Any]) -> None:
        failed = {p.partition for p in partitions if error is not None or p.error is not None}
        if not failed:
            return
        with self.lock:  # commit those again
            for number in failed:
                assignment = self.assignments.get(number)
                if assignment is not None:
                    assignment.committed = -1

    def _on_assign(self, _consumer: Any, partitions: list[Any]) -> None:
        numbers = [p.partition for p in partitions]
        if not numbers:
            return
        ledgers = self.broker.read_ledgers(self.topic, self.group, numbers)
        with self.lock:
            for number in numbers:
                self.assignments[number] = _Assignment(self, number, ledgers.get(number, []))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        offsets = self._drop({p.partition for p in partitions})
        if offsets and not self.closed:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except Exception as exc:  # the next owner redelivers from the last commit
                _LOG.warning(
                    "kafka group %r: committing revoked partitions failed: %s",
                    self.group,
                    _describe(exc),
                )

    def _on_lost(self, _consumer: Any, partitions: list[Any]) -> None:
        self._drop({p.partition for p in partitions})

    def _drop(self, numbers: set[int]) -> list[Any]:
        """Forget partitions; returns the commits they still need."""
        topic_partition = self.broker.kafka.TopicPartition
        offsets = []
        with self.lock:
            for number in numbers:
                assignment = self.assignments.pop(number, None)
                self.ledger_sent.pop(number, None)
                if assignment is None:
                    continue
                point = assignment.commit_point()
                if point > assignment.committed:
                    offsets.append(topic_partition(self.topic, number, point))
            self.fetched = collections.deque(
                r for r in self.fetched if r.partition() not in numbers
            )
            kept = [r for r in self.redeliveries if r.message.partition in self.assignments]
            if len(kept) != len(self.redeliveries):
                heapq.heapify(kept)
                self.redeliveries = kept
        return offsets

    def commit_acknowledged(self, *, asynchronous: bool) -> None:
        """Commit the acknowledged prefix of every assigned partition that moved."""
        topic_partition = self.broker.kafka.TopicPartition
        with self.lock:
            offsets = []
            for assignment in self.assignments.values():
                point = assignment.commit_point()
                if point > assignment.committed:
                    offsets.append(topic_partition(self.topic, assignment.partition, point))
                    if asynchronous:
                        assignment.committed = point
        if not offsets:
            return
        self.consumer.commit(offsets=offsets, asynchronous=asynchronous)
        if not asynchronous:
            with self.lock:
                for tp in offsets:
                    current = self.assignments.get(tp.partition)
                    if current is not None:
                        current.committed = max(current.committed, tp.offset)

    def _settle_ledger(self) -> None:
        """Collect the admin ledger writes that completed (waits when closing)."""
        with self.lock:
            writes = self.ledger_writes
            pending = [w for w in writes if not w.done()] if not self.closed else []
            self.ledger_writes = pending
        for write in writes:
            if write in pending:
                continue
            try:
                write.result(self.broker.request_timeout + GRACE)
            except Exception as exc:  # the counts of those messages may come out low
                _LOG.warning(
                    "kafka group %r: recording deliveries failed: %s", self.group, _describe(exc)
                )

    def _finish(self) -> None:
        """Commit what is acknowledged, make the ledger durable, leave the group."""
        consumer, committer = self.consumer, self.ledger_committer
        with self.lock:
            self.closed = True
        self._settle_ledger()
        try:
            self.commit_acknowledged(asynchronous=False)
        except Exception as exc:  # redelivered from the last commit instead
            _LOG.warning("kafka group %r: final commit failed: %s", self.group, _describe(exc))
        topic_partition = self.broker.kafka.TopicPartition
        try:
            if self.ledger_sent:
                committer.commit(
                    offsets=[
                        topic_partition(self.topic, p, e) for p, e in self.ledger_sent.items()
                    ],
                    asynchronous=False,
                )
        except Exception as exc:
            _LOG.warning(
                "kafka group %r: recording deliveries failed: %s", self.group, _describe(exc)
            )
        finally:
            committer.close()
        with self.lock:
            self.assignments.clear()
            self.fetched.clear()
            self.redeliveries.clear()
        consumer.close()

    # --- the event loop's side ---------------------------------------------------

    def close(self) -> concurrent.futures.Future[None]:
        """Stop the member's thread, which commits, leaves the group and closes."""
        self._stopping.set()
        self._space.set()
        return self.stopped

    def hand_out(self, max_messages: int) -> list[Message]:
        """Up to `max_messages` messages: nacked ones come due, then fetched ones."""
        taken: list[Message] = []
        with self.lock:
            if self.fatal is not None:
                raise BackendError(f"kafka consumer of group {self.group!r}: {self.fatal}")
            if self.closed:
                return taken
            self.last_demand = time.monotonic()
            if self.redeliveries:
                self._due_redeliveries(taken, max_messages)
            if self.fetched and len(taken) < max_messages:
                self._deliver_fetched(taken, max_messages)
            if self._resting and len(self.fetched) <= REFILL_AT:
                self._space.set()
        return taken

    def keep_polling(self) -> None:
        """Count as demand: keep serving the group (see `KafkaBroker.keep_membership`)."""
        with self.lock:
            self.last_demand = time.monotonic()
            if self._resting:
                self._space.set()

    def partitions(self) -> list[int]:
        with self.lock:
            return sorted(self.assignments)

    def wait_for_records(
        self, loop: asyncio.AbstractEventLoop
    ) -> tuple[asyncio.Future[None] | None, float]:
        """A future resolved when records come (None when some are here already), and
        how long until the next nacked message comes due (inf: none)."""
        with self.lock:
            due = self.redeliveries[0].due - time.monotonic() if self.redeliveries else math.inf
            if self.fetched or due <= 0 or self.fatal is not None or self.closed:
                return None, due
            waiter = loop.create_future()
            self.waiters.append(waiter)
            return waiter, due

    def _due_redeliveries(self, taken: list[Message], limit: int) -> None:
        now = time.monotonic()
        heap = self.redeliveries
        while heap and len(taken) < limit and heap[0].due <= now:
            item = heapq.heappop(heap)
            message = item.message
            assignment = self.assignments.get(message.partition)
            offset = int(message.id)
            if assignment is None or assignment is not message.receipt:
                continue
            assignment.queued.discard(offset)
            if offset not in assignment.unacked:  # acknowledged meanwhile
                continue
            assignment.unacked[offset] = item.count
            taken.append(dataclasses.replace(message, delivery_count=item.count))

    def _deliver_fetched(self, taken: list[Message], limit: int) -> None:
        """Turn buffered records into messages, record their delivery, and send the
        ledger levels they raise (with the lock held)."""
        append = taken.append
        popleft = self.fetched.popleft
        topic, group, assignments = self.topic, self.group, self.assignments
        reached: dict[tuple[int, int], int] = {}  # (count, partition) -> new ledger end
        firsts: dict[int, int] = {}  # the same for a count of 1, the usual case
        partition, assignment = -1, None
        for _ in range(min(limit - len(taken), len(self.fetched))):
            record = popleft()
            if record.partition() != partition:  # records come in runs of one partition
                partition = record.partition()
                assignment = assignments.get(partition)
            offset = record.offset()
            if assignment is None or offset < assignment.end:
                continue  # revoked meanwhile, or delivered already
            if offset >= assignment.fresh_from:
                count = 1
                firsts[partition] = offset + 1
            else:
                count = assignment.count_for(offset)
                if count <= LEDGER_LEVELS:
                    reached[(count, partition)] = offset + 1
            assignment.unacked[offset] = count
            assignment.end = offset + 1
            raw_headers = record.headers()
            value = record.value()
            append(
                Message(
                    topic,
                    group,
                    value if value is not None else b"",
                    record.key(),
                    {k: (v or b"").decode("utf-8", "replace") for k, v in raw_headers}
                    if raw_headers
                    else _NO_HEADERS,
                    partition,
                    str(offset),
                    count,
                    assignment,
                )
            )
        reached.update(((1, p), end) for p, end in firsts.items())
        raised: dict[int, dict[int, int]] = {}  # level -> partition -> new end
        for (count, number), end in reached.items():
            if assignments[number].raise_ledger(count, end):
                raised.setdefault(count, {})[number] = end
        if raised:
            self._write_ledger(raised)

    def _write_ledger(self, raised: Mapping[int, Mapping[int, int]]) -> None:
        """Send new ledger ends before the messages are handed out (with the lock
        held). The first level, written with nearly every batch, goes as an
        asynchronous commit of a consumer of that ledger group, used only here and
        when closing (a quarter of an admin request's cost); the others, written
        only for redeliveries, as admin requests."""
        kafka = self.broker.kafka
        for level, ends in raised.items():
            if level > 1:
                self.ledger_writes.append(
                    self.broker.write_ledger(self.topic, self.group, level, ends)
                )
                continue
            self.ledger_sent.update(ends)
            committer = self.ledger_committer
            committer.commit(
                offsets=[kafka.TopicPartition(self.topic, p, end) for p, end in ends.items()],
                asynchronous=True,
            )
            # drains the commit reports, which otherwise pile up in its queue
            committer.poll(0)

    def acknowledge(self, messages: Sequence[Message]) -> None:
        """Mark messages acknowledged; the member's thread commits them within
        `POLL_SLICE`."""
        with self.lock:
            if self.closed:
                return
            current = self.assignments
            for message in messages:
                assignment = cast(_Assignment, message.receipt)  # checked by the broker
                # when revoked since, the next owner delivers it again
                if current.get(assignment.partition) is assignment:
                    assignment.unacked.pop(int(message.id), None)

    def reject(self, messages: Sequence[Message], delay: float) -> None:
        with self.lock:
            if self.closed:
                return
            for message in messages:
                assignment = message.receipt
                assert isinstance(assignment, _Assignment)
                offset = int(message.id)
                if (
                    self.assignments.get(assignment.partition) is not assignment
                    or offset not in assignment.unacked
                    or offset in assignment.queued
                ):
                    continue
                self._queue(message, delay, assignment.unacked[offset] + 1)
            self._wake()

    def _queue(self, message: Message, delay: float, count: int) -> None:
        assignment = message.receipt
        assert isinstance(assignment, _Assignment)
        assignment.queued.add(int(message.id))
        heapq.heappush(
            self.redeliveries,
            _Redelivery(time.monotonic() + delay, next(self._seq), message, count),
        )


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# --- the broker --------------------------------------------------------------------


@final
class KafkaBroker(Broker):
    """Apache Kafka (or a Kafka-compatible server) through confluent-kafka.

    Idempotent batched publishing with delivery confirmation, consumer groups with
    cooperative rebalancing and commits of the acknowledged prefix, in-memory
    redelivery of nacked messages, backlog per partition as KEDA reads it. See the
    module docstring for the guarantees.
    """

    name: ClassVar[str] = "kafka"
    partitioned: ClassVar[bool] = True
    options = builtin_options.KAFKA_BROKER

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: Sequence[TopicNode] = (),
        *,
        context: BackendContext | None = None,
    ) -> None:
        super().__init__(config, topics, context=context)
        self.request_timeout = float(self.config["request_timeout"])
        session = float(self.config["session_timeout"])
        heartbeat = float(self.config["heartbeat_interval"])
        for option, value in (
            ("request_timeout", self.request_timeout),
            ("heartbeat_interval", heartbeat),
        ):
            if value <= 0:
                raise BackendConfigError(
                    f'option `{option}` of broker "kafka" must be positive, not {value:g}'
                )
        if heartbeat >= session:
            raise BackendConfigError(
                f'option `heartbeat_interval` of broker "kafka" ({heartbeat:g}s) must be '
                f"shorter than `session_timeout` ({session:g}s)"
            )
        self._extra = self._split_config(self.config.get("config") or {})
        self.kafka, self.kafka_admin = _client_library()
        self._closed = False
        self._name = f"tideflow-kafka-{self.context.block or 'broker'}"
        self._publisher: _Publisher | None = None
        self._admin: Any = None
        self._members: dict[tuple[str, str], _Member] = {}
        self._lock = threading.Lock()  # guards the lazily made clients

    # --- configuration -------------------------------------------------------------

    @staticmethod
    def _split_config(config: Mapping[str, Any]) -> dict[str, dict[str, str]]:
        """The `config` option, per client ("" for every client)."""
        split: dict[str, dict[str, str]] = {"": {}, "producer": {}, "consumer": {}, "admin": {}}
        for key, value in config.items():
            client, name = "", str(key)
            for prefix in _CLIENT_PREFIXES:
                if name.startswith(prefix):
                    client, name = prefix[:-1], name[len(prefix) :]
                    break
            if name in _OPTION_KEYS:
                raise BackendConfigError(
                    f'`config` of broker "kafka" sets `{key}`; use the option '
                    f"`{_OPTION_KEYS[name]}` instead"
                )
            if name in _FIXED_KEYS:
                raise BackendConfigError(
                    f'`config` of broker "kafka" cannot set `{key}`: tideflow manages it'
                )
            split[client][name] = str(value)
        return split

    def client_conf(self, client: str) -> dict[str, Any]:
        """librdkafka settings of one client ("producer", "consumer" or "admin")."""
        config = self.config
        conf: dict[str, Any] = {
            "bootstrap.servers": config["bootstrap"],
            "client.id": config["client_id"],
            "security.protocol": config["security_protocol"],
            "socket.timeout.ms": _ms(self.request_timeout),
            "logger": _LOG,
        }
        if config.get("sasl_mechanism") is not None:
            conf["sasl.mechanism"] = config["sasl_mechanism"]
        if config.get("sasl_username") is not None:
            conf["sasl.username"] = config["sasl_username"]
        if config.get("sasl_password") is not None:
            conf["sasl.password"] = config["sasl_password"]
        if config.get("ssl_ca_location") is not None:
            location = Path(str(config["ssl_ca_location"])).expanduser()
            conf["ssl.ca.location"] = str(self.context.base_dir / location)
        conf.update(self._extra[""])
        conf.update(self._extra[client])
        return conf

    # --- clients -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackendClosedError(
                f'the kafka broker "{self.context.block or "kafka"}" is closed'
            )

    def _admin_client(self) -> Any:
        with self._lock:
            if self._admin is None:
                self._admin = self.kafka_admin.AdminClient(self.client_conf("admin"))
            return self._admin

    def _publisher_for_use(self) -> _Publisher:
        with self._lock:
            publisher = self._publisher
            if publisher is not None and publisher.broken is None:
                return publisher
            if publisher is not None:
                _LOG.warning("kafka producer failed (%s); making a new one", publisher.broken)
                publisher.close()
            conf = self.client_conf("producer")
            conf["message.timeout.ms"] = _ms(self.request_timeout)
            conf.setdefault("enable.idempotence", True)
            # as Java clients hash keys, so that one key lands on one partition
            conf.setdefault("partitioner", "murmur2_random")
            conf.setdefault("request.timeout.ms", min(_ms(self.request_timeout), 30000))
            self._publisher = _Publisher(self.kafka, conf, self._name, self.request_timeout)
            return self._publisher

    def _member(self, topic: str, group: str) -> _Member:
        with self._lock:
            member = self._members.get((topic, group))
            if member is None:
                member = self._members[(topic, group)] = _Member(self, topic, group)
            return member

    # --- the Broker interface ------------------------------------------------------

    async def ensure_topic(self, topic: str, groups: Sequence[str] = ()) -> None:
        node = self.topic(topic)
        self._check_open()
        api = self.kafka_admin
        admin = self._admin_client()
        timeout = self.request_timeout
        settings = {}
        if node.retention is not None:
            settings["retention.ms"] = str(_ms(node.retention))
        new = api.NewTopic(
            topic, num_partitions=node.partitions, replication_factor=-1, config=settings
        )
        created = admin.create_topics([new], request_timeout=timeout, operation_timeout=timeout)
        try:
            await _bounded(created[topic], timeout + GRACE, f"creating topic {topic!r}")
        except self.kafka.KafkaException as exc:
            if _error_name(exc) != "TOPIC_ALREADY_EXISTS":
                raise BackendError(f"creating topic {topic!r} failed: {_describe(exc)}") from None
            existing = await self._partition_count(topic)
            if existing < node.partitions:
                grown = admin.create_partitions(
                    [api.NewPartitions(topic, node.partitions)], request_timeout=timeout
                )
                try:
                    await _bounded(grown[topic], timeout + GRACE, f"growing topic {topic!r}")
                except self.kafka.KafkaException as grow_exc:
                    raise BackendError(
                        f"topic {topic!r} has {existing} partitions and could not grow to "
                        f"{node.partitions}: {_describe(grow_exc)}"
                    ) from None
        partitions = await self._partition_count(topic)
        for group in dict.fromkeys(groups):
            await self._start_group_at_end(topic, group, partitions)

    async def _start_group_at_end(self, topic: str, group: str, partitions: int) -> None:
        """Commit the log-end offset of every partition the group has no offset for."""
        committed = await self._committed(topic, group, partitions)
        missing = [p for p, offset in committed.items() if offset < 0]
        if not missing:
            return
        ends = await self._log_ends(topic, missing)
        kafka = self.kafka
        request = kafka.ConsumerGroupTopicPartitions(
            group, [kafka.TopicPartition(topic, p, ends[p]) for p in missing]
        )
        admin = self._admin_client()
        altered = admin.alter_consumer_group_offsets(
            [request], request_timeout=self.request_timeout
        )
        try:
            await _bounded(
                altered[group], self.request_timeout + GRACE, f"starting group {group!r}"
            )
        except kafka.KafkaException as exc:
            # a group with members cannot be moved by others: its members' own
            # offset_reset decides where it starts
            if _error_name(exc) not in {
                "UNKNOWN_MEMBER_ID",
                "REBALANCE_IN_PROGRESS",
                "ILLEGAL_GENERATION",
                "GROUP_SUBSCRIBED_TO_TOPIC",
            }:
                raise BackendError(
                    f"starting group {group!r} on topic {topic!r} failed: {_describe(exc)}"
                ) from None

    async def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> None:
        self.topic(topic)
        self._check_open()
        if not messages:
            return
        if not all(
            isinstance(m.value, bytes) and (m.key is None or isinstance(m.key, bytes))
            for m in messages
        ):
            raise TypeError("a message's value and key must be bytes")
        publisher = self._publisher_for_use()
        timeout = self.request_timeout
        batch = _Batch(
            publisher, topic, messages, time.monotonic() + timeout, asyncio.get_running_loop()
        )
        publisher.submit(batch)
        try:
            # librdkafka reports every message by its message.timeout.ms (`timeout`)
            async with asyncio.timeout(timeout + 2 * GRACE):
                await batch.done
        except TimeoutError:
            raise BackendError(
                f"publishing to topic {topic!r}: {batch.left} of {len(messages)} messages "
                f"unacknowledged after {timeout + 2 * GRACE:g}s"
            ) from None
        if batch.failures:
            raise BackendError(
                f"publishing to topic {topic!r}: {batch.failures} of {len(messages)} messages "
                f"were not acknowledged: {batch.first_error}"
            )

    async def consume(
        self, topic: str, group: str, *, max_messages: int = 100, wait: float = 1.0
    ) -> list[Message]:
        self.topic(topic)
        self._check_open()
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, not {max_messages}")
        member = self._member(topic, group)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait, 0.0)
        while True:
            taken = member.hand_out(max_messages)
            remaining = deadline - loop.time()
            if taken or remaining <= 0:
                return taken
            waiter, due = member.wait_for_records(loop)
            if waiter is None:
                if member.closed or member.fatal is not None:
                    return member.hand_out(max_messages)  # raises for a failure
                continue  # records or a nacked message came meanwhile
            try:
                async with asyncio.timeout(min(remaining, due)):
                    await waiter
            except TimeoutError:
                pass

    async def keep_membership(self, topic: str, group: str) -> None:
        """Keep the member's thread polling (rebalance callbacks are served only
        within `poll`) while the consumer, busy with what it holds, does not call
        `consume`."""
        self.topic(topic)
        self._check_open()
        self._member(topic, group).keep_polling()

    def assigned_partitions(self, topic: str, group: str) -> list[int]:
        """The partitions of `topic` assigned to this consumer of `group` now."""
        with self._lock:
            member = self._members.get((topic, group))
        return [] if member is None else member.partitions()

    def _members_of(self, messages: Sequence[Message]) -> dict[_Member, list[Message]]:
        """Messages by the member that delivered them; `BackendError` for a message
        this broker did not deliver."""
        by_member: dict[_Member, list[Message]] = {}
        member: _Member | None = None
        mine: list[Message] = []
        for message in messages:
            receipt = message.receipt
            if type(receipt) is not _Assignment or receipt.member.broker is not self:
                raise BackendError(
                    f"message {message.id} of topic {message.topic!r} (partition "
                    f"{message.partition}) was not received from this kafka broker"
                )
            if receipt.member is not member:
                member = receipt.member
                mine = by_member.setdefault(member, [])
            mine.append(message)
        return by_member

    async def ack(self, messages: Sequence[Message]) -> None:
        self._check_open()
        for member, mine in self._members_of(messages).items():
            member.acknowledge(mine)

    async def nack(self, messages: Sequence[Message], *, delay: float = 0.0) -> None:
        if delay < 0:
            raise ValueError(f"a nack delay cannot be negative, not {delay:g}")
        self._check_open()
        for member, mine in self._members_of(messages).items():
            member.reject(mine, delay)

    async def backlog(self, topic: str, group: str) -> BacklogReading:
        self.topic(topic)
        self._check_open()
        partitions = await self._partition_count(topic)
        ends, committed = await asyncio.gather(
            self._log_ends(topic, range(partitions)), self._committed(topic, group, partitions)
        )
        earliest = self.config["offset_reset"] == "earliest"
        per_partition: dict[int, int] = {}
        for partition in range(partitions):
            offset = committed[partition]
            # no committed offset: KEDA's offsetResetPolicy (see the module docstring)
            without_offset = ends[partition] if earliest else 1
            lag = ends[partition] - offset if offset >= 0 else without_offset
            per_partition[partition] = max(lag, 0)
        return BacklogReading(
            topic=topic,
            group=group,
            total=sum(per_partition.values()),
            per_partition=per_partition,
            partitions=partitions,
            taken_at=datetime.now(UTC),
        )

    async def aclose(self) -> None:
        """Commit what was acknowledged, leave the groups, deliver what is being
        published; idempotent, and bounded by `request_timeout` per client."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            members = list(self._members.values())
            publisher = self._publisher
            self._members.clear()
            self._publisher = None
        timeout = self.request_timeout + GRACE
        closing: list[tuple[str, concurrent.futures.Future[Any]]] = [
            (f"leaving group {m.group!r}", m.close()) for m in members
        ]
        if publisher is not None:
            closing.append(("flushing the producer", publisher.close()))
        outcomes = await asyncio.gather(
            *(_bounded(future, timeout + GRACE, what) for what, future in closing),
            return_exceptions=True,
        )
        for (what, _), outcome in zip(closing, outcomes, strict=True):
            if isinstance(outcome, BaseException):  # closing releases whatever failed before
                _LOG.warning("closing kafka broker: %s: %s", what, _describe(outcome))
            elif isinstance(outcome, int) and outcome:
                _LOG.warning("closing kafka broker: %d messages left undelivered", outcome)

    # --- cluster reads (admin client) ------------------------------------------------

    async def _partition_count(self, topic: str) -> int:
        kafka = self.kafka
        described = self._admin_client().describe_topics(
            kafka.TopicCollection([topic]), request_timeout=self.request_timeout
        )
        try:
            description = await _bounded(
                described[topic], self.request_timeout + GRACE, f"describing topic {topic!r}"
            )
        except kafka.KafkaException as exc:
            raise BackendError(f"describing topic {topic!r} failed: {_describe(exc)}") from None
        return len(description.partitions)

    async def _log_ends(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        kafka = self.kafka
        latest = self.kafka_admin.OffsetSpec.latest()
        wanted = {kafka.TopicPartition(topic, p): latest for p in partitions}
        if not wanted:
            return {}
        listed = self._admin_client().list_offsets(wanted, request_timeout=self.request_timeout)
        try:
            results = await asyncio.gather(
                *(
                    _bounded(f, self.request_timeout + GRACE, f"reading offsets of {topic!r}")
                    for f in listed.values()
                )
            )
        except kafka.KafkaException as exc:
            raise BackendError(
                f"reading the log-end offsets of topic {topic!r} failed: {_describe(exc)}"
            ) from None
        return {tp.partition: int(r.offset) for tp, r in zip(listed, results, strict=True)}

    async def _committed(self, topic: str, group: str, partitions: int) -> dict[int, int]:
        """The group's committed offset per partition; -1 where it has none."""
        kafka = self.kafka
        request = kafka.ConsumerGroupTopicPartitions(
            group, [kafka.TopicPartition(topic, p) for p in range(partitions)]
        )
        listed = self._admin_client().list_consumer_group_offsets(
            [request], request_timeout=self.request_timeout
        )
        try:
            result = await _bounded(
                listed[group], self.request_timeout + GRACE, f"reading offsets of group {group!r}"
            )
        except kafka.KafkaException as exc:
            raise BackendError(
                f"reading the committed offsets of group {group!r} failed: {_describe(exc)}"
            ) from None
        committed = dict.fromkeys(range(partitions), -1)
        for tp in result.topic_partitions:
            if tp.error is not None:
                raise BackendError(
                    f"reading the committed offsets of group {group!r} failed: "
                    f"{tp.error.str()} ({tp.error.name()})"
                )
            committed[tp.partition] = max(int(tp.offset), -1)
        return committed

    # --- the delivery ledger (called from members' threads) --------------------------

    def read_ledgers(self, topic: str, group: str, partitions: list[int]) -> dict[int, list[int]]:
        """Per partition, the ledger ends of every level (see "Delivery counts");
        empty lists when they cannot be read (delivery counts start at 1 then)."""
        kafka = self.kafka
        admin = self._admin_client()
        requests = [
            admin.list_consumer_group_offsets(
                [
                    kafka.ConsumerGroupTopicPartitions(
                        ledger_group(group, level),
                        [kafka.TopicPartition(topic, p) for p in partitions],
                    )
                ],
                request_timeout=self.request_timeout,
            )[ledger_group(group, level)]
            for level in range(1, LEDGER_LEVELS + 1)
        ]
        ledgers: dict[int, list[int]] = {p: [] for p in partitions}
        try:
            for future in requests:
                ends = {
                    tp.partition: int(tp.offset)
                    for tp in future.result(self.request_timeout + GRACE).topic_partitions
                    if tp.error is None
                }
                for partition in partitions:
                    ledgers[partition].append(max(ends.get(partition, -1), -1))
        except Exception as exc:
            _LOG.warning(
                "kafka group %r: delivery counts unknown (reading them failed: %s)",
                group,
                _describe(exc),
            )
            return {p: [] for p in partitions}
        for ledger in ledgers.values():
            while ledger and ledger[-1] < 0:
                ledger.pop()
        return ledgers

    def write_ledger(
        self, topic: str, group: str, level: int, ends: Mapping[int, int]
    ) -> concurrent.futures.Future[Any]:
        """Send new ends of one ledger level as an admin request."""
        kafka = self.kafka
        name = ledger_group(group, level)
        request = kafka.ConsumerGroupTopicPartitions(
            name, [kafka.TopicPartition(topic, p, end) for p, end in ends.items()]
        )
        altered = self._admin_client().alter_consumer_group_offsets(
            [request], request_timeout=self.request_timeout
        )
        future: concurrent.futures.Future[Any] = altered[name]
        return future


@hookimpl
def tideflow_register_brokers(registry: BackendRegistry[Broker]) -> None:
    """Register the `kafka` broker."""
    registry.register(KafkaBroker)
