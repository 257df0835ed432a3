"""The file: its layout, the connection's settings, SQLite's write lock, and the
logs the topics are made of (appending, growing, cleaning up).

Storage
    A topic has `partitions` partitions (from its `topic` block; a topic can grow,
    never shrink). Each partition is an append-only log of offsets 0, 1, 2, ...:
    `messages` holds the messages still kept, `partitions` the oldest kept offset
    (`log_start`) and the next one to assign (`log_end`).

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
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

from tideflow.plugins.api import BackendError, OutgoingMessage

if TYPE_CHECKING:
    from tideflow.compiler.ir import TopicNode

__all__ = [
    "BUSY_TIMEOUT",
    "FILE_FORMAT",
    "SCHEMA",
    "Busy",
    "cleanup",
    "connect",
    "create_schema",
    "insert_messages",
    "is_busy",
    "retry_busy",
    "topic_partitions",
]

T = TypeVar("T")

#: Layout of the file, kept in `PRAGMA user_version`.
FILE_FORMAT: Final = 1
#: How long a transaction waits for SQLite's write lock before it fails.
BUSY_TIMEOUT: Final = 10.0
#: Between tries for the lock: the first and longest sleep.
BUSY_SLEEP_FIRST: Final = 0.001
BUSY_SLEEP_MAX: Final = 0.05
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


class Busy(Exception):
    """SQLite's write lock was not free (a transaction that must not wait)."""


def is_busy(exc: sqlite3.OperationalError) -> bool:
    # the primary result code: SQLITE_BUSY_SNAPSHOT and the like count too
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def retry_busy(action: Callable[[], T]) -> T:
    """`action`, tried again while SQLite answers busy, for up to `BUSY_TIMEOUT`."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    sleep = BUSY_SLEEP_FIRST
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(sleep)
        sleep = min(sleep * 2, BUSY_SLEEP_MAX)


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the file (made if missing), in WAL mode, that never waits
    for the lock by itself."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so that every
    # writer takes the lock up front instead of failing to upgrade a read.
    # timeout=0: SQLite never sleeps for the lock; the broker's transaction decides.
    # check_same_thread=False: the event loop's thread and the broker's share it,
    # one at a time.
    conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    try:
        retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        # Survives kill -9 (commits reach the OS at COMMIT); see "Durability".
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        # checkpoints fsync: the broker runs them in its housekeeping, never
        # inside a COMMIT
        conn.execute("PRAGMA wal_autocheckpoint = 0")
    except BaseException:
        conn.close()
        raise
    return conn


def create_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Lay out a new file; refuse a file of another format or of something else."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version == FILE_FORMAT:
        return
    if version != 0:
        raise BackendError(
            f"{path} holds an embedded broker of format {version}; "
            f"this tideflow reads format {FILE_FORMAT}"
        )
    existing = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    if existing:
        raise BackendError(f"{path} is an SQLite file of something else")
    for statement in SCHEMA:
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {FILE_FORMAT}")


def topic_partitions(conn: sqlite3.Connection, node: TopicNode, path: Path) -> int:
    """The topic's partition count, creating the topic, or growing it to the
    count its record asks for."""
    row = conn.execute("SELECT partitions FROM topics WHERE topic = ?", (node.name,)).fetchone()
    stored: int = row[0] if row else 0
    if stored > node.partitions:
        # keys would map to other partitions than the file's other users map them
        raise BackendError(
            f'topic "{node.name}" has {stored} partitions in {path}; it cannot '
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


def insert_messages(
    conn: sqlite3.Connection,
    topic: str,
    by_partition: Mapping[int, Sequence[OutgoingMessage]],
    now: float,
) -> None:
    """Append messages to the logs of their partitions, published at `now`."""
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


def cleanup(conn: sqlite3.Connection, topics: Iterable[TopicNode], now: float) -> None:
    """Delete acknowledged messages, and those past their topic's retention."""
    for node in topics:
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
