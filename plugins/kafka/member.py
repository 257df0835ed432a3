"""Group members: one consumer of one group on one topic, on a thread of its own.

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
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType, ModuleType
from typing import Any, Final, cast, final

from tideflow.plugins.api import BackendError, Message

from .client import GRACE, describe
from .config import ClientSettings
from .ledger import LEDGER_LEVELS, DeliveryLedger, ledger_group

__all__ = ["IDLE_AFTER", "POLL_SLICE", "PREFETCH", "REFILL_AT", "Assignment", "Member"]

_LOG: Final = logging.getLogger(__name__)

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

_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})


@final
class Assignment:
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

    def __init__(self, member: Member, partition: int, ledger: list[int]) -> None:
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
class Member:
    """One consumer of one group on one topic.

    Its thread owns the librdkafka consumer: it fetches records into a buffer of up
    to `PREFETCH` records, runs the rebalance callbacks, and commits what was
    acknowledged. `consume` takes from that buffer on the event loop, without a
    thread hop: it builds the messages, records their delivery, and sends the
    first ledger level. The delivery state (assignments, buffer, redeliveries) is
    shared under a lock; the event loop never calls the consumer itself."""

    def __init__(
        self,
        owner: object,
        kafka: ModuleType,
        settings: ClientSettings,
        ledger: DeliveryLedger,
        topic: str,
        group: str,
    ) -> None:
        """`owner`: the broker whose `ack` and `nack` take this member's messages."""
        self.owner = owner
        self.kafka = kafka
        self.settings = settings
        self.ledger = ledger
        self.topic = topic
        self.group = group
        self.lock = threading.Lock()
        self.assignments: dict[int, Assignment] = {}
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
                self.fatal = self.fatal or describe(exc)
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
        conf = {
            **self.settings.member_conf(self.group),
            "on_commit": self._on_commit,
            "error_cb": self._on_error,
        }
        # made now, so that it has found its group coordinator by the first delivery
        self.ledger_committer = self.kafka.Consumer(
            self.settings.committer_conf(ledger_group(self.group, 1))
        )
        consumer = self.kafka.Consumer(conf)
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
        ledgers = self.ledger.read(self.topic, self.group, numbers)
        with self.lock:
            for number in numbers:
                self.assignments[number] = Assignment(self, number, ledgers.get(number, []))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        offsets = self._drop({p.partition for p in partitions})
        if offsets and not self.closed:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except Exception as exc:  # the next owner redelivers from the last commit
                _LOG.warning(
                    "kafka group %r: committing revoked partitions failed: %s",
                    self.group,
                    describe(exc),
                )

    def _on_lost(self, _consumer: Any, partitions: list[Any]) -> None:
        self._drop({p.partition for p in partitions})

    def _drop(self, numbers: set[int]) -> list[Any]:
        """Forget partitions; returns the commits they still need."""
        topic_partition = self.kafka.TopicPartition
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
        topic_partition = self.kafka.TopicPartition
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
                write.result(self.settings.request_timeout + GRACE)
            except Exception as exc:  # the counts of those messages may come out low
                _LOG.warning(
                    "kafka group %r: recording deliveries failed: %s", self.group, describe(exc)
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
            _LOG.warning("kafka group %r: final commit failed: %s", self.group, describe(exc))
        topic_partition = self.kafka.TopicPartition
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
                "kafka group %r: recording deliveries failed: %s", self.group, describe(exc)
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
        kafka = self.kafka
        for level, ends in raised.items():
            if level > 1:
                self.ledger_writes.append(self.ledger.write(self.topic, self.group, level, ends))
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
                assignment = cast(Assignment, message.receipt)  # checked by the broker
                # when revoked since, the next owner delivers it again
                if current.get(assignment.partition) is assignment:
                    assignment.unacked.pop(int(message.id), None)

    def reject(self, messages: Sequence[Message], delay: float) -> None:
        with self.lock:
            if self.closed:
                return
            for message in messages:
                assignment = message.receipt
                assert isinstance(assignment, Assignment)
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
        assert isinstance(assignment, Assignment)
        assignment.queued.add(int(message.id))
        heapq.heappush(
            self.redeliveries,
            _Redelivery(time.monotonic() + delay, next(self._seq), message, count),
        )


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
