"""The store's hot writes on PostgreSQL: one round trip each; and the one-statement forms
they take there mean what the transactions they replaced meant (on both stores).

Round trips are counted from SQLAlchemy's events and psycopg's transaction state:
each statement is one, and so is each BEGIN psycopg sends before a statement outside a
transaction, and each COMMIT or ROLLBACK it sends inside one (bench/dispatch_bench.py
counts them the same way; the model was checked against libpq's trace). The ping of a
connection that sat idle is not counted: whether one happens depends on timing."""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tideflow.compiler.ir import Backoff, JobNode, RetryPolicy
from tideflow.runtime.executor import Executor, RunRequest
from tideflow.runtime.model import AttemptStatus, ErrorInfo, RunStatus, TriggerKind
from tideflow.runtime.store import Fence, Store, StoreError
from tideflow.runtime.store import engine as store_engine

from .conftest import POSTGRES_URL
from .jobs_for_tests.flows import make_flow

HERE = Path(__file__).resolve().parent
T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)

on_postgresql = pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)


@contextmanager
def counting(store: Store) -> Iterator[collections.Counter[str]]:
    """Round trips to the server while the block runs."""
    counts: collections.Counter[str] = collections.Counter()

    def in_transaction(conn: sa.Connection) -> bool:
        return int(conn.connection.dbapi_connection.info.transaction_status) != 0  # type: ignore[union-attr]

    def before_execute(conn: sa.Connection, *_args: Any) -> None:
        counts["statements"] += 1
        dbapi = conn.connection.dbapi_connection
        if not dbapi.autocommit and not in_transaction(conn):  # type: ignore[union-attr]
            counts["begin"] += 1

    def on_end(conn: sa.Connection) -> None:
        if in_transaction(conn):
            counts["commit or rollback"] += 1

    listeners: list[tuple[str, Callable[..., None]]] = [
        ("before_cursor_execute", before_execute),
        ("commit", on_end),
        ("rollback", on_end),
    ]
    for name, listener in listeners:
        sa.event.listen(store.engine, name, listener)
    try:
        yield counts
    finally:
        for name, listener in listeners:
            sa.event.remove(store.engine, name, listener)


def round_trips(store: Store, call: Callable[[], object]) -> int:
    with counting(store) as counts:
        call()
    return sum(counts.values())


@on_postgresql
def test_every_run_transition_is_one_round_trip_on_postgresql(store: Store) -> None:
    ids: dict[str, int] = {}
    flow_run: list[int] = []
    attempt: list[int] = []

    def start() -> None:
        attempt.append(store.start_attempt(ids["a"], 1, pid=42, at=T0))

    def jobs() -> None:
        ids.update(
            store.create_job_runs(
                flow_run[0], "f", [f"j{i}" for i in range(500)] + ["a"], TriggerKind.MANUAL
            )
        )

    steps: list[tuple[str, Callable[[], object]]] = [
        (
            "create_flow_run",
            lambda: flow_run.append(store.create_flow_run("f", "a", TriggerKind.MANUAL)),
        ),
        ("create_job_runs, 501 jobs", jobs),
        ("set_flow_run_status", lambda: store.set_flow_run_status(flow_run[0], RunStatus.RUNNING)),
        ("set_job_run_status", lambda: store.set_job_run_status(ids["j0"], RunStatus.QUEUED)),
        ("mark_queued, 501 job runs", lambda: store.mark_queued(ids.values())),
        ("start_attempt", start),
        ("set_attempt_pid", lambda: store.set_attempt_pid(attempt[0], 43)),
        ("cancel_requests", lambda: store.cancel_requests(ids.values())),
        ("request_cancel", lambda: store.request_cancel(ids["j1"])),
        (
            "finish_attempt with logs",
            lambda: store.finish_attempt(
                attempt[0],
                AttemptStatus.SUCCESS,
                logs=[(T0, "INFO", "one"), (T0, "INFO", "two")],
                job_run_status=RunStatus.SUCCESS,
            ),
        ),
        ("job_run", lambda: store.job_run(ids["a"])),
        ("flow_run", lambda: store.flow_run(flow_run[0])),
    ]
    costs = {name: round_trips(store, call) for name, call in steps}
    assert costs == {name: 1 for name, _ in steps}
    # the counter sees what a transaction costs: BEGIN, UPDATE, INSERT, COMMIT
    assert round_trips(store, lambda: store.save_flow("f", "", {})) == 4

    # a fenced start checks the lease in the same statement: no round trip more
    grant = store.acquire_lease("demo", 1, 30.0)
    assert grant is not None
    store.fence = Fence("demo", grant.token, 1)
    assert round_trips(store, lambda: store.start_attempt(ids["j2"], 1)) == 1
    store.fence = Fence("demo", grant.token + 1, 1)  # stale: refused, nothing written
    with pytest.raises(StoreError):
        store.start_attempt(ids["j3"], 1)
    assert store.attempts(ids["j3"]) == []
    assert store.job_run(ids["j3"]).status is RunStatus.QUEUED  # type: ignore[union-attr]


