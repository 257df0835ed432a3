"""Broker benchmark: messages per second through tideflow's brokers, beside the raw
client doing the same work.

Embedded broker: publishes N messages in batches, then consumes and acknowledges
them in batches of the same size, through `EmbeddedBroker` (async API, its own
thread, Message objects, consumer-group bookkeeping). The baseline is plain
`sqlite3` in the same process doing the same durable work: the same file layout
and settings (WAL, synchronous=NORMAL), the same rows inserted, leased and
deleted with the same statements (a leased batch is inserted and deleted as one
range), one transaction per batch, and the same once-a-second deletion of
acknowledged messages. The ratio tideflow / raw is what the abstraction keeps of
the raw client's throughput; the target (shared/DESIGN.md: plugins add under 20%)
is a ratio of at least 0.8. The two run alternately, each on a fresh file, and
each figure is the best of N runs. Rates are given by the wall clock and by the
process's CPU time, which other programs on a shared machine disturb less.

    .venv/bin/python bench/broker_bench.py
    .venv/bin/python bench/broker_bench.py --messages 20000 --batches 10,100 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench_rates import Comparison, Rates, mark, table_lines, verdict_lines  # beside this file
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.api import OutgoingMessage
from tideflow.plugins.embedded import EmbeddedBroker, storage
from tideflow.plugins.embedded import broker as embedded

TARGET_RATIO = 0.8
DEFAULT_BATCHES = (1, 10, 100, 1000)
TOPIC, GROUP = "bench", "bench-group"


@dataclass(frozen=True, slots=True)
class EmbeddedResult(Comparison):
    """One batch size: tideflow's rates, the raw baseline's, and their ratios."""


# --- tideflow's path -----------------------------------------------------------------


async def _tideflow_run(path: Path, messages: int, batch: int, payload: bytes) -> Rates:
    node = TopicNode(TOPIC, "bench", partitions=1)
    async with EmbeddedBroker({"path": str(path)}, [node]) as broker:
        await broker.ensure_topic(TOPIC, [GROUP])
        batches = [
            [OutgoingMessage(payload)] * min(batch, messages - start)
            for start in range(0, messages, batch)
        ]
        start = mark()
        for outgoing in batches:
            await broker.publish(TOPIC, outgoing)
        published = mark()
        received = 0
        while received < messages:
            got = await broker.consume(TOPIC, GROUP, max_messages=batch, wait=0)
            await broker.ack(got)
            received += len(got)
        consumed = mark()
    return Rates.of(messages, start, published, consumed)


# --- the raw sqlite3 baseline ----------------------------------------------------------


def _raw_run(path: Path, messages: int, batch: int, payload: bytes) -> Rates:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for statement in storage.SCHEMA:
        conn.execute(statement)
    conn.execute("INSERT INTO topics VALUES (?, 1)", (TOPIC,))
    conn.execute("INSERT INTO partitions VALUES (?, 0, 0, 0)", (TOPIC,))
    conn.execute("INSERT INTO cursors VALUES (?, ?, 0, 0, NULL)", (TOPIC, GROUP))
    next_cleanup = 0.0

    def cleanup() -> None:
        # what the broker does once a second: drop what the group acknowledged
        nonlocal next_cleanup
        if time.monotonic() < next_cleanup:
            return
        next_cleanup = time.monotonic() + embedded.CLEANUP_INTERVAL
        conn.execute("BEGIN IMMEDIATE")
        (committed,) = conn.execute(
            "SELECT COALESCE((SELECT MIN(seq) FROM inflight WHERE topic = ? AND grp = ? "
            "AND part = 0), (SELECT fetched FROM cursors WHERE topic = ? AND grp = ? "
            "AND part = 0))",
            (TOPIC, GROUP, TOPIC, GROUP),
        ).fetchone()
        conn.execute(
            "DELETE FROM messages WHERE topic = ? AND part = 0 AND seq < ?", (TOPIC, committed)
        )
        conn.execute("UPDATE partitions SET log_start = ? WHERE topic = ?", (committed, TOPIC))
        conn.execute("COMMIT")

    start = mark()
    for first in range(0, messages, batch):
        size = min(batch, messages - first)
        conn.execute("BEGIN IMMEDIATE")
        (end,) = conn.execute(
            "SELECT log_end FROM partitions WHERE topic = ? AND part = ?", (TOPIC, 0)
        ).fetchone()
        now = time.time()
        conn.executemany(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(TOPIC, 0, end + i, None, payload, None, now) for i in range(size)],
        )
        conn.execute(
            "UPDATE partitions SET log_end = ? WHERE topic = ? AND part = ?", (end + size, TOPIC, 0)
        )
        conn.execute("COMMIT")
        cleanup()
    published = mark()
    received = 0
    while received < messages:
        conn.execute("BEGIN IMMEDIATE")
        (fetched,) = conn.execute(
            "SELECT fetched FROM cursors WHERE topic = ? AND grp = ? AND part = ?",
            (TOPIC, GROUP, 0),
        ).fetchone()
        rows = conn.execute(
            "SELECT seq, msg_key, msg_value, headers FROM messages "
            "WHERE topic = ? AND part = ? AND seq >= ? ORDER BY seq LIMIT ?",
            (TOPIC, 0, fetched, batch),
        ).fetchall()
        until = time.time() + 30.0
        conn.execute(
            "INSERT INTO inflight SELECT topic, ?, part, seq, 1, ?, ? FROM messages "
            "WHERE topic = ? AND part = ? AND seq BETWEEN ? AND ?",
            (GROUP, "raw", until, TOPIC, 0, rows[0][0], rows[-1][0]),
        )
        conn.execute(
            "UPDATE cursors SET fetched = ? WHERE topic = ? AND grp = ? AND part = ?",
            (rows[-1][0] + 1, TOPIC, GROUP, 0),
        )
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "DELETE FROM inflight WHERE topic = ? AND grp = ? AND part = ? AND seq BETWEEN ? AND ?",
            (TOPIC, GROUP, 0, rows[0][0], rows[-1][0]),
        )
        conn.execute("COMMIT")
        cleanup()
        received += len(rows)
    consumed = mark()
    conn.close()
    return Rates.of(messages, start, published, consumed)


# --- the measurement -------------------------------------------------------------------


def _in_scratch(run: Callable[[Path], Rates]) -> Rates:
    with tempfile.TemporaryDirectory(prefix="tideflow-bench-") as scratch:
        return run(Path(scratch) / "broker.db")


def bench_embedded(
    messages: int = 100_000, batch: int = 100, payload: int = 100, runs: int = 3
) -> EmbeddedResult:
    """Publish and consume `messages` messages of `payload` bytes in batches of
    `batch`, through EmbeddedBroker and through raw sqlite3, alternately, each on a
    fresh file; the best of `runs` of each."""
    body = b"x" * payload
    raw = _in_scratch(lambda path: _raw_run(path, messages, batch, body))
    ours = _in_scratch(lambda path: asyncio.run(_tideflow_run(path, messages, batch, body)))
    for _ in range(runs - 1):
        raw = raw.best(_in_scratch(lambda path: _raw_run(path, messages, batch, body)))
        ours = ours.best(
            _in_scratch(lambda path: asyncio.run(_tideflow_run(path, messages, batch, body)))
        )
    return EmbeddedResult(messages, batch, payload, ours, raw)


def format_embedded(results: Sequence[EmbeddedResult]) -> str:
    """The results as a table, with the verdict on the target per batch size."""
    lines = table_lines(
        "embedded broker (SQLite, WAL, synchronous=NORMAL): messages/s by the wall clock",
        results,
    )
    lines.append(
        "ratio: tideflow / raw sqlite3 by the wall clock; cpu: the same by CPU time; "
        f"target >= {TARGET_RATIO}"
    )
    lines += verdict_lines(results, TARGET_RATIO)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--messages",
        type=int,
        default=100_000,
        help="messages per run for batches of 10 and more (default: %(default)s); "
        "batches of 1 and 2 use a twentieth",
    )
    parser.add_argument(
        "--batches",
        default=",".join(map(str, DEFAULT_BATCHES)),
        help="comma-separated batch sizes (default: %(default)s)",
    )
    parser.add_argument("--payload", type=int, default=100, help="bytes per message")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure, best kept")
    parser.add_argument(
        "--backends",
        default="embedded,nats,kafka",
        help="which brokers (default: %(default)s); nats and kafka start their own servers "
        "and run broker_bench_nats.py / broker_bench_kafka.py beside this file",
    )
    args = parser.parse_args(argv)
    backends = {b.strip() for b in args.backends.split(",") if b.strip()}
    unknown = backends - {"embedded", "nats", "kafka"}
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    for name in ("nats", "kafka"):
        if name in backends:
            module = __import__(f"broker_bench_{name}")  # beside this file
            module.main([])
            print()
    if "embedded" not in backends:
        return 0
    try:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--batches takes comma-separated integers, not {args.batches!r}")
    if not batches or min(batches) < 1 or args.messages < 1 or args.runs < 1:
        parser.error("--messages, --runs and each batch size must be positive")
    print(
        f"tideflow broker benchmark, python {sys.version.split()[0]}, "
        f"sqlite {sqlite3.sqlite_version}, best of {args.runs} runs"
    )
    results = []
    for batch in batches:
        messages = args.messages if batch >= 10 else max(args.messages // 20, batch)
        results.append(bench_embedded(messages, batch, args.payload, args.runs))
    print(format_embedded(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
