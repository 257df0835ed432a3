"""Dispatch overhead of the executor: no-op Python jobs, history in SQLite and PostgreSQL.

A *task transition* is a job run changing state as the executor drives it:
pending -> running (an attempt starts on a worker) and running -> success (the
attempt is recorded). 1,000 jobs are 2,000 transitions. The figure reported is
the wall time of the whole flow run divided by that, beside the time of calling
the same function 1,000 times in a plain loop. Workers are started before the
clock starts (a warm orchestrator); the first-run figure is reported too.

Each store named by `--state` (default: both `sqlite` and `postgresql`) runs the
same flows in the same run, so the ratio between them is measured on the same
load. `postgresql` is the local server (postgresql://postgres@127.0.0.1:5432/test);
any store URL may be given. A PostgreSQL store gets a fresh schema, dropped after.

Beside the time, the store's traffic per job: SQL statements, transactions, and on
PostgreSQL the round trips to the server (every statement, ping, BEGIN and COMMIT
waits for one; counted from SQLAlchemy's events and psycopg's transaction state).
`--profile` breaks it down by store method (calls, time, statements, round trips).

Run: `.venv/bin/python bench/dispatch_bench.py [--jobs 1000] [--concurrency 2]
[--state sqlite --state postgresql] [--shape chain] [--repeat 3] [--profile]`.
The module keeps its imports light: worker processes import it for `noop`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRANSITIONS_PER_JOB = 2
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
TARGET_RATIO = 1.5  # PostgreSQL's time per job against SQLite's (issue 17)
STORE_NAMES = {"sqlite": None, "postgresql": POSTGRES_URL}


def noop(ctx: Any) -> None:
    """The job: does nothing."""


@dataclass
class MethodTraffic:
    """What one store method cost over a run."""

    calls: int = 0
    seconds: float = 0.0
    statements: int = 0
    transactions: int = 0
    round_trips: int = 0


@dataclass
class StoreTraffic:
    """The store's traffic during a run, by store method (`Store` method names)."""

    methods: dict[str, MethodTraffic] = field(default_factory=dict)

    def total(self, name: str) -> int:
        return sum(getattr(m, name) for m in self.methods.values())

    @property
    def seconds(self) -> float:
        return sum(m.seconds for m in self.methods.values())


@dataclass(frozen=True)
class DispatchResult:
    shape: str  # "chain" or "fan-out"
    jobs: int
    concurrency: int
    seconds: float  # wall time of the flow run, workers already started
    loop_seconds: float  # the same calls in a plain loop
    store: str = "sqlite"  # which kind of store held the history
    traffic: StoreTraffic | None = None  # during the timed flow run

    @property
    def transitions(self) -> int:
        return self.jobs * TRANSITIONS_PER_JOB

    @property
    def ms_per_transition(self) -> float:
        return self.seconds / self.transitions * 1000

    @property
    def ms_per_job(self) -> float:
        return self.seconds / self.jobs * 1000

    def per_job(self, name: str) -> float:
        return self.traffic.total(name) / self.jobs if self.traffic else float("nan")

    def describe(self) -> str:
        return (
            f"{self.shape:8} {self.jobs} jobs, concurrency {self.concurrency}: "
            f"{self.seconds:.3f} s, {self.ms_per_transition:.3f} ms per transition "
            f"({self.ms_per_job:.3f} ms per job); plain loop {self.loop_seconds * 1e6:.0f} µs"
        )

    def describe_traffic(self) -> str:
        if self.traffic is None:
            return ""
        text = (
            f"{self.per_job('statements'):.2f} statements, "
            f"{self.per_job('transactions'):.2f} transactions"
        )
        if self.store != "sqlite":
            text += f", {self.per_job('round_trips'):.2f} round trips"
        return text + " per job"

    def describe_profile(self) -> str:
        """The store methods called during the run, the costliest first."""
        if self.traffic is None:
            return ""
        lines = [
            f"    {'store method':24} {'calls':>6} {'ms/call':>8} {'% run':>6} "
            f"{'stmt/call':>9} {'rt/call':>8}"
        ]
        methods = sorted(self.traffic.methods.items(), key=lambda kv: -kv[1].seconds)
        for name, m in methods:
            lines.append(
                f"    {name:24} {m.calls:6d} {m.seconds / m.calls * 1000:8.3f} "
                f"{m.seconds / self.seconds * 100:6.1f} {m.statements / m.calls:9.2f} "
                f"{m.round_trips / m.calls:8.2f}"
            )
        outside = self.seconds - self.traffic.seconds
        lines.append(
            f"    outside the store: {outside * 1000 / self.jobs:.3f} ms per job "
            f"({outside / self.seconds * 100:.0f}% of the run)"
        )
        return "\n".join(lines)


def store_kind(url: str | None) -> str:
    if url is None or url.startswith("sqlite") or "://" not in url:
        return "sqlite"
    return url.split("://", 1)[0].split("+", 1)[0]


