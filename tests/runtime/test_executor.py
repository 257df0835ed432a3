"""The executor with real worker processes: DAGs, trigger rules, admission, retries,
errors, crashes and timeouts. History in a SQLite file per test."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tideflow.compiler.ir import (
    Backoff,
    EnvRef,
    FlowIR,
    JobNode,
    PoolNode,
    Resources,
    RetryPolicy,
)
from tideflow.runtime.executor import Executor, RunEvent, RunRequest
from tideflow.runtime.executor import driver as executor_module
from tideflow.runtime.model import AttemptStatus, RunStatus, TriggerKind
from tideflow.runtime.resources import Capacity
from tideflow.runtime.store import Store

from .jobs_for_tests.flows import make_flow
from .jobs_for_tests.harness import max_overlap, process_gone, records, until
from .jobs_for_tests.jobs import LIMIT_SECONDS

pytestmark = pytest.mark.anyio
HERE = Path(__file__).resolve().parent
JOBS = "jobs_for_tests.jobs"


@pytest.fixture(autouse=True)
def workers_import_test_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes inherit PYTHONPATH: let them import jobs_for_tests."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(HERE))


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        yield store


@asynccontextmanager
async def executor(flow: FlowIR, store: Store, **options: Any) -> AsyncIterator[Executor]:
    options.setdefault("kill_grace", 0.5)
    async with Executor(flow, store, **options) as running:
        yield running


def job_runs(store: Store, flow_run_id: int) -> dict[str, Any]:
    return {r.job: r for r in store.job_runs(flow_run_id=flow_run_id, limit=None)}


def statuses(store: Store, flow_run_id: int) -> dict[str, RunStatus]:
    return {job: row.status for job, row in job_runs(store, flow_run_id).items()}


def py(name: str, function: str, **fields: Any) -> JobNode:
    return JobNode(name, run=f"{JOBS}:{function}", **fields)


# --- the DAG -------------------------------------------------------------------------------


async def test_a_dag_runs_in_dependency_order_and_records_each_attempt(
    sqlite: Store, tmp_path: Path
) -> None:
    log = tmp_path / "log.jsonl"
    params = {"log": str(log), "seconds": 0.05}
    # b and c each wait until the other has started: they must run at the same time
    (tmp_path / "bc").mkdir()
    together = {**params, "folder": str(tmp_path / "bc"), "together": 2}
    flow = make_flow(
        [
            py("a", "mark", params=params),
            py("b", "crowd", params=together, after=("a",)),
            py("c", "crowd", params=together, after=("a",)),
            py("d", "mark", params=params, after=("b", "c")),
            py("unrelated", "mark", params=params),
        ]
    )
    at = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    async with executor(flow, sqlite, min_workers=2) as ex:
        flow_run = await ex.submit(RunRequest("a", TriggerKind.SCHEDULE, at))
        assert await ex.wait(flow_run) is RunStatus.SUCCESS

    ran = {r["job"]: r for r in records(log)}
    assert set(ran) == {"a", "b", "c", "d"}  # "unrelated" is not downstream of "a"
    assert ran["a"]["end"] <= min(ran["b"]["start"], ran["c"]["start"])
    assert max(ran["b"]["end"], ran["c"]["end"]) <= ran["d"]["start"]
    # b and c are independent: they ran at the same time
    assert max_overlap([(ran[j]["start"], ran[j]["end"]) for j in "bc"]) == 2

    row = sqlite.flow_run(flow_run)
    assert row is not None and row.status is RunStatus.SUCCESS and row.scheduled_at == at
    assert row.started_at is not None and row.finished_at is not None
    for job, run in job_runs(sqlite, flow_run).items():
        assert run.status is RunStatus.SUCCESS and run.attempts == 1, job
        (attempt,) = sqlite.attempts(run.id)
        assert attempt.status is AttemptStatus.SUCCESS and attempt.pid is not None
        assert attempt.finished_at is not None and attempt.started_at <= attempt.finished_at
        # the job's own clock agrees with the recorded window
        assert attempt.started_at.timestamp() <= ran[job]["start"] + 0.01
        assert attempt.finished_at.timestamp() >= ran[job]["end"] - 0.01


async def test_trigger_rules_decide_what_runs_after_a_failure(sqlite: Store) -> None:
    flow = make_flow(
        [
            py("root", "noop"),
            py("bad", "fail", after=("root",)),
            py("needs_bad", "noop", after=("bad",)),  # all_success
            py("alarm", "noop", after=("bad",), trigger="one_failed"),
            py("cleanup", "noop", after=("bad", "root"), trigger="all_done"),
            py("optional", "noop", after=("root", "bad"), trigger="none_failed"),
            py("either", "noop", after=("root", "bad"), trigger="one_success"),
            # upstream_failed counts as failed for the jobs after it
            py("after_needs_bad", "noop", after=("needs_bad",), trigger="one_failed"),
        ]
    )
    async with executor(flow, sqlite) as ex:
        flow_run = await ex.submit(RunRequest("root"))
        assert await ex.wait(flow_run) is RunStatus.FAILED
    assert statuses(sqlite, flow_run) == {
        "root": RunStatus.SUCCESS,
        "bad": RunStatus.FAILED,
        "needs_bad": RunStatus.UPSTREAM_FAILED,
        "alarm": RunStatus.SUCCESS,
        "cleanup": RunStatus.SUCCESS,
        "optional": RunStatus.UPSTREAM_FAILED,
        "either": RunStatus.SUCCESS,
        "after_needs_bad": RunStatus.SUCCESS,
    }


async def test_skips_cascade_down_a_long_chain(sqlite: Store) -> None:
    names = [f"j{i:04d}" for i in range(1200)]  # deeper than Python's recursion limit
    jobs = [py(names[0], "fail")]
    jobs += [py(name, "noop", after=(prev,)) for prev, name in itertools.pairwise(names)]
    async with executor(make_flow(jobs), sqlite) as ex:
        flow_run = await ex.submit(RunRequest(names[0]))
        assert await ex.wait(flow_run) is RunStatus.FAILED
    counts: dict[RunStatus, int] = {}
    for status in statuses(sqlite, flow_run).values():
        counts[status] = counts.get(status, 0) + 1
    assert counts == {RunStatus.FAILED: 1, RunStatus.UPSTREAM_FAILED: 1199}
    last = job_runs(sqlite, flow_run)[names[-1]]
    assert last.note is not None and f"`{names[-2]}` upstream_failed" in last.note


async def test_always_starts_without_waiting_for_its_dependencies(
    sqlite: Store, tmp_path: Path
) -> None:
    started, release, out = tmp_path / "started", tmp_path / "release", tmp_path / "out"
    flow = make_flow(
        [
            py(
                "slow",
                "wait_for_release",
                params={"started": str(started), "release": str(release)},
            ),
            py("watch", "async_job", after=("slow",), trigger="always", params={"out": str(out)}),
            py("cleanup", "noop", after=("slow",), trigger="all_done"),
        ]
    )
    async with executor(flow, sqlite) as ex:
        flow_run = await ex.submit(RunRequest("slow"))
        await until(out.exists, what="the `always` job to run while its dependency runs")
        assert not release.exists()
        assert statuses(sqlite, flow_run)["cleanup"] is RunStatus.PENDING
        release.touch()
        assert await ex.wait(flow_run) is RunStatus.SUCCESS
    assert set(statuses(sqlite, flow_run).values()) == {RunStatus.SUCCESS}


async def test_a_dependency_outside_the_run_counts_with_its_latest_finished_run(
    sqlite: Store, caplog: pytest.LogCaptureFixture
) -> None:
    flow = make_flow(
        [
            py("orders", "noop"),
            py("prices", "noop"),
            py("join", "noop", after=("orders", "prices")),
            py("lenient", "noop", after=("orders", "prices"), trigger="none_failed"),
        ]
    )
    caplog.set_level(logging.INFO, logger="tideflow.executor")
    async with executor(flow, sqlite) as ex:
        # "prices" never ran: it counts as skipped
        first = await ex.submit(RunRequest("orders"))
        await ex.wait(first)
        assert statuses(sqlite, first) == {
            "orders": RunStatus.SUCCESS,
            "join": RunStatus.SKIPPED,
            "lenient": RunStatus.SUCCESS,
        }
        assert "`prices` outside this run never finished a run" in caplog.text
        # a run of "prices" holds "join" too; "orders" counts with its last run (success)
        second = await ex.submit(RunRequest("prices"))
        await ex.wait(second)
        assert statuses(sqlite, second)["join"] is RunStatus.SUCCESS
        # now both have succeeded once
        third = await ex.submit(RunRequest("orders"))
        await ex.wait(third)
        assert statuses(sqlite, third)["join"] is RunStatus.SUCCESS


async def test_an_outside_dependency_that_failed_last_time_blocks_all_success(
    sqlite: Store,
) -> None:
    flow = make_flow(
        [py("orders", "noop"), py("prices", "fail"), py("join", "noop", after=("orders", "prices"))]
    )
    async with executor(flow, sqlite) as ex:
        await ex.wait(await ex.submit(RunRequest("prices")))
        flow_run = await ex.submit(RunRequest("orders"))
        # "join" could not run: the run failed, though none of its own attempts did
        assert await ex.wait(flow_run) is RunStatus.FAILED
    assert statuses(sqlite, flow_run) == {
        "orders": RunStatus.SUCCESS,
        "join": RunStatus.UPSTREAM_FAILED,
    }


# --- overlap ----------------------------------------------------------------------------------


def _waiting_job(tmp_path: Path, overlap: str) -> tuple[JobNode, Path, Path]:
    started, release = tmp_path / "started", tmp_path / "release"
    job = py(
        "root",
        "wait_for_release",
        overlap=overlap,
        params={"started": str(started), "release": str(release)},
    )
    return job, started, release


async def test_overlap_skip_records_a_skipped_run(sqlite: Store, tmp_path: Path) -> None:
    root, started, release = _waiting_job(tmp_path, "skip")
    flow = make_flow([root, py("after", "noop", after=("root",))])
    async with executor(flow, sqlite) as ex:
        first = await ex.submit(RunRequest("root"))
        await until(started.exists)
        second = await ex.submit(RunRequest("root"))
        assert await ex.wait(second) is RunStatus.SKIPPED
        assert statuses(sqlite, second) == {"root": RunStatus.SKIPPED}
        release.touch()
        assert await ex.wait(first) is RunStatus.SUCCESS
        # once the first has finished, the next one runs
        third = await ex.submit(RunRequest("root"))
        assert await ex.wait(third) is RunStatus.SUCCESS


async def test_overlap_queue_starts_the_next_run_when_the_current_one_ends(
    sqlite: Store, tmp_path: Path
) -> None:
    root, started, release = _waiting_job(tmp_path, "queue")
    log = tmp_path / "log.jsonl"
    flow = make_flow([root, py("after", "mark", after=("root",), params={"log": str(log)})])
    async with executor(flow, sqlite) as ex:
        first = await ex.submit(RunRequest("root"))
        await until(started.exists)
        second = await ex.submit(RunRequest("root", params={"n": 2}))
        third = await ex.submit(RunRequest("root", params={"n": 3}))
        # recorded at once, waiting
        assert statuses(sqlite, second) == {"root": RunStatus.PENDING, "after": RunStatus.PENDING}
        started.unlink()
        release.touch()  # every run now finishes at once
        await ex.join()
        assert ex.active_runs == []
        for run in (first, second, third):
            assert await ex.wait(run) is RunStatus.SUCCESS
    windows = [(r["start"], r["end"]) for r in records(log)]
    assert len(windows) == 3 and max_overlap(windows) == 1
    rows = [sqlite.flow_run(i) for i in (first, second, third)]
    starts = [r.started_at for r in rows if r is not None]
    finishes = [r.finished_at for r in rows if r is not None]
    assert starts[1] >= finishes[0] and starts[2] >= finishes[1]  # first in, first out


async def test_overlap_allow_runs_both_at_once(sqlite: Store, tmp_path: Path) -> None:
    release = tmp_path / "release"
    flow = make_flow([py("root", "wait_for_release", overlap="allow")])
    async with executor(flow, sqlite) as ex:
        runs = []
        for n in range(2):
            marker = tmp_path / f"started-{n}"
            params = {"started": str(marker), "release": str(release)}
            runs.append(await ex.submit(RunRequest("root", params=params)))
        await until(lambda: all((tmp_path / f"started-{n}").exists() for n in range(2)))
        release.touch()
        for run in runs:
            assert await ex.wait(run) is RunStatus.SUCCESS


# --- admission --------------------------------------------------------------------------------


def _fan_out(count: int, log: Path, together: int, **fields: Any) -> list[JobNode]:
    """`count` jobs after a root; each waits until `together` of them have started
    (the most that may run at once), so that the limit is reached whatever the load."""
    folder = log.with_suffix(".started")
    folder.mkdir()
    params = {"log": str(log), "seconds": 0.15, "folder": str(folder), "together": together}
    return [py("root", "noop")] + [
        py(f"w{i}", "crowd", after=("root",), params=params, **fields) for i in range(count)
    ]


def _windows(log: Path) -> list[tuple[float, float]]:
    return [(r["start"], r["end"]) for r in records(log)]


async def test_a_pool_bounds_how_many_jobs_run_at_once(sqlite: Store, tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    flow = make_flow(_fan_out(6, log, 2, pool="db"), pools=[PoolNode("db", slots=2)])
    async with executor(flow, sqlite, min_workers=6) as ex:
        flow_run = await ex.submit(RunRequest("root"))
        assert await ex.wait(flow_run) is RunStatus.SUCCESS
    assert len(_windows(log)) == 6
    assert max_overlap(_windows(log)) == 2


async def test_pool_slots_per_job_count_against_the_pool(sqlite: Store, tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    flow = make_flow(_fan_out(4, log, 1, pool="db", pool_slots=2), pools=[PoolNode("db", slots=3)])
    async with executor(flow, sqlite, min_workers=4) as ex:
        await ex.wait(await ex.submit(RunRequest("root")))
    assert max_overlap(_windows(log)) == 1


async def test_the_flows_concurrency_limit_bounds_every_job(sqlite: Store, tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    flow = make_flow(_fan_out(6, log, 3), concurrency=3)
    async with executor(flow, sqlite, min_workers=3) as ex:
        assert ex.concurrency == 3
        await ex.wait(await ex.submit(RunRequest("root")))
    assert max_overlap(_windows(log)) == 3


async def test_cpu_is_admitted_against_the_machines_capacity(sqlite: Store, tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    flow = make_flow(_fan_out(4, log, 2, resources=Resources(cpu=1.5)))
    capacity = Capacity(cpu=3.0, memory=8 << 30)
    async with executor(flow, sqlite, capacity=capacity, min_workers=4) as ex:
        await ex.wait(await ex.submit(RunRequest("root")))
    assert max_overlap(_windows(log)) == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"resources": Resources(cpu=64)}, "needs 64 CPUs and this machine has 2"),
        (
            {"resources": Resources(memory=64 << 30)},
            "needs 64GiB of memory and this machine has 4GiB",
        ),
        ({"pool": "db", "pool_slots": 5}, 'takes 5 slots of pool "db", which has 2'),
    ],
)
async def test_a_job_that_can_never_fit_fails_at_once(
    sqlite: Store, fields: dict[str, Any], message: str
) -> None:
    flow = make_flow(
        [py("big", "noop", retry=RetryPolicy(attempts=3), **fields)], pools=[PoolNode("db", 2)]
    )
    capacity = Capacity(cpu=2.0, memory=4 << 30)
    async with executor(flow, sqlite, capacity=capacity) as ex:
        flow_run = await ex.submit(RunRequest("big"))
        assert await ex.wait(flow_run) is RunStatus.FAILED
    run = job_runs(sqlite, flow_run)["big"]
    (attempt,) = sqlite.attempts(run.id)  # not retried: it can never fit
    assert attempt.status is AttemptStatus.FAILED and attempt.error is not None
    assert attempt.error.message == f'job "big" can never start: the job {message}'
    assert attempt.error.type.endswith("UnschedulableError")


# --- retries ----------------------------------------------------------------------------------


async def test_retries_wait_for_the_backoff(
    sqlite: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "log.jsonl"
    delays: list[float] = []
    retry_delay = executor_module.retry_delay

    def recorded_delay(*args: Any) -> float:
        delay = retry_delay(*args)
        delays.append(delay)
        return delay

    monkeypatch.setattr(executor_module, "retry_delay", recorded_delay)
    retry = RetryPolicy(attempts=4, backoff=Backoff("exponential", 0.1, cap=0.3))
    flow = make_flow(
        [py("flaky", "fail_until", retry=retry, params={"log": str(log), "succeed_on": 4})]
    )
    events: list[RunEvent] = []

    async def notify(event: RunEvent) -> None:
        events.append(event)

    async with executor(flow, sqlite, notify=notify) as ex:
        flow_run = await ex.submit(RunRequest("flaky"))
        assert await ex.wait(flow_run) is RunStatus.SUCCESS
    times = [r["at"] for r in records(log)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert delays == pytest.approx([0.1, 0.2, 0.3])  # capped, not 0.4
    # and waited for (how much longer depends on the machine's load)
    assert [round(g, 1) >= d for g, d in zip(gaps, delays, strict=True)] == [True] * 3
    run = job_runs(sqlite, flow_run)["flaky"]
    assert run.attempts == 4
    assert [a.status for a in sqlite.attempts(run.id)] == [AttemptStatus.FAILED] * 3 + [
        AttemptStatus.SUCCESS
    ]
    await until(lambda: len(events) == 4)
    assert [(e.event, e.attempt) for e in events] == [
        ("retry", 1),
        ("retry", 2),
        ("retry", 3),
        ("success", 4),
    ]
    assert events[0].error == "RuntimeError: attempt 1 fails"


async def test_when_retries_run_out_the_job_run_fails(sqlite: Store) -> None:
    events: list[RunEvent] = []

    async def notify(event: RunEvent) -> None:
        events.append(event)

    retry = RetryPolicy(attempts=2, backoff=Backoff("fixed", 0.01))
    flow = make_flow([py("bad", "fail", retry=retry, params={"message": "no rows"})])
    async with executor(flow, sqlite, notify=notify) as ex:
        flow_run = await ex.submit(RunRequest("bad"))
        assert await ex.wait(flow_run) is RunStatus.FAILED
    await until(lambda: len(events) == 3)
    assert [e.event for e in events] == ["retry", "failure", "retries_exhausted"]
    last = events[-1]
    assert (last.flow, last.job, last.attempt, last.status) == ("tests", "bad", 2, "failed")
    assert last.job_run_id == job_runs(sqlite, flow_run)["bad"].id
    assert last.flow_run_id == flow_run
    assert last.error == "ValueError: no rows"


# --- errors, crashes, timeouts ----------------------------------------------------------------


async def test_an_exception_is_recorded_with_the_function_that_raised_it(sqlite: Store) -> None:
    flow = make_flow([py("bad", "fail", params={"message": "bad row 7"})])
    async with executor(flow, sqlite) as ex:
        flow_run = await ex.submit(RunRequest("bad"))
        await ex.wait(flow_run)
    (attempt,) = sqlite.attempts(job_runs(sqlite, flow_run)["bad"].id)
    error = attempt.error
    assert attempt.status is AttemptStatus.FAILED and error is not None
    assert (error.type, error.message) == ("ValueError", "bad row 7")
    assert error.function == "jobs_for_tests.jobs._raise_value_error"
    source = (HERE / "jobs_for_tests" / "jobs.py").read_text().splitlines()
    path, line = (error.location or "").rsplit(":", 1)
    assert Path(path) == HERE / "jobs_for_tests" / "jobs.py"
    assert source[int(line) - 1].strip() == "raise ValueError(message)"
    assert error.traceback.startswith("Traceback (most recent call last):")
    assert "in fail" in error.traceback and error.traceback.endswith("ValueError: bad row 7\n")
    assert "job_worker.py" not in error.traceback  # the worker's own frames are left out


@pytest.mark.parametrize(
    ("function", "params", "exit_code"),
    [("segfault", {}, -signal.SIGSEGV), ("exit_hard", {"code": 3}, 3)],
)
async def test_a_crashing_worker_fails_the_attempt_not_the_orchestrator(
    sqlite: Store, function: str, params: dict[str, Any], exit_code: int
) -> None:
    flow = make_flow(
        [
            py("crash", function, params=params),
            py("next", "noop", after=("crash",), trigger="all_done"),
        ]
    )
    async with executor(flow, sqlite, concurrency=1) as ex:
        flow_run = await ex.submit(RunRequest("crash"))
        assert await ex.wait(flow_run) is RunStatus.FAILED
        crashed_pid = sqlite.attempts(job_runs(sqlite, flow_run)["crash"].id)[0].pid
        # a fresh worker took over: the job after it ran
        assert statuses(sqlite, flow_run)["next"] is RunStatus.SUCCESS
        again = await ex.submit(RunRequest("next"))
        assert await ex.wait(again) is RunStatus.SUCCESS
    crash = job_runs(sqlite, flow_run)["crash"]
    (attempt,) = sqlite.attempts(crash.id)
    assert attempt.status is AttemptStatus.CRASHED and attempt.exit_code == exit_code
    assert attempt.error is not None and f"(pid {crashed_pid})" in attempt.error.message
    (after,) = sqlite.attempts(job_runs(sqlite, flow_run)["next"].id)
    assert after.pid != crashed_pid
    if function == "segfault":
        assert "was killed by SIGSEGV" in attempt.error.message
        assert attempt.stdout == "about to crash\n"  # output before the crash is kept


async def test_sys_exit_fails_with_its_code_and_the_worker_lives_on(sqlite: Store) -> None:
    flow = make_flow(
        [
            py("exits", "sys_exit", params={"code": 4}),
            py("next", "noop", after=("exits",), trigger="all_done"),
        ]
    )
    async with executor(flow, sqlite, concurrency=1) as ex:
        flow_run = await ex.submit(RunRequest("exits"))
        await ex.wait(flow_run)
    runs = job_runs(sqlite, flow_run)
    (attempt,) = sqlite.attempts(runs["exits"].id)
    assert attempt.status is AttemptStatus.FAILED and attempt.exit_code == 4
    assert attempt.error is not None and attempt.error.type == "SystemExit"
    assert sqlite.attempts(runs["next"].id)[0].pid == attempt.pid


async def test_a_timeout_kills_the_attempts_whole_process_group(
    sqlite: Store, tmp_path: Path
) -> None:
    pids = tmp_path / "pids.json"
    events: list[RunEvent] = []

    async def notify(event: RunEvent) -> None:
        events.append(event)

    flow = make_flow([py("hangs", "spawn_and_hang", timeout=1.0, params={"pids": str(pids)})])
    async with executor(flow, sqlite, notify=notify) as ex:
        started = time.monotonic()
        flow_run = await ex.submit(RunRequest("hangs"))
        assert await ex.wait(flow_run) is RunStatus.FAILED
        # the 1 s timeout, not the job's own end (LIMIT_SECONDS), however loaded the machine
        assert time.monotonic() - started < LIMIT_SECONDS / 2
    worker_pid, child_pid = records_pids(pids)
    await until(lambda: process_gone(worker_pid) and process_gone(child_pid))
    (attempt,) = sqlite.attempts(job_runs(sqlite, flow_run)["hangs"].id)
    assert attempt.status is AttemptStatus.TIMEOUT and attempt.pid == worker_pid
    assert attempt.error is not None
    assert attempt.error.message == "timed out after 1s; its process group was killed"
    await until(lambda: len(events) == 2)
    assert [e.event for e in events] == ["timeout", "failure"]


def records_pids(path: Path) -> tuple[int, int]:
    import json

    first, second = json.loads(path.read_text())
    return int(first), int(second)


# --- what a job sees and writes ---------------------------------------------------------------


async def test_the_context_carries_the_run_and_the_resolved_env(
    sqlite: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "context.json"
    monkeypatch.setenv("TF_TEST_REGION", "eu-west")
    monkeypatch.delenv("TF_TEST_MISSING", raising=False)
    job = py(
        "show",
        "show_context",
        params={"out": str(out), "day": "mon", "limit": 5},
        env={
            "REGION": EnvRef("TF_TEST_REGION"),
            "MODE": EnvRef("TF_TEST_MISSING", "dry"),
            "PLAIN": "yes",
        },
    )
    at = datetime(2026, 1, 31, 23, 0, tzinfo=UTC)
    async with executor(make_flow([job], name="shop"), sqlite) as ex:
        flow_run = await ex.submit(RunRequest("show", TriggerKind.SCHEDULE, at, {"limit": 9}))
        assert await ex.wait(flow_run) is RunStatus.SUCCESS
    import json

    seen = json.loads(out.read_text())
    assert seen == {
        "run_id": job_runs(sqlite, flow_run)["show"].id,
        "flow": "shop",
        "job": "show",
        "attempt": 1,
        "scheduled_at": at.isoformat(),
        "params": {"day": "mon", "limit": 9},  # the run's params over the job's
        "env": {"REGION": "eu-west", "MODE": "dry", "PLAIN": "yes"},
        "os_env": {"REGION": "eu-west", "MODE": "dry", "PLAIN": "yes"},
    }


async def test_output_at_every_level_and_log_records_are_captured(sqlite: Store) -> None:
    flow = make_flow([py("chatty", "chatty")])
    async with executor(flow, sqlite) as ex:
        flow_run = await ex.submit(RunRequest("chatty"))
        assert await ex.wait(flow_run) is RunStatus.SUCCESS
    (attempt,) = sqlite.attempts(job_runs(sqlite, flow_run)["chatty"].id)
    lines = attempt.stdout.splitlines()
    assert {"from print", "from-a-subprocess", "from-c-printf"} <= set(lines)
    assert attempt.stderr == "to stderr\n"
    logs = sqlite.logs(attempt.id)
    assert [(r.level, r.message) for r in logs] == [
        ("INFO", "hello there"),
        ("WARNING", "careful"),
        ("DEBUG", "details"),
    ]
    assert attempt.finished_at is not None
    assert all(attempt.started_at <= r.at <= attempt.finished_at for r in logs)


async def test_each_attempt_has_only_its_own_output(sqlite: Store, tmp_path: Path) -> None:
    flow = make_flow([py("chatty", "chatty"), py("quiet", "noop", after=("chatty",))])
    async with executor(flow, sqlite, concurrency=1) as ex:
        flow_run = await ex.submit(RunRequest("chatty"))
        await ex.wait(flow_run)
    runs = job_runs(sqlite, flow_run)
    (quiet,) = sqlite.attempts(runs["quiet"].id)
    assert quiet.pid == sqlite.attempts(runs["chatty"].id)[0].pid  # same worker, reused
    assert (quiet.stdout, quiet.stderr, sqlite.logs(quiet.id)) == ("", "", [])


async def test_async_callables_and_callables_without_a_context(
    sqlite: Store, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    flow = make_flow(
        [py("a", "async_job", params={"out": str(out)}), py("b", "no_argument", after=("a",))]
    )
    async with executor(flow, sqlite) as ex:
        assert await ex.wait(await ex.submit(RunRequest("a"))) is RunStatus.SUCCESS
    assert out.read_text() == "async ran"


async def test_a_missing_callable_fails_with_the_import_error(sqlite: Store) -> None:
    flow = make_flow([JobNode("ghost", run="jobs_for_tests.nowhere:run")])
    async with executor(flow, sqlite) as ex:
        flow_run = await ex.submit(RunRequest("ghost"))
        await ex.wait(flow_run)
    (attempt,) = sqlite.attempts(job_runs(sqlite, flow_run)["ghost"].id)
    assert attempt.error is not None and attempt.error.type == "ModuleNotFoundError"
    assert "jobs_for_tests.nowhere" in attempt.error.message


async def test_requests_for_unknown_jobs_or_other_flows_are_refused(sqlite: Store) -> None:
    from dataclasses import dataclass

    @dataclass
    class FireRequest:
        flow: str
        job: str
        trigger: str = "schedule"
        scheduled_at: datetime | None = None
        params: dict[str, Any] | None = None
        lateness: float = 0.0

    async with executor(make_flow([py("a", "noop")]), sqlite) as ex:
        with pytest.raises(ValueError, match='flow "tests" has no job "b"'):
            await ex.submit(RunRequest("b"))
        with pytest.raises(ValueError, match='request for flow "other"'):
            await ex.submit(FireRequest("other", "a"))
        flow_run = await ex.submit(FireRequest("tests", "a"))  # the scheduler's shape
        assert await ex.wait(flow_run) is RunStatus.SUCCESS
    row = sqlite.flow_run(flow_run)
    assert row is not None and row.trigger is TriggerKind.SCHEDULE


async def test_the_executor_runs_on_every_store_backend(store: Store, tmp_path: Path) -> None:
    """The same small DAG on SQLite and PostgreSQL (the `store` fixture's backends)."""
    flow = make_flow(
        [
            py("a", "noop"),
            py("b", "fail", after=("a",)),
            py("c", "noop", after=("b",), trigger="one_failed"),
        ]
    )
    async with executor(flow, store) as ex:
        flow_run = await ex.submit(RunRequest("a"))
        assert await ex.wait(flow_run) is RunStatus.FAILED
    assert statuses(store, flow_run) == {
        "a": RunStatus.SUCCESS,
        "b": RunStatus.FAILED,
        "c": RunStatus.SUCCESS,
    }