def test_only_job_runs_still_waiting_are_marked_queued(store: Store) -> None:
    flow_run = store.create_flow_run("f", "a", TriggerKind.MANUAL)
    ids = store.create_job_runs(
        flow_run, "f", ["new", "retry", "going", "done"], TriggerKind.MANUAL
    )
    store.set_job_run_status(ids["retry"], RunStatus.RETRYING)
    store.start_attempt(ids["going"], 1)
    store.set_job_run_status(ids["done"], RunStatus.SUCCESS)
    store.mark_queued(ids.values())
    store.mark_queued([])
    rows = {r.job: r.status for r in store.job_runs(flow_run_id=flow_run)}
    assert rows == {
        "new": RunStatus.QUEUED,
        "retry": RunStatus.QUEUED,
        "going": RunStatus.RUNNING,
        "done": RunStatus.SUCCESS,
    }


def test_job_runs_come_back_by_job_in_the_order_given(store: Store) -> None:
    flow_run = store.create_flow_run("f", "j0000", TriggerKind.SCHEDULE, scheduled_at=T0)
    names = [f"j{i:04d}" for i in range(2500)]  # more than one INSERT's worth on SQLite
    ids = store.create_job_runs(flow_run, "f", names, TriggerKind.SCHEDULE, scheduled_at=T0)
    assert list(ids) == names and [ids[n] for n in names] == sorted(ids.values())
    rows = store.job_runs(flow_run_id=flow_run, limit=None)
    assert {r.job: r.id for r in rows} == ids
    row = next(r for r in rows if r.job == "j0042")
    assert (row.status, row.trigger, row.scheduled_at, row.attempts) == (
        RunStatus.PENDING,
        TriggerKind.SCHEDULE,
        T0,
        0,
    )
    assert not row.cancel_requested and row.flow == "f" and row.created_at is not None
    assert store.create_job_runs(flow_run, "f", [], TriggerKind.MANUAL) == {}


def test_a_second_attempt_keeps_the_first_start(store: Store) -> None:
    flow_run = store.create_flow_run("f", "a", TriggerKind.MANUAL)
    job_run = store.create_job_runs(flow_run, "f", ["a"], TriggerKind.MANUAL)["a"]
    first = store.start_attempt(job_run, 1, pid=7, orchestrator_id=3, at=T0)
    store.finish_attempt(first, AttemptStatus.FAILED, job_run_status=RunStatus.RETRYING)
    row = store.job_run(job_run)
    assert row is not None and row.status is RunStatus.RETRYING and row.finished_at is None
    second = store.start_attempt(job_run, 2, at=T0 + timedelta(seconds=5), executor="dask")
    row = store.job_run(job_run)
    assert row is not None
    assert (row.status, row.attempts, row.started_at) == (RunStatus.RUNNING, 2, T0)
    one, two = store.attempts(job_run)
    assert (one.id, two.id) == (first, second) and second > first
    assert (one.pid, one.status, two.status) == (7, AttemptStatus.FAILED, AttemptStatus.RUNNING)
    assert two.started_at == T0 + timedelta(seconds=5)


@pytest.mark.parametrize("lines", [3, 1500])  # 1,500: more than one statement takes on PG
def test_an_attempt_ends_with_its_output_logs_and_job_run_together(
    store: Store, lines: int
) -> None:
    flow_run = store.create_flow_run("f", "a", TriggerKind.MANUAL)
    ids = store.create_job_runs(flow_run, "f", ["a", "b"], TriggerKind.MANUAL)
    attempt = store.start_attempt(ids["a"], 1, at=T0)
    logs = [(T0 + timedelta(milliseconds=i), "INFO", f"line {i}") for i in range(lines)]
    error = ErrorInfo("ValueError", "bad row 7", "Traceback ...", "load", "jobs.py:3")
    end = T0 + timedelta(seconds=2)
    store.finish_attempt(
        attempt,
        AttemptStatus.FAILED,
        exit_code=1,
        stdout="out\n",
        stderr="err\n",
        error=error,
        logs=iter(logs),  # any iterable, read once
        job_run_status=RunStatus.FAILED,
        at=end,
    )
    (row,) = store.attempts(ids["a"])
    assert (row.status, row.exit_code, row.stdout, row.stderr, row.error, row.finished_at) == (
        AttemptStatus.FAILED,
        1,
        "out\n",
        "err\n",
        error,
        end,
    )
    assert [(line.seq, line.at, line.message) for line in store.logs(attempt)] == [
        (i, at, message) for i, (at, _, message) in enumerate(logs)
    ]
    run = store.job_run(ids["a"])
    assert run is not None and (run.status, run.finished_at) == (RunStatus.FAILED, end)
    other = store.job_run(ids["b"])
    assert other is not None and other.status is RunStatus.PENDING