@contextlib.contextmanager
def fresh_store_url(url: str | None, state_dir: Path | None = None) -> Iterator[str]:
    """A URL of an empty store where `url` points: a new SQLite file in a temporary
    folder when `url` is None, a schema of its own in a PostgreSQL database (dropped
    afterwards), else `url` itself."""
    if url is None:
        with tempfile.TemporaryDirectory(dir=state_dir) as tmp:
            yield f"sqlite:///{tmp}/state.db"
        return
    if store_kind(url) != "postgresql":
        yield url
        return
    import sqlalchemy as sa
    from tideflow.runtime.store import normalize_url

    parsed = sa.engine.make_url(normalize_url(url))
    schema = f"tf_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(parsed)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        options = parsed.query.get("options", "")
        options = f"{options} -csearch_path={schema}".strip()
        yield parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def recording(store: Any) -> Iterator[StoreTraffic]:
    """Count what the store's public methods cost while the block runs.

    Statements are SQLAlchemy's cursor executions (an executemany is one). On
    PostgreSQL a round trip is counted for each statement, each pool ping, and each
    BEGIN, COMMIT and ROLLBACK that psycopg sends (it sends BEGIN before the first
    statement of a transaction and COMMIT/ROLLBACK only inside one), which is what
    the wire shows (checked against libpq's trace)."""
    import sqlalchemy as sa

    traffic = StoreTraffic()
    current: list[str] = []  # the store method being called (the executor calls one at a time)
    engine = store.engine
    postgres = engine.dialect.name == "postgresql"

    def account() -> MethodTraffic:
        name = current[-1] if current else "(outside a store method)"
        return traffic.methods.setdefault(name, MethodTraffic())

    def in_transaction(conn: sa.Connection) -> bool:
        dbapi = conn.connection.dbapi_connection
        info = getattr(dbapi, "info", None)
        return info is not None and int(info.transaction_status) != 0  # 0: idle

    def before_execute(conn: sa.Connection, *_args: Any) -> None:
        found = account()
        found.statements += 1
        found.round_trips += 1
        dbapi = conn.connection.dbapi_connection
        if postgres and not getattr(dbapi, "autocommit", True) and not in_transaction(conn):
            found.round_trips += 1  # psycopg's BEGIN

    def on_end(conn: sa.Connection) -> None:
        if postgres and in_transaction(conn):
            account().round_trips += 1
        if conn.in_transaction():
            account().transactions += 1

    original_ping = engine.dialect.do_ping

    def ping(dbapi_connection: Any) -> bool:
        account().round_trips += 1
        return bool(original_ping(dbapi_connection))

    def wrap(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            current.append(name)
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                found = account()
                found.calls += 1
                found.seconds += time.perf_counter() - started
                current.pop()

        return timed

    names = [
        n
        for n in dir(type(store))
        if not n.startswith("_")
        and callable(getattr(type(store), n))
        and n not in ("open", "close", "migrate")
    ]
    for name in names:
        setattr(store, name, wrap(name, getattr(store, name)))
    engine.dialect.do_ping = ping
    listeners = [
        ("before_cursor_execute", before_execute),
        ("commit", on_end),
        ("rollback", on_end),
    ]
    for event, listener in listeners:
        sa.event.listen(engine, event, listener)
    try:
        yield traffic
    finally:
        for event, listener in listeners:
            sa.event.remove(engine, event, listener)
        engine.dialect.do_ping = original_ping
        for name in names:
            delattr(store, name)


def measure_dispatch(
    shape: str = "chain",
    jobs: int = 1000,
    *,
    concurrency: int = 2,
    state_dir: Path | None = None,
    warm: bool = True,
    state_url: str | None = None,
) -> DispatchResult:
    """Run `jobs` no-op Python jobs as a chain (each after the previous) or a fan-out
    (one root, every other job after it) through the executor, history in SQLite (or
    in the store `state_url` names: a PostgreSQL one gets a fresh schema)."""
    import asyncio

    from tideflow.compiler.ir import EdgeKind, FlowInfo, FlowIR, JobNode, node_id
    from tideflow.runtime.executor import Executor, RunRequest
    from tideflow.runtime.store import Store

    bench_dir = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (bench_dir, os.environ.get("PYTHONPATH", "")) if p
    )
    target = f"{Path(__file__).stem}:noop"
    flow = FlowIR(FlowInfo(name=f"bench-{shape}", source="", concurrency=concurrency))
    names = [f"j{i:05d}" for i in range(jobs)]
    for index, name in enumerate(names):
        flow.add(JobNode(name, run=target))
        parent = None
        if index and shape == "chain":
            parent = names[index - 1]
        elif index and shape == "fan-out":
            parent = names[0]
        elif shape not in ("chain", "fan-out"):
            raise ValueError(f"unknown shape {shape!r}")
        if parent is not None:
            flow.connect(node_id("job", name), node_id("job", parent), EdgeKind.DEPENDS_ON)

    with fresh_store_url(state_url, state_dir) as url:
        store = Store.open(url)
        traffic: StoreTraffic | None = None

        async def run() -> float:
            nonlocal traffic
            executor = Executor(flow, store, min_workers=concurrency if warm else 0)
            executor.start()
            if warm:  # wait until the workers answer, so startup is not counted
                warmup = await executor.submit(RunRequest(names[-1]))
                await executor.wait(warmup)
            with recording(store) as traffic:
                started = time.perf_counter()
                flow_run = await executor.submit(RunRequest(names[0]))
                status = await executor.wait(flow_run)
                elapsed = time.perf_counter() - started
            await executor.shutdown(1.0)
            if str(status) != "success":
                raise RuntimeError(f"bench flow run ended {status}")
            return elapsed

        try:
            seconds = asyncio.run(run())
        finally:
            store.close()

    started = time.perf_counter()
    for _ in range(jobs):
        noop(None)
    loop_seconds = time.perf_counter() - started
    return DispatchResult(
        shape, jobs, concurrency, seconds, loop_seconds, store_kind(state_url), traffic
    )


