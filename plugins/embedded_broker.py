"""The `embedded` broker: durable topics and consumer groups in one SQLite file.

It needs no server: every process that opens the same file (the orchestrator, the
jobs that publish, each consumer instance) shares the same topics, and SQLite's
single writer lock (every change is one `BEGIN IMMEDIATE` transaction) keeps them
consistent.

Storage
    A topic has `partitions` partitions (from its `topic` block; a topic can grow,
    never shrink). Each partition is an append-only log of offsets 0, 1, 2, ...:
    `messages` holds the messages still kept, `partitions` the oldest kept offset
    (`log_start`) and the next one to assign (`log_end`).

Partitioning
    A message with a key goes to partition `zlib.crc32(key) % partitions`, which is
    stable across processes, machines and Python versions, so one key keeps its
    order. A message without a key goes round-robin, one message at a time, from a
    counter each broker object starts at random (several publishers spread evenly;
    no shared counter has to be written).

Consumer groups
    Per (group, partition) the file keeps `fetched`, the first offset never
    delivered, and one `inflight` row per delivered offset not yet acknowledged
    (who holds it, until when, how often it was delivered). Acknowledging deletes
    the row, so the committed offset, before which everything is acknowledged, is
    the lowest in-flight offset, or `fetched` when nothing is in flight.

    Like Kafka, a partition is owned by one consumer of the group at a time. Every
    broker object that consumes is a member of the group, with a heartbeat that
    lapses after `visibility_timeout` and that `consume` renews once half of it has
    passed (a consumer waiting in `consume` renews it by itself). Members in order of
    joining share the partitions: with P partitions and n live members the first
    P % n take P // n + 1 and the others P // n (consumers beyond P idle, which is
    why the autoscaler caps instances at the partition count). A member above its
    share gives partitions up; one below takes free ones. A new owner delivers
    nothing from a partition while messages of it are still leased, unexpired, by
    another member, so a partition is never processed by two consumers at once.

Delivery and ordering
    `consume` claims, in one transaction, up to `max_messages` messages of the
    partitions this consumer owns: first those due again (nacked, released by a
    consumer that closed, or whose lease ran out), then new ones, each partition in
    offset order, and leases them for `visibility_timeout`. So two consumers never
    hold the same message at once, and messages of one partition are delivered, and
    processed, in publish order. The exceptions are the ones at-least-once brings: a
    redelivered message comes after newer messages that were delivered while it was
    away, and a message nacked with a `delay` does not hold back its partition.

    Unacknowledged messages come back after `visibility_timeout` (the member that
    held them is gone or too slow), at once when their consumer calls `aclose`, or
    after the `delay` given to `nack`. `delivery_count` grows with each delivery. An
    acknowledgement that arrives after the lease ran out still counts (the message
    was handled); a `nack` from a consumer whose lease ran out is ignored.

Backlog
    Per partition: messages not yet delivered (`log_end - fetched`) plus messages in
    flight (delivered, not acknowledged); that is `log_end - committed offset`
    whenever acknowledgements come in order. A group made by `ensure_topic` starts
    at the end of the log: it counts, and gets, only messages published afterwards.
    A group that first appears in `consume` starts at the oldest message kept.

Retention
    A message every group of its topic has acknowledged is deleted; a topic with no
    group keeps its messages. A topic with `retention` also loses messages older
    than that, acknowledged or not (as Kafka's `retention.ms`; the linter's W405
    relies on it); groups then move on to the oldest message kept. Clean-up runs
    after publishing or acknowledging, at most once a second per broker object, and
    on `compact()`. Freed pages are reused, and the write-ahead log is truncated
    after checkpoints, so a file whose messages are consumed stops growing.

Durability
    Every call that changes something (`publish`, `ack`, `nack`, a claim in
    `consume`) returns after its transaction committed. The file is in WAL mode with
    `synchronous=NORMAL`: at COMMIT the transaction has been written into the
    write-ahead log through the operating system (`write()`, no fsync), and the OS
    keeps that data when the process dies, so a process killed at any point,
    `kill -9` included, loses nothing that was committed; a half-written
    transaction is rolled back when the file is next opened. What NORMAL gives up
    is power loss and kernel crashes: the log is fsynced only at checkpoints, so
    those can lose the transactions committed since the last one (the file stays
    consistent). `synchronous=FULL` would close that gap with an fsync per commit,
    which on ordinary disks costs far more than the transaction itself (on this
    project's test machine's virtual disk, a small commit took 9 times as long).
    The requirement is surviving killed processes, which NORMAL meets.

Threads, waiting, processes
    Each broker object owns one connection, used by one thread at a time. A call
    runs its transaction on the event loop's thread when the connection is free and
    SQLite's write lock can be taken at once: a transaction is short (a claim of 100
    messages takes about 0.3 ms), and handing it to another thread costs more than
    the transaction itself (a thread hand-off and back took 0.2 to 0.3 ms on this
    project's test machines). A transaction that would have to wait (another process
    holds the write lock, or this object's thread is busy) runs on the object's own
    thread instead, which waits for the lock for up to `BUSY_TIMEOUT` seconds; so
    does the once-a-second housekeeping: clean-up and the write-ahead log's
    checkpoint, whose fsync must not stall the event loop (the connection does not
    checkpoint by itself on commit). `consume(wait=...)` polls `PRAGMA
    data_version` (it changes when another connection commits), sleeping 1 ms at
    first and doubling up to 50 ms, and claims again only when something changed or
    a lease or nack delay it knows of ends; measured: a message published to an
    idle consumer arrives after 27 ms (median, 48 ms at p90), and an idle consumer
    costs under 1% of a core. A `consume` cancelled while its claim runs on the
    thread gives the claimed messages back. A lock not had within `BUSY_TIMEOUT` is a
    `BackendError`. A broker object belongs to the
    process that made it: in a forked child it refuses to work (construct one per
    process).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import operator
import os
import random
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
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

__all__ = ["EmbeddedBroker", "tideflow_register_brokers"]

T = TypeVar("T")

#: Layout of the file, kept in `PRAGMA user_version`.
FILE_FORMAT: Final = 1
#: How long a transaction waits for SQLite's write lock before it fails.
BUSY_TIMEOUT: Final = 10.0
#: Between tries for the lock: the first and longest sleep.
BUSY_SLEEP_FIRST: Final = 0.001
BUSY_SLEEP_MAX: Final = 0.05
#: `consume(wait=...)`: first and longest sleep between checks for news.
POLL_FIRST: Final = 0.001
POLL_MAX: Final = 0.05
#: Longest a waiting consumer goes without claiming again, whatever it expects.
RECLAIM_MAX: Final = 1.0
#: Clean-up and checkpoints run at most this often per broker object.
CLEANUP_INTERVAL: Final = 1.0
#: Size the write-ahead log is truncated to after a checkpoint.
WAL_SIZE_LIMIT: Final = 64 * 1024 * 1024

SCHEMA: Final = (
    """CREATE TABLE topics (
        topic      TEXT PRIMARY KEY,
        partitions INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE partitions (
        topic     TEXT NOT NULL,
        part      INTEGER NOT NULL,
        log_start INTEGER NOT NULL,
        log_end   INTEGER NOT NULL,
        PRIMARY KEY (topic, part)
    ) WITHOUT ROWID""",
    """CREATE TABLE messages (
        topic        TEXT NOT NULL,
        part         INTEGER NOT NULL,
        seq          INTEGER NOT NULL,
        msg_key      BLOB,
        msg_value    BLOB NOT NULL,
        headers      TEXT,
        published_at REAL NOT NULL,
        PRIMARY KEY (topic, part, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE cursors (
        topic   TEXT NOT NULL,
        grp     TEXT NOT NULL,
        part    INTEGER NOT NULL,
        fetched INTEGER NOT NULL,
        owner   TEXT,
        PRIMARY KEY (topic, grp, part)
    ) WITHOUT ROWID""",
    """CREATE TABLE inflight (
        topic          TEXT NOT NULL,
        grp            TEXT NOT NULL,
        part           INTEGER NOT NULL,
        seq            INTEGER NOT NULL,
        delivery_count INTEGER NOT NULL,
        holder         TEXT,
        visible_at     REAL NOT NULL,
        PRIMARY KEY (topic, grp, part, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE members (
        topic   TEXT NOT NULL,
        grp     TEXT NOT NULL,
        member  TEXT NOT NULL,
        joined  INTEGER NOT NULL,
        expires REAL NOT NULL,
        PRIMARY KEY (topic, grp, member)
    ) WITHOUT ROWID""",
    "CREATE INDEX inflight_by_holder ON inflight (holder) WHERE holder IS NOT NULL",
    "CREATE INDEX cursors_by_owner ON cursors (owner) WHERE owner IS NOT NULL",
)


# shared by every message without headers: an immutable empty mapping
_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})
_ID: Final = operator.attrgetter("id")
_RECEIPT: Final = operator.attrgetter("receipt")


@final
@dataclass(frozen=True, slots=True, eq=False)
class _Receipt:
    """What `Message.receipt` holds: the file and the partition the message came
    from. One is shared by the messages of one partition in one claim, so `ack`
    groups messages by receipt, hashed by identity, without reading their fields."""

    path: str
    topic: str
    group: str
    partition: int


@dataclass(frozen=True, slots=True)
class _Claim:
    """What one claim transaction found."""

    messages: list[Message]
    next_due: float  # clock time by which claiming again may find something new
    # `PRAGMA data_version` as of the claim (other connections' commits change it);
    # read only when no message was claimed, as only a waiting `consume` needs it
    data_version: int
    own_changes: int  # the broker object's own changes so far (its publishes, nacks, ...)


class _Busy(Exception):
    """SQLite's write lock was not free (a transaction that must not wait)."""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    # the primary result code: SQLITE_BUSY_SNAPSHOT and the like count too
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _retry_busy(action: Callable[[], T]) -> T:
    """`action`, tried again while SQLite answers busy, for up to `BUSY_TIMEOUT`."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    sleep = BUSY_SLEEP_FIRST
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(sleep)
        sleep = min(sleep * 2, BUSY_SLEEP_MAX)


@final
class EmbeddedBroker(Broker):
    """Durable broker on SQLite; needs no server.

    Partitioned topics, consumer groups with committed offsets and per-partition
    ownership, redelivery after `visibility_timeout`, nack with a delay. Several
    processes may share one file. See the module docstring for the guarantees.
    """

    name: ClassVar[str] = "embedded"
    partitioned: ClassVar[bool] = True
    options = builtin_options.EMBEDDED_BROKER

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: Sequence[TopicNode] = (),
        *,
        context: BackendContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock` gives the wall-clock time stored in the file (leases, heartbeats,
        publish times); every process sharing a file must agree on it."""
        super().__init__(config, topics, context=context)
        path = Path(str(self.config["path"])).expanduser()
        self.path = path if path.is_absolute() else self.context.base_dir / path
        self.visibility_timeout = float(self.config["visibility_timeout"])
        if self.visibility_timeout <= 0:
            raise BackendConfigError(
                f'option `visibility_timeout` of broker "embedded" must be positive, '
                f"not {self.visibility_timeout:g}"
            )
        #: This object's identity as a member of the consumer groups it reads.
        self.member_id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._clock = clock
        self._path_text = str(self.path)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"tideflow-embedded-{self.context.block or 'broker'}"
        )
        self._closed = False
        self._used = False
        self._pid = os.getpid()
        # where keyless messages go next; random so that publishers spread evenly
        self._round_robin = random.randrange(1 << 30)
        self._next_housekeeping = 0.0  # monotonic time
        # used only by the thread holding `_lock` (the event loop's or the executor's):
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._rotation = 0
        self._own_changes = 0
        self._changes_housekept = 0  # the connection's total_changes at the last housekeeping

    # --- the Broker interface ------------------------------------------------------

    async def ensure_topic(self, topic: str, groups: Sequence[str] = ()) -> None:
        node = self.topic(topic)
        group_names = tuple(dict.fromkeys(groups))

        def work(conn: sqlite3.Connection) -> None:
            partitions = self._topic_partitions(conn, node)
            for group in group_names:
                self._ensure_cursors(conn, topic, group, partitions, start="end")

        await self._call(work, changes=True)

    async def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> None:
        node = self.topic(topic)
        if not messages:
            return
        if not all(
            isinstance(m.value, bytes) and (m.key is None or isinstance(m.key, bytes))
            for m in messages
        ):
            raise TypeError("a message's value and key must be bytes")
        # The file's partition count equals the record's once the transaction has
        # checked it (`_topic_partitions`), so messages can be routed here.
        partitions = node.partitions
        by_partition: dict[int, list[OutgoingMessage]]
        if partitions == 1:
            by_partition = {0: list(messages)}
        else:
            by_partition = {}
            for message in messages:
                if message.key is None:
                    part = self._round_robin % partitions
                    self._round_robin += 1
                else:
                    part = zlib.crc32(message.key) % partitions
                by_partition.setdefault(part, []).append(message)

        def work(conn: sqlite3.Connection) -> None:
            self._topic_partitions(conn, node)
            self._insert_messages(conn, topic, by_partition)

        await self._call(work, changes=True)

    async def consume(
        self, topic: str, group: str, *, max_messages: int = 100, wait: float = 1.0
    ) -> list[Message]:
        node = self.topic(topic)
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, not {max_messages}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait, 0.0)
        # Kept across fruitless claims: commits elsewhere (other groups, other
        # topics) must not make an idle consumer claim every millisecond.
        sleep = POLL_FIRST
        while True:
            claim = await self._claim_messages(node, group, max_messages)
            if claim.messages or loop.time() >= deadline:
                return claim.messages
            # Nothing for us: wait for another commit, for a lease or delay we know
            # of to end, or for the deadline, polling with backoff.
            while True:
                remaining = deadline - loop.time()
                due = claim.next_due - self._clock()
                if remaining <= 0 or due <= 0:
                    break
                await asyncio.sleep(min(sleep, remaining, due))
                sleep = min(sleep * 2, POLL_MAX)
                # data_version ignores this connection's own commits, hence the count
                if (
                    self._own_changes != claim.own_changes
                    or await self._data_version() != claim.data_version
                ):
                    break

    async def keep_membership(self, topic: str, group: str) -> None:
        """Renew this consumer's membership of the group and give up (or take)
        partitions so that it owns its share, claiming nothing: a consumer whose
        handlers are all busy does not call `consume`, and would otherwise keep
        every partition it owns from members that joined meanwhile."""
        node = self.topic(topic)

        def work(conn: sqlite3.Connection) -> None:
            partitions = self._topic_partitions(conn, node)
            cursors = self._ensure_cursors(conn, topic, group, partitions, start="oldest")
            live, _, _ = self._join(conn, topic, group, self._clock())
            self._rebalance(conn, topic, group, cursors, live, partitions)

        await self._call(work)

    async def assigned_partitions(self, topic: str, group: str) -> list[int]:
        """The partitions of `topic` this consumer owns in `group` now (a consumer
        instance reports them with its heartbeats)."""
        node = self.topic(topic)
        me = self.member_id

        def work(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(
                "SELECT part FROM cursors WHERE topic = ? AND grp = ? AND owner = ? ORDER BY part",
                (node.name, group, me),
            )
            return [int(part) for (part,) in rows]

        return await self._call(work, write=False)

    async def ack(self, messages: Sequence[Message]) -> None:
        receipts = self._check_receipts(messages)
        if not messages:
            return
        runs = _contiguous_runs(messages, receipts)

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "DELETE FROM inflight "
                "WHERE topic = ? AND grp = ? AND part = ? AND seq BETWEEN ? AND ?",
                runs,
            )

        await self._call(work, changes=True)

    async def nack(self, messages: Sequence[Message], *, delay: float = 0.0) -> None:
        if delay < 0:
            raise ValueError(f"a nack delay cannot be negative, not {delay:g}")
        self._check_receipts(messages)
        rows = [(m.topic, m.group, m.partition, int(m.id), m.delivery_count) for m in messages]
        if not rows:
            return

        def work(conn: sqlite3.Connection) -> None:
            visible_at = self._clock() + delay
            conn.executemany(
                "UPDATE inflight SET holder = NULL, visible_at = ? "
                "WHERE topic = ? AND grp = ? AND part = ? AND seq = ? AND delivery_count = ?",
                [(visible_at, *row) for row in rows],
            )

        await self._call(work, changes=True)

    async def backlog(self, topic: str, group: str) -> BacklogReading:
        node = self.topic(topic)

        def work(conn: sqlite3.Connection) -> BacklogReading:
            stored = conn.execute(
                "SELECT partitions FROM topics WHERE topic = ?", (topic,)
            ).fetchone()
            partitions = max(node.partitions, stored[0] if stored else 0)
            ends = {
                part: (start, end)
                for part, start, end in conn.execute(
                    "SELECT part, log_start, log_end FROM partitions WHERE topic = ?", (topic,)
                )
            }
            fetched = dict(
                conn.execute(
                    "SELECT part, fetched FROM cursors WHERE topic = ? AND grp = ?",
                    (topic, group),
                ).fetchall()
            )
            inflight = dict(
                conn.execute(
                    "SELECT part, COUNT(*) FROM inflight WHERE topic = ? AND grp = ? GROUP BY part",
                    (topic, group),
                ).fetchall()
            )
            per_partition: dict[int, int] = {}
            for part in range(partitions):
                start, end = ends.get(part, (0, 0))
                # a group not made yet would start at the oldest message kept
                position = fetched.get(part, start)
                per_partition[part] = max(end - position, 0) + inflight.get(part, 0)
            return BacklogReading(
                topic=topic,
                group=group,
                total=sum(per_partition.values()),
                per_partition=per_partition,
                partitions=partitions,
                taken_at=datetime.now(UTC),
            )

        return await self._call(work, write=False)

    async def compact(self) -> None:
        """Delete the messages every group has acknowledged and, for topics with a
        `retention`, those older than it. Runs by itself, on the broker's thread, at
        most once a second after calls that changed something; this runs it now."""
        await self._call(self._cleanup)

    async def aclose(self) -> None:
        """Give back the messages this consumer holds (they are delivered again at
        once), leave its groups, close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._pid:
            return  # a forked copy: the connection and the thread are the parent's
        try:
            if self._used:
                loop = asyncio.get_running_loop()
                # closing must not fail because giving the messages back did: their
                # leases then simply run out
                with contextlib.suppress(Exception):
                    await loop.run_in_executor(self._executor, self._close_in_thread)
        finally:
            self._executor.shutdown(wait=False)

    # --- the event-loop side ---------------------------------------------------------

    async def _call(
        self,
        work: Callable[[sqlite3.Connection], T],
        *,
        write: bool = True,
        changes: bool = False,
        give_back: Callable[[T], None] | None = None,
    ) -> T:
        """Run `work` in one transaction: here, when the connection is free and the
        lock can be had at once, else on the broker's thread. `changes`: it may make
        messages claimable (this object's waiting consumers look again).
        `give_back`: undoes the result of a transaction that completed on the thread
        after the caller was cancelled."""
        self._check_usable()
        if self._conn is not None and self._lock.acquire(blocking=False):
            try:
                result = self._transaction(work, write=write, wait=False)
                if changes:
                    self._own_changes += 1
            except _Busy:
                pass  # wait for the lock on the thread instead
            except sqlite3.Error as exc:
                raise BackendError(f"embedded broker {self.path}: {exc}") from exc
            else:
                self._after_write(write)
                return result
            finally:
                self._lock.release()
        future = self._executor.submit(self._in_thread, work, write, changes)
        try:
            result = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # a transaction already running cannot be stopped: it completes, and
            # `give_back` undoes it (one still queued is cancelled for good)
            if give_back is not None:
                future.add_done_callback(lambda done: self._give_back(done, give_back))
            raise
        self._after_write(write)
        return result

    @staticmethod
    def _give_back(future: concurrent.futures.Future[T], give_back: Callable[[T], None]) -> None:
        if not future.cancelled() and future.exception() is None:
            give_back(future.result())

    def _after_write(self, write: bool) -> None:
        """Start the housekeeping on the broker's thread when it is due."""
        if not write or time.monotonic() < self._next_housekeeping:
            return
        self._next_housekeeping = time.monotonic() + CLEANUP_INTERVAL
        with contextlib.suppress(RuntimeError):  # shut down meanwhile: nothing to keep
            self._executor.submit(self._housekeeping)

    def _check_usable(self) -> None:
        if self._closed:
            raise BackendClosedError(f"the embedded broker on {self.path} is closed")
        if os.getpid() != self._pid:
            # SQLite connections must not cross fork(), nor can the broker's thread
            raise BackendError(
                "an embedded broker object cannot be used in a forked process; "
                "construct one in each process"
            )
        self._used = True

    async def _data_version(self) -> int:
        def work(conn: sqlite3.Connection) -> int:
            return int(conn.execute("PRAGMA data_version").fetchone()[0])

        return await self._call(work, write=False)

    async def _claim_messages(self, node: TopicNode, group: str, limit: int) -> _Claim:
        """Claim messages; when the caller is cancelled while the claim runs on the
        thread, the messages it would have received are given back instead of
        waiting out their lease."""

        def work(conn: sqlite3.Connection) -> _Claim:
            return self._claim(conn, node, group, limit)

        return await self._call(work, give_back=self._release_unreceived)

    def _release_unreceived(self, claim: _Claim) -> None:
        if not claim.messages or self._closed:
            return  # aclose gives back everything this member holds anyway
        rows = [(m.topic, m.group, m.partition, int(m.id)) for m in claim.messages]

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE inflight SET holder = NULL, visible_at = 0, "
                "delivery_count = delivery_count - 1 "
                "WHERE topic = ? AND grp = ? AND part = ? AND seq = ?",
                rows,
            )

        with contextlib.suppress(RuntimeError):  # the executor shut down meanwhile
            self._executor.submit(self._in_thread, work, True, True)

    def _check_receipts(self, messages: Sequence[Message]) -> set[_Receipt]:
        """The messages' receipts; refuses messages that did not come from a broker
        on this file."""
        try:
            receipts: set[object] = set(map(_RECEIPT, messages))
        except TypeError:  # an unhashable receipt: not ours
            receipts = {None}
        if all(type(r) is _Receipt and r.path == self._path_text for r in receipts):
            return cast("set[_Receipt]", receipts)
        stranger = next(
            m
            for m in messages
            if type(m.receipt) is not _Receipt or m.receipt.path != self._path_text
        )
        raise BackendError(
            f"message {stranger.id} of topic {stranger.topic!r} was not received from "
            f"the embedded broker on {self.path}"
        )

    # --- the side that holds the connection: one transaction per call ----------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so that every
        # writer takes the lock up front instead of failing to upgrade a read.
        # timeout=0: SQLite never sleeps for the lock; `_transaction` decides.
        # check_same_thread=False: the event loop's thread and the broker's share it,
        # one at a time (`_lock`).
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        try:
            _retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            # Survives kill -9 (commits reach the OS at COMMIT); see "Durability".
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            # checkpoints fsync: they run in `_housekeeping`, never inside a COMMIT
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._conn = conn
            self._transaction(self._create_schema, write=True, wait=True)
        except BaseException:
            self._conn = None
            conn.close()
            raise
        return conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == FILE_FORMAT:
            return
        if version != 0:
            raise BackendError(
                f"{self.path} holds an embedded broker of format {version}; "
                f"this tideflow reads format {FILE_FORMAT}"
            )
        existing = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        if existing:
            raise BackendError(f"{self.path} is an SQLite file of something else")
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {FILE_FORMAT}")

    def _in_thread(self, work: Callable[[sqlite3.Connection], T], write: bool, changes: bool) -> T:
        with self._lock:
            try:
                result = self._transaction(work, write=write, wait=True)
            except sqlite3.Error as exc:
                raise BackendError(f"embedded broker {self.path}: {exc}") from exc
            if changes:
                self._own_changes += 1
            return result

    def _housekeeping(self) -> None:
        """Clean up and checkpoint, when this connection changed something since
        last time; on the broker's thread. A failure is tried again next time."""
        with self._lock:
            conn = self._conn
            if conn is None or conn.total_changes == self._changes_housekept:
                return
            with contextlib.suppress(sqlite3.Error):
                self._transaction(self._cleanup, write=True, wait=True)
                # PASSIVE: copies what no reader still needs, waits for nobody
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self._changes_housekept = conn.total_changes

    def _transaction(
        self, work: Callable[[sqlite3.Connection], T], *, write: bool, wait: bool
    ) -> T:
        """`work` in one transaction (with `_lock` held). When SQLite's lock is
        taken: raises `_Busy` if not `wait`, else tries again for up to `BUSY_TIMEOUT`."""
        conn = self._connection()

        def attempt() -> T:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = work(conn)
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        if wait:
            return _retry_busy(attempt)
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise _Busy from exc
            raise

    def _close_in_thread(self) -> None:
        with self._lock:
            conn = self._conn
            if conn is None:
                return
            try:
                self._transaction(self._leave, write=True, wait=True)
            finally:
                self._conn = None
                conn.close()

    def _leave(self, conn: sqlite3.Connection) -> None:
        me = self.member_id
        conn.execute("UPDATE inflight SET holder = NULL, visible_at = 0 WHERE holder = ?", (me,))
        conn.execute("UPDATE cursors SET owner = NULL WHERE owner = ?", (me,))
        conn.execute("DELETE FROM members WHERE member = ?", (me,))

    # --- topics and groups ------------------------------------------------------------

    def _topic_partitions(self, conn: sqlite3.Connection, node: TopicNode) -> int:
        """The topic's partition count, creating the topic, or growing it to the
        count its record asks for."""
        row = conn.execute("SELECT partitions FROM topics WHERE topic = ?", (node.name,)).fetchone()
        stored: int = row[0] if row else 0
        if stored > node.partitions:
            # keys would map to other partitions than the file's other users map them
            raise BackendError(
                f'topic "{node.name}" has {stored} partitions in {self.path}; it cannot '
                f"shrink to {node.partitions} (move the file away to start afresh)"
            )
        if stored == node.partitions:
            return stored
        added = [(node.name, part) for part in range(stored, node.partitions)]
        conn.executemany(
            "INSERT INTO partitions (topic, part, log_start, log_end) VALUES (?, ?, 0, 0)", added
        )
        # existing groups read the new partitions from their beginning
        conn.executemany(
            "INSERT OR IGNORE INTO cursors (topic, grp, part, fetched, owner) "
            "SELECT DISTINCT topic, grp, ?, 0, NULL FROM cursors WHERE topic = ?",
            [(part, topic) for topic, part in added],
        )
        conn.execute(
            "INSERT INTO topics (topic, partitions) VALUES (?, ?) "
            "ON CONFLICT (topic) DO UPDATE SET partitions = excluded.partitions",
            (node.name, node.partitions),
        )
        return node.partitions

    def _ensure_cursors(
        self, conn: sqlite3.Connection, topic: str, group: str, partitions: int, *, start: str
    ) -> list[tuple[int, int, str | None]]:
        """The group's (partition, fetched, owner) rows, made where missing. A new
        group starts at the end of each log (`start="end"`) or at the oldest message
        kept (`"oldest"`); partitions added to an existing group start at their
        beginning, as they are newer than the group."""
        cursors: list[tuple[int, int, str | None]] = conn.execute(
            "SELECT part, fetched, owner FROM cursors WHERE topic = ? AND grp = ? ORDER BY part",
            (topic, group),
        ).fetchall()
        if len(cursors) >= partitions:
            return cursors
        column = "log_end" if start == "end" and not cursors else "log_start"
        conn.execute(
            f"INSERT OR IGNORE INTO cursors (topic, grp, part, fetched, owner) "
            f"SELECT topic, ?, part, {column}, NULL FROM partitions WHERE topic = ?",
            (group, topic),
        )
        result: list[tuple[int, int, str | None]] = conn.execute(
            "SELECT part, fetched, owner FROM cursors WHERE topic = ? AND grp = ? ORDER BY part",
            (topic, group),
        ).fetchall()
        return result

    # --- publishing -------------------------------------------------------------------

    def _insert_messages(
        self,
        conn: sqlite3.Connection,
        topic: str,
        by_partition: Mapping[int, Sequence[OutgoingMessage]],
    ) -> None:
        now = self._clock()
        for part, batch in by_partition.items():
            (end,) = conn.execute(
                "SELECT log_end FROM partitions WHERE topic = ? AND part = ?", (topic, part)
            ).fetchone()
            conn.executemany(
                "INSERT INTO messages "
                "(topic, part, seq, msg_key, msg_value, headers, published_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        topic,
                        part,
                        seq,
                        m.key,
                        m.value,
                        json.dumps(dict(m.headers), separators=(",", ":")) if m.headers else None,
                        now,
                    )
                    for seq, m in enumerate(batch, end)
                ],
            )
            conn.execute(
                "UPDATE partitions SET log_end = ? WHERE topic = ? AND part = ?",
                (end + len(batch), topic, part),
            )

    # --- consuming --------------------------------------------------------------------

    def _claim_work(
        self, node: TopicNode, group: str, limit: int
    ) -> Callable[[sqlite3.Connection], _Claim]:
        def work(conn: sqlite3.Connection) -> _Claim:
            return self._claim(conn, node, group, limit)

        return work

    def _claim(self, conn: sqlite3.Connection, node: TopicNode, group: str, limit: int) -> _Claim:
        topic, me, now = node.name, self.member_id, self._clock()
        lease = self.visibility_timeout
        partitions = self._topic_partitions(conn, node)
        cursors = self._ensure_cursors(conn, topic, group, partitions, start="oldest")
        live, my_expiry, others_expire = self._join(conn, topic, group, now)
        owned = self._rebalance(conn, topic, group, cursors, live, partitions)
        fetched = {part: position for part, position, _ in cursors}

        # Per partition: the earliest lease another member holds (nothing is
        # delivered from it before then), the earliest time something becomes
        # visible, and whether messages are due again now.
        blocked: dict[int, float] = {}
        redeliveries: set[int] = set()
        next_due = min(others_expire, my_expiry - lease / 2, now + RECLAIM_MAX)
        for part, others_lease, due, redeliverable in conn.execute(
            "SELECT part, "
            "MIN(CASE WHEN holder != :me AND visible_at > :now THEN visible_at END), "
            "MIN(CASE WHEN visible_at > :now THEN visible_at END), "
            "SUM(visible_at <= :now) "
            "FROM inflight WHERE topic = :topic AND grp = :grp GROUP BY part",
            {"me": me, "now": now, "topic": topic, "grp": group},
        ):
            if part not in owned:
                continue
            if due is not None:
                next_due = min(next_due, due)
            if others_lease is not None:
                blocked[part] = others_lease
            if redeliverable:
                redeliveries.add(part)

        until = now + lease
        order = sorted(owned)
        if order:  # start at another partition each time, for fairness between them
            self._rotation = (self._rotation + 1) % len(order)
            order = order[self._rotation :] + order[: self._rotation]
        messages: list[Message] = []
        for part in order:
            if len(messages) >= limit:
                break
            if part not in blocked:
                messages += self._claim_partition(
                    conn,
                    topic,
                    group,
                    part,
                    fetched[part],
                    limit - len(messages),
                    now,
                    until,
                    redeliver=part in redeliveries,
                )
        # Read inside the transaction: a commit by anyone after ours changes it.
        version = 0 if messages else conn.execute("PRAGMA data_version").fetchone()[0]
        return _Claim(messages, next_due, version, self._own_changes)

    def _join(
        self, conn: sqlite3.Connection, topic: str, group: str, now: float
    ) -> tuple[list[str], float, float]:
        """Keep this object a live member of the group; returns the live members in
        order of joining, this member's expiry and the earliest expiry of another."""
        me, lease = self.member_id, self.visibility_timeout
        rows = conn.execute(
            "SELECT member, expires FROM members WHERE topic = ? AND grp = ? "
            "ORDER BY joined, member",
            (topic, group),
        ).fetchall()
        if any(expires <= now for _, expires in rows):
            conn.execute(
                "DELETE FROM members WHERE topic = ? AND grp = ? AND expires <= ?",
                (topic, group, now),
            )
        live = [(member, expires) for member, expires in rows if expires > now]
        mine = [expires for member, expires in live if member == me]
        my_expiry = mine[0] if mine else 0.0
        if not mine:
            conn.execute(
                "INSERT INTO members (topic, grp, member, joined, expires) VALUES "
                "(?, ?, ?, (SELECT COALESCE(MAX(joined), 0) + 1 FROM members "
                "WHERE topic = ? AND grp = ?), ?) "
                "ON CONFLICT (topic, grp, member) DO UPDATE SET "
                "joined = excluded.joined, expires = excluded.expires",
                (topic, group, me, topic, group, now + lease),
            )
            live.append((me, now + lease))
            my_expiry = now + lease
        elif my_expiry - now < lease / 2:
            my_expiry = now + lease
            conn.execute(
                "UPDATE members SET expires = ? WHERE topic = ? AND grp = ? AND member = ?",
                (my_expiry, topic, group, me),
            )
        others = [expires for member, expires in live if member != me]
        return [member for member, _ in live], my_expiry, min(others, default=float("inf"))

    def _rebalance(
        self,
        conn: sqlite3.Connection,
        topic: str,
        group: str,
        cursors: Sequence[tuple[int, int, str | None]],
        live: Sequence[str],
        partitions: int,
    ) -> set[int]:
        """Give up or take partitions so that this member owns its share; returns
        the partitions it owns now."""
        me = self.member_id
        rank, members = live.index(me), len(live)
        share = partitions // members + (1 if rank < partitions % members else 0)
        owned = [part for part, _, owner in cursors if owner == me]
        alive = set(live)
        if len(owned) > share:
            conn.executemany(
                "UPDATE cursors SET owner = NULL WHERE topic = ? AND grp = ? AND part = ?",
                [(topic, group, part) for part in owned[share:]],
            )
            owned = owned[:share]
        elif len(owned) < share:
            free = [part for part, _, owner in cursors if owner is None or owner not in alive]
            taken = free[: share - len(owned)]
            conn.executemany(
                "UPDATE cursors SET owner = ? WHERE topic = ? AND grp = ? AND part = ?",
                [(me, topic, group, part) for part in taken],
            )
            owned += taken
        return set(owned)

    def _claim_partition(
        self,
        conn: sqlite3.Connection,
        topic: str,
        group: str,
        part: int,
        fetched: int,
        limit: int,
        now: float,
        until: float,
        *,
        redeliver: bool,
    ) -> list[Message]:
        """Lease up to `limit` messages of one partition: those due again first
        (when `redeliver`: there are some), then new ones, in offset order."""
        me = self.member_id
        receipt = _Receipt(self._path_text, topic, group, part)
        messages: list[Message] = []
        if redeliver:
            due = conn.execute(
                "SELECT seq, delivery_count FROM inflight WHERE topic = ? AND grp = ? "
                "AND part = ? AND visible_at <= ? ORDER BY seq LIMIT ?",
                (topic, group, part, now, limit),
            ).fetchall()
            gone: list[tuple[str, str, int, int]] = []
            leased: list[tuple[str, float, str, str, int, int]] = []
            for seq, count in due:
                row = conn.execute(
                    "SELECT msg_key, msg_value, headers FROM messages "
                    "WHERE topic = ? AND part = ? AND seq = ?",
                    (topic, part, seq),
                ).fetchone()
                if row is None:  # dropped by retention while away
                    gone.append((topic, group, part, seq))
                    continue
                leased.append((me, until, topic, group, part, seq))
                messages.append(_message(receipt, seq, count + 1, *row))
            conn.executemany(
                "DELETE FROM inflight WHERE topic = ? AND grp = ? AND part = ? AND seq = ?", gone
            )
            conn.executemany(
                "UPDATE inflight SET holder = ?, visible_at = ?, "
                "delivery_count = delivery_count + 1 "
                "WHERE topic = ? AND grp = ? AND part = ? AND seq = ?",
                leased,
            )
        if len(messages) >= limit:
            return messages
        fresh = conn.execute(
            # the offset as text, as `Message.id` wants it: cheaper in SQLite than
            # str() per message
            "SELECT CAST(seq AS TEXT), msg_key, msg_value, headers FROM messages "
            "WHERE topic = ? AND part = ? AND seq >= ? ORDER BY seq LIMIT ?",
            (topic, part, fetched, limit - len(messages)),
        ).fetchall()
        if not fresh:
            return messages
        first, last = int(fresh[0][0]), int(fresh[-1][0])
        # the log has no gaps: these are exactly the rows just read
        conn.execute(
            "INSERT INTO inflight (topic, grp, part, seq, delivery_count, holder, visible_at) "
            "SELECT topic, ?, part, seq, 1, ?, ? FROM messages "
            "WHERE topic = ? AND part = ? AND seq BETWEEN ? AND ?",
            (group, me, until, topic, part, first, last),
        )
        conn.execute(
            "UPDATE cursors SET fetched = ? WHERE topic = ? AND grp = ? AND part = ?",
            (last + 1, topic, group, part),
        )
        messages += [
            Message(
                topic,
                group,
                value,
                key,
                json.loads(headers) if headers else _NO_HEADERS,
                part,
                seq,
                1,
                receipt,
            )
            for seq, key, value, headers in fresh
        ]
        return messages

    # --- clean-up ---------------------------------------------------------------------

    def _cleanup(self, conn: sqlite3.Connection) -> None:
        """Delete acknowledged messages, and those past their topic's retention."""
        now = self._clock()
        for node in self.topics.values():
            topic = node.name
            has_groups = conn.execute(
                "SELECT 1 FROM cursors WHERE topic = ? LIMIT 1", (topic,)
            ).fetchone()
            for part, start, end in conn.execute(
                "SELECT part, log_start, log_end FROM partitions WHERE topic = ?", (topic,)
            ).fetchall():
                keep_from = start
                if has_groups:
                    # the lowest committed offset over the groups
                    (committed,) = conn.execute(
                        "SELECT MIN(COALESCE((SELECT MIN(i.seq) FROM inflight i "
                        "WHERE i.topic = c.topic AND i.grp = c.grp AND i.part = c.part), "
                        "c.fetched)) FROM cursors c WHERE c.topic = ? AND c.part = ?",
                        (topic, part),
                    ).fetchone()
                    keep_from = max(keep_from, start if committed is None else committed)
                expired_until = start
                if node.retention is not None:
                    first_kept = conn.execute(
                        "SELECT seq FROM messages WHERE topic = ? AND part = ? AND seq >= ? "
                        "AND published_at >= ? ORDER BY seq LIMIT 1",
                        (topic, part, start, now - node.retention),
                    ).fetchone()
                    expired_until = end if first_kept is None else first_kept[0]
                    keep_from = max(keep_from, expired_until)
                keep_from = min(keep_from, end)
                if keep_from <= start:
                    continue
                conn.execute(
                    "DELETE FROM messages WHERE topic = ? AND part = ? AND seq < ?",
                    (topic, part, keep_from),
                )
                conn.execute(
                    "UPDATE partitions SET log_start = ? WHERE topic = ? AND part = ?",
                    (keep_from, topic, part),
                )
                if expired_until > start:
                    # groups move past what retention dropped unread
                    conn.execute(
                        "DELETE FROM inflight WHERE topic = ? AND part = ? AND seq < ?",
                        (topic, part, keep_from),
                    )
                    conn.execute(
                        "UPDATE cursors SET fetched = MAX(fetched, ?) WHERE topic = ? AND part = ?",
                        (keep_from, topic, part),
                    )


def _message(
    receipt: _Receipt,
    seq: int,
    delivery_count: int,
    key: bytes | None,
    value: bytes,
    headers: str | None,
) -> Message:
    return Message(
        receipt.topic,
        receipt.group,
        value,
        key,
        json.loads(headers) if headers else _NO_HEADERS,
        receipt.partition,
        str(seq),
        delivery_count,
        receipt,
    )


def _contiguous_runs(
    messages: Sequence[Message], receipts: set[_Receipt]
) -> list[tuple[str, str, int, int, int]]:
    """The messages' offsets as (topic, group, partition, first, last) runs of
    consecutive offsets: one range delete each instead of one delete per message."""
    if len(receipts) == 1:
        # the usual case, (part of) one claim of one partition
        (receipt,) = receipts
        seqs = list(map(int, map(_ID, messages)))
        low, high = min(seqs), max(seqs)
        if high - low == len(seqs) - 1 and len(set(seqs)) == len(seqs):
            # distinct offsets that span exactly their number: one run
            return [(receipt.topic, receipt.group, receipt.partition, low, high)]
    offsets: dict[tuple[str, str, int], list[int]] = {}
    for m in messages:
        offsets.setdefault((m.topic, m.group, m.partition), []).append(int(m.id))
    runs: list[tuple[str, str, int, int, int]] = []
    for (topic, group, part), unsorted in offsets.items():
        ordered = sorted(unsorted)
        start = last = ordered[0]
        for seq in ordered[1:]:
            if seq > last + 1:
                runs.append((topic, group, part, start, last))
                start = seq
            last = seq
        runs.append((topic, group, part, start, last))
    return runs


@hookimpl
def tideflow_register_brokers(registry: BackendRegistry[Broker]) -> None:
    """Register the `embedded` broker."""
    registry.register(EmbeddedBroker)