def test_an_attempt_ended_without_a_job_run_status_leaves_the_job_run_alone(
    store: Store,
) -> None:
    flow_run = store.create_flow_run("f", "a", TriggerKind.MANUAL)
    job_run = store.create_job_runs(flow_run, "f", ["a"], TriggerKind.MANUAL)["a"]
    attempt = store.start_attempt(job_run, 1, at=T0)
    store.finish_attempt(attempt, AttemptStatus.INTERRUPTED, logs=[(T0, "WARNING", "stop")])
    row = store.job_run(job_run)
    assert row is not None and (row.status, row.finished_at) == (RunStatus.RUNNING, None)
    assert store.attempts(job_run)[0].status is AttemptStatus.INTERRUPTED
    assert [line.message for line in store.logs(attempt)] == ["stop"]


@on_postgresql
def test_a_connection_the_server_dropped_while_idle_is_replaced_unseen(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_engine, "IDLE_PING_SECONDS", 0.0)  # every checkout pings
    with Store.open(store_url) as store:
        _drop_the_pooled_connection(store)
        assert store.flow_runs() == []  # pinged, found dead, replaced: no error


@on_postgresql
def test_a_connection_in_steady_use_that_the_server_dropped_is_replaced_unseen(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ping for a connection used a moment ago, but the server's goodbye waits on its
    socket: that is seen at checkout without a round trip."""
    monkeypatch.setattr(store_engine, "IDLE_PING_SECONDS", 3600.0)
    with Store.open(store_url) as store:
        _drop_the_pooled_connection(store)
        assert store.flow_runs() == []


@on_postgresql
def test_a_connection_that_died_silently_fails_one_call_then_the_pool_reconnects(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link cut says nothing: the statement finds it, that call raises StoreError,
    SQLAlchemy drops the pool, and the next call works."""
    monkeypatch.setattr(store_engine, "IDLE_PING_SECONDS", 3600.0)
    monkeypatch.setattr(store_engine, "_server_wrote", lambda _connection: False)
    with Store.open(store_url) as store:
        _drop_the_pooled_connection(store)
        with pytest.raises(StoreError):
            store.flow_runs()
        assert store.flow_runs() == []


def _drop_the_pooled_connection(store: Store) -> None:
    """Terminate, from another session, the server process of the store's only pooled
    connection."""
    store.engine.dispose()
    with store.engine.connect() as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        conn.rollback()
    admin = sa.create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        # the termination is asynchronous: wait for the process to be gone
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with admin.connect() as conn:
                alive = conn.execute(
                    sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                ).scalar()
            if not alive:
                return
            time.sleep(0.01)
        raise AssertionError(f"backend {pid} was not terminated within 30 s")
    finally:
        admin.dispose()


@pytest.fixture
def workers_import_test_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(HERE))


@pytest.mark.anyio
@pytest.mark.usefixtures("workers_import_test_jobs")
async def test_the_executor_records_retries_logs_and_failures_on_either_store(
    store: Store, tmp_path: Path
) -> None:
    jobs = "jobs_for_tests.jobs"
    retry = RetryPolicy(attempts=2, backoff=Backoff("fixed", 0.01))
    params = {"log": str(tmp_path / "log.jsonl"), "succeed_on": 2}
    flow = make_flow(
        [
            JobNode("first", run=f"{jobs}:noop"),
            JobNode(
                "flaky", run=f"{jobs}:fail_until", params=params, retry=retry, after=("first",)
            ),
            JobNode("chatty", run=f"{jobs}:chatty", after=("flaky",)),
            JobNode("bad", run=f"{jobs}:fail", after=("chatty",)),
            JobNode("never", run=f"{jobs}:noop", after=("bad",)),
        ]
    )
    async with Executor(flow, store, kill_grace=0.5) as executor:
        flow_run = await executor.submit(RunRequest("first"))
        assert await executor.wait(flow_run) is RunStatus.FAILED
    runs = {r.job: r for r in store.job_runs(flow_run_id=flow_run, limit=None)}
    assert {job: r.status for job, r in runs.items()} == {
        "first": RunStatus.SUCCESS,
        "flaky": RunStatus.SUCCESS,
        "chatty": RunStatus.SUCCESS,
        "bad": RunStatus.FAILED,
        "never": RunStatus.UPSTREAM_FAILED,
    }
    assert [a.status for a in store.attempts(runs["flaky"].id)] == [
        AttemptStatus.FAILED,
        AttemptStatus.SUCCESS,
    ]
    assert runs["flaky"].attempts == 2 and runs["flaky"].finished_at is not None
    (chatty,) = store.attempts(runs["chatty"].id)
    assert [line.message for line in store.logs(chatty.id)] == ["hello there", "careful", "details"]
    (bad,) = store.attempts(runs["bad"].id)
    assert bad.error is not None and bad.error.type == "ValueError"
    row = store.flow_run(flow_run)
    assert row is not None and row.status is RunStatus.FAILED and row.finished_at is not None
