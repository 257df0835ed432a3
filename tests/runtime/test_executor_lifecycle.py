"""Cancellation, graceful shutdown and recovery of lost attempts."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tideflow.compiler.ir import Backoff, JobNode, PoolNode, RetryPolicy
from tideflow.runtime.executor import Executor, ExecutorClosedError, RunEvent, RunRequest
from tideflow.runtime.model import AttemptStatus, RunStatus, TriggerKind
from tideflow.runtime.store import Store

from .jobs_for_tests.flows import make_flow
from .jobs_for_tests.harness import process_gone, records, until
from .jobs_for_tests.jobs import LIMIT_SECONDS

pytestmark = pytest.mark.anyio
HERE = Path(__file__).resolve().parent
JOBS = "jobs_for_tests.jobs"


@pytest.fixture(autouse=True)
def workers_import_test_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(HERE))


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        yield store


def py(name: str, function: str, **fields: Any) -> JobNode:
    return JobNode(name, run=f"{JOBS}:{function}", **fields)


def runs(store: Store, flow_run_id: int) -> dict[str, Any]:
    return {r.job: r for r in store.job_runs(flow_run_id=flow_run_id, limit=None)}


def statuses(store: Store, flow_run_id: int) -> dict[str, RunStatus]:
    return {job: row.status for job, row in runs(store, flow_run_id).items()}


def waiting(tmp_path: Path, name: str = "w") -> dict[str, str]:
    return {"started": str(tmp_path / f"{name}.started"), "release": str(tmp_path / "release")}


# --- cancellation -----------------------------------------------------------------------------


async def test_cancelling_a_running_job_kills_its_attempt(sqlite: Store, tmp_path: Path) -> None:
    params = waiting(tmp_path)
    flow = make_flow(
        [
            py("slow", "wait_for_release", params=params),
            py("next", "noop", after=("slow",)),
            py("cleanup", "noop", after=("slow",), trigger="all_done"),
        ]
    )
    async with Executor(flow, sqlite, kill_grace=0.5) as ex:  # the default poll, 0.5 s
        flow_run = await ex.submit(RunRequest("slow"))
        await until(Path(params["started"]).exists)
        worker = int(Path(params["started"]).read_text())
        asked = time.monotonic()
        assert sqlite.request_cancel(runs(sqlite, flow_run)["slow"].id)
        assert await ex.wait(flow_run) is RunStatus.CANCELLED
        # a poll and the grace (1 s), not the job's own end (LIMIT_SECONDS); a loaded
        # machine may take several times longer than an idle one
        assert time.monotonic() - asked < LIMIT_SECONDS / 2
    assert process_gone(worker)
    assert statuses(sqlite, flow_run) == {
        "slow": RunStatus.CANCELLED,
        "next": RunStatus.UPSTREAM_FAILED,  # cancelled counts as failed
        "cleanup": RunStatus.SUCCESS,
    }
    (attempt,) = sqlite.attempts(runs(sqlite, flow_run)["slow"].id)
    assert attempt.status is AttemptStatus.CANCELLED and attempt.finished_at is not None


async def test_cancelling_a_job_that_waits_for_a_slot_starts_nothing(
    sqlite: Store, tmp_path: Path
) -> None:
    first, second = waiting(tmp_path, "first"), waiting(tmp_path, "second")
    flow = make_flow(
        [
            py("root", "noop"),
            py("first", "wait_for_release", after=("root",), pool="one", params=first),
            py("second", "wait_for_release", after=("root",), pool="one", params=second),
        ],
        pools=[PoolNode("one", slots=1)],
    )
    async with Executor(flow, sqlite, cancel_poll=0.05) as ex:
        flow_run = await ex.submit(RunRequest("root"))
        await until(lambda: Path(first["started"]).exists() or Path(second["started"]).exists())
        running, queued = (
            ("first", "second") if Path(first["started"]).exists() else ("second", "first")
        )
        await until(lambda: statuses(sqlite, flow_run)[queued] is RunStatus.QUEUED)
        sqlite.request_cancel(runs(sqlite, flow_run)[queued].id)
        await until(lambda: statuses(sqlite, flow_run)[queued] is RunStatus.CANCELLED)
        Path(first["release"]).touch()
        assert await ex.wait(flow_run) is RunStatus.CANCELLED
    assert statuses(sqlite, flow_run)[running] is RunStatus.SUCCESS
    assert sqlite.attempts(runs(sqlite, flow_run)[queued].id) == []


async def test_cancelling_during_a_backoff_stops_the_retries(sqlite: Store, tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    retry = RetryPolicy(attempts=5, backoff=Backoff("fixed", 60.0))
    flow = make_flow(
        [py("flaky", "fail_until", retry=retry, params={"log": str(log), "succeed_on": 5})]
    )
    async with Executor(flow, sqlite, cancel_poll=0.05) as ex:
        flow_run = await ex.submit(RunRequest("flaky"))
        await until(lambda: statuses(sqlite, flow_run)["flaky"] is RunStatus.RETRYING)
        sqlite.request_cancel(runs(sqlite, flow_run)["flaky"].id)
        assert await ex.wait(flow_run) is RunStatus.CANCELLED
    assert len(records(log)) == 1
    assert [a.status for a in sqlite.attempts(runs(sqlite, flow_run)["flaky"].id)] == [
        AttemptStatus.FAILED
    ]


async def test_cancelling_a_command(sqlite: Store) -> None:
    flow = make_flow([JobNode("sleepy", command=("sleep", "60"))])
    async with Executor(flow, sqlite, cancel_poll=0.05, kill_grace=0.5) as ex:
        flow_run = await ex.submit(RunRequest("sleepy"))
        await until(lambda: statuses(sqlite, flow_run)["sleepy"] is RunStatus.RUNNING)
        sqlite.request_cancel(runs(sqlite, flow_run)["sleepy"].id)
        assert await ex.wait(flow_run) is RunStatus.CANCELLED
    (attempt,) = sqlite.attempts(runs(sqlite, flow_run)["sleepy"].id)
    assert (attempt.status, attempt.exit_code) == (AttemptStatus.CANCELLED, -15)


# --- graceful shutdown ------------------------------------------------------------------------


async def test_shutdown_lets_attempts_finish_within_the_grace_then_interrupts(
    sqlite: Store, tmp_path: Path
) -> None:
    slow = waiting(tmp_path, "slow")
    # let go once the shutdown has begun: it ends within the grace however loaded the machine
    quick = {"started": str(tmp_path / "quick.started"), "release": str(tmp_path / "quick.go")}
    flow = make_flow(
        [
            py("root", "noop"),
            py("slow", "wait_for_release", after=("root",), params=slow),
            py("quick", "wait_for_release", after=("root",), params=quick),
            py("after_slow", "noop", after=("slow",), trigger="all_done"),
            py("after_quick", "noop", after=("quick",)),
            py("queued", "wait_for_release", overlap="queue", params=waiting(tmp_path, "q")),
        ]
    )
    ex = Executor(flow, sqlite, min_workers=3, kill_grace=0.5)
    flow_run = await ex.submit(RunRequest("root"))
    first_q = await ex.submit(RunRequest("queued"))
    second_q = await ex.submit(RunRequest("queued"))
    await until(lambda: Path(slow["started"]).exists() and Path(quick["started"]).exists())
    started = time.monotonic()
    shutdown = asyncio.create_task(ex.shutdown(grace=2.0))
    await asyncio.sleep(0)  # the shutdown has begun: nothing new starts
    Path(quick["release"]).touch()
    await shutdown
    took = time.monotonic() - started
    # the whole grace (slow never ends by itself), then a kill: not LIMIT_SECONDS
    assert 2.0 <= took < LIMIT_SECONDS / 2
    assert sqlite.flow_run(flow_run).status is RunStatus.CANCELLED  # type: ignore[union-attr]
    assert statuses(sqlite, flow_run) == {
        "root": RunStatus.SUCCESS,
        "quick": RunStatus.SUCCESS,  # finished within the grace
        "after_quick": RunStatus.CANCELLED,  # nothing new starts
        "slow": RunStatus.CANCELLED,
        "after_slow": RunStatus.CANCELLED,
    }
    (attempt,) = sqlite.attempts(runs(sqlite, flow_run)["slow"].id)
    assert attempt.status is AttemptStatus.INTERRUPTED and attempt.finished_at is not None
    assert process_gone(int(Path(slow["started"]).read_text()))
    for queued in (first_q, second_q):
        assert sqlite.flow_run(queued).status is RunStatus.CANCELLED  # type: ignore[union-attr]
    assert ex.pool.size == 0
    with pytest.raises(ExecutorClosedError):
        await ex.submit(RunRequest("root"))


async def test_shutdown_when_nothing_runs_returns_at_once(sqlite: Store) -> None:
    ex = Executor(make_flow([py("a", "noop")]), sqlite)
    await ex.wait(await ex.submit(RunRequest("a")))
    started = time.monotonic()
    await ex.shutdown(grace=LIMIT_SECONDS)
    assert time.monotonic() - started < LIMIT_SECONDS / 2


# --- recovery ---------------------------------------------------------------------------------


def _dead_orchestrators_run(
    store: Store, jobs: list[str], *, done: tuple[str, ...] = (), running: str, queued: str = ""
) -> int:
    """What an orchestrator that died mid-run left behind."""
    flow_run = store.create_flow_run("tests", jobs[0], TriggerKind.SCHEDULE)
    ids = store.create_job_runs(flow_run, "tests", jobs, TriggerKind.SCHEDULE)
    store.set_flow_run_status(flow_run, RunStatus.RUNNING)
    for job in done:
        attempt = store.start_attempt(ids[job], 1, pid=999_998, orchestrator_id=1)
        store.finish_attempt(attempt, AttemptStatus.SUCCESS, job_run_status=RunStatus.SUCCESS)
    store.start_attempt(ids[running], 1, pid=999_999, orchestrator_id=1)
    if queued:
        store.set_job_run_status(ids[queued], RunStatus.QUEUED)
    return flow_run


async def test_recover_retries_a_lost_attempt_and_finishes_the_run(sqlite: Store) -> None:
    retry = RetryPolicy(attempts=2, backoff=Backoff("fixed", 0.05))
    flow = make_flow(
        [
            py("a", "noop"),
            py("b", "noop", after=("a",), retry=retry),
            py("c", "noop", after=("a",)),
            py("d", "noop", after=("b", "c")),
        ]
    )
    # a had succeeded, b's attempt was running and c waited for a slot when it died
    flow_run = _dead_orchestrators_run(
        sqlite, ["a", "b", "c", "d"], done=("a",), running="b", queued="c"
    )
    lost = sqlite.mark_lost(["tests"])
    events: list[RunEvent] = []

    async def notify(event: RunEvent) -> None:
        events.append(event)

    async with Executor(flow, sqlite, notify=notify) as ex:
        assert await ex.recover(lost) == [flow_run]
        assert await ex.wait(flow_run) is RunStatus.SUCCESS
    assert set(statuses(sqlite, flow_run).values()) == {RunStatus.SUCCESS}
    attempts = sqlite.attempts(runs(sqlite, flow_run)["b"].id)
    assert [(a.number, a.status) for a in attempts] == [
        (1, AttemptStatus.LOST),
        (2, AttemptStatus.SUCCESS),
    ]
    for job in ("a", "c", "d"):  # a is not run again; c and d run once
        assert len(sqlite.attempts(runs(sqlite, flow_run)[job].id)) == 1
    await until(lambda: len(events) == 4)
    lost_event = events[0]
    assert (lost_event.event, lost_event.job, lost_event.attempt) == ("lost", "b", 1)
    assert lost_event.status == "lost"
    assert sorted((e.event, e.job, e.attempt) for e in events[1:]) == [
        ("success", "b", 2),
        ("success", "c", 1),
        ("success", "d", 1),
    ]


async def test_recover_fails_a_lost_attempt_with_no_attempts_left(sqlite: Store) -> None:
    flow = make_flow([py("a", "noop"), py("b", "noop", after=("a",))])
    flow_run = _dead_orchestrators_run(sqlite, ["a", "b"], running="a")
    lost = sqlite.mark_lost(["tests"])
    events: list[RunEvent] = []

    async def notify(event: RunEvent) -> None:
        events.append(event)

    async with Executor(flow, sqlite, notify=notify) as ex:
        await ex.recover(lost)
        assert await ex.wait(flow_run) is RunStatus.FAILED
    assert statuses(sqlite, flow_run) == {"a": RunStatus.FAILED, "b": RunStatus.UPSTREAM_FAILED}
    assert len(sqlite.attempts(runs(sqlite, flow_run)["a"].id)) == 1
    await until(lambda: len(events) == 2)
    assert [e.event for e in events] == ["lost", "failure"]


async def test_recover_ignores_other_flows_attempts(sqlite: Store) -> None:
    other = sqlite.create_flow_run("other", "x", TriggerKind.MANUAL)
    ids = sqlite.create_job_runs(other, "other", ["x"], TriggerKind.MANUAL)
    sqlite.start_attempt(ids["x"], 1)
    lost = sqlite.mark_lost(["other"])
    async with Executor(make_flow([py("x", "noop")]), sqlite) as ex:
        assert await ex.recover(lost) == []
    assert statuses(sqlite, other) == {"x": RunStatus.RUNNING}