@dataclass(frozen=True)
class Comparison:
    """Each store's median run of a shape, and each store's time per job against
    SQLite's, round by round (the stores take turns in each round, so a change of load
    on the machine hits them alike): the median of those ratios, and their range."""

    shape: str
    results: dict[str, DispatchResult]
    ratios: dict[str, list[float]]  # by store label, one per round

    def describe_ratios(self) -> list[str]:
        lines = []
        for label, found in self.ratios.items():
            ratio = statistics.median(found)
            met = "met" if ratio <= TARGET_RATIO else "NOT met"
            spread = f" (rounds: {min(found):.2f}x to {max(found):.2f}x)" if len(found) > 1 else ""
            lines.append(
                f"{self.shape}: {label} / sqlite = {ratio:.2f}x per job{spread}; "
                f"target at most {TARGET_RATIO:g}x: {met}"
            )
        return lines


def compare(
    shape: str, jobs: int, concurrency: int, urls: dict[str, str | None], repeat: int
) -> Comparison:
    runs: dict[str, list[DispatchResult]] = {label: [] for label in urls}
    ratios: dict[str, list[float]] = {label: [] for label in urls if label != "sqlite"}
    for _ in range(repeat):
        this_round = {
            label: measure_dispatch(shape, jobs, concurrency=concurrency, state_url=url)
            for label, url in urls.items()
        }
        for label, result in this_round.items():
            runs[label].append(result)
            if label in ratios and "sqlite" in this_round:
                ratios[label].append(result.ms_per_job / this_round["sqlite"].ms_per_job)
    medians = {
        label: sorted(found, key=lambda r: r.seconds)[len(found) // 2]
        for label, found in runs.items()
    }
    return Comparison(shape, medians, {k: v for k, v in ratios.items() if v})


def labels(states: list[str]) -> dict[str, str | None]:
    """A short label for each store: its kind (`sqlite`, `postgresql`), numbered when
    two are of one kind."""
    found: dict[str, str | None] = {}
    for state in states:
        url = STORE_NAMES.get(state, state)
        label = store_kind(url)
        number = 2
        while label in found:
            label = f"{store_kind(url)}#{number}"
            number += 1
        found[label] = url
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--state",
        action="append",
        metavar="URL",
        help="a store to measure: `sqlite`, `postgresql` or a URL (repeatable; "
        "default: sqlite and postgresql)",
    )
    parser.add_argument(
        "--shape", action="append", choices=("chain", "fan-out"), help="default: both"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds (each store runs once per round)"
    )
    parser.add_argument("--profile", action="store_true", help="time and traffic by store method")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-start run")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.repeat < 1 or args.concurrency < 1:
        parser.error("--jobs, --repeat and --concurrency must be at least 1")
    urls = labels(args.state or list(STORE_NAMES))
    try:
        for url in urls.values():
            with fresh_store_url(url):
                pass
    except Exception as exc:  # a store that cannot be reached: say which, no traceback
        first_line = (str(exc).splitlines() or [""])[0]
        sys.exit(f"dispatch_bench: cannot prepare a store: {type(exc).__name__}: {first_line}")
    for label, url in urls.items():
        print(f"{label:12} {describe(url)}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for shape in args.shape or ["chain", "fan-out"]:
        comparison = compare(shape, args.jobs, args.concurrency, urls, args.repeat)
        for label, result in comparison.results.items():
            print(f"{label:12} {result.describe()}")
            print(f"{'':12} store traffic: {result.describe_traffic()}")
            if args.profile:
                print(result.describe_profile())
        for line in comparison.describe_ratios():
            print(line)
        sys.stdout.flush()
    if not args.no_cold:
        for label, url in urls.items():
            cold = measure_dispatch(
                "chain", args.jobs, concurrency=args.concurrency, warm=False, state_url=url
            )
            print(f"{label:12} cold start, " + cold.describe())
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    sys.stdout.flush()


def describe(url: str | None) -> str:
    if url is None:
        return "a SQLite file in a temporary folder"
    from tideflow.runtime.store import describe_url, normalize_url

    fresh = " (in a schema of its own, dropped after)" if store_kind(url) == "postgresql" else ""
    return describe_url(normalize_url(url)) + fresh


if __name__ == "__main__":
    main()
