"""The executor driver running jobs on an executor *plugin*: the built-in `local`
executor with `isolate = true` (each attempt a fresh process through the plugin
interface, as Dask and Kubernetes attempts go). Real processes, history in SQLite.

What a remote executor adds (re-attaching after a restart, a worker that dies) is
tested against a real Dask cluster in tests/e2e/test_dask_executor.py."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tideflow.compiler.ir import (
    EdgeKind,
    ExecutorNode,
    FlowInfo,
    FlowIR,
    JobNode,
    RetryPolicy,
    SecretRef,
    node_id,
)
from tideflow.runtime.executor import Executor, RunRequest
from tideflow.runtime.model import AttemptStatus, RunStatus
from tideflow.runtime.store import Store

from .jobs_for_tests.harness import process_gone, until

pytestmark = pytest.mark.anyio
HERE = Path(__file__).resolve().parent
JOBS = "jobs_for_tests.jobs"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def workers_import_test_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(HERE))


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        yield store


def isolated_flow(*jobs: JobNode, after: tuple[tuple[str, str], ...] = ()) -> FlowIR:
    flow = FlowIR(FlowInfo(name="iso", source=""))
    flow.add(ExecutorNode("iso", "local", {"isolate": True}))
    for job in jobs:
        flow.add(job)
    for child, parent in after:
        flow.connect(node_id("job", child), node_id("job", parent), EdgeKind.DEPENDS_ON)
    return flow


def on_iso(name: str, function: str, **fields: object) -> JobNode:
    return JobNode(name, run=f"{JOBS}:{function}", executor="iso", **fields)  # type: ignore[arg-type]


async def test_attempts_run_through_the_plugin_and_record_what_a_local_one_does(
    sqlite: Store, tmp_path: Path
) -> None:
    log = tmp_path / "pids.jsonl"
    flow = isolated_flow(
        on_iso("first", "chatty"),
        on_iso("second", "pid", params={"log": str(log)}),
        JobNode("third", command=("sh", "-c", "echo from a command"), executor="iso"),
        after=(("second", "first"), ("third", "second")),
    )
    async with Executor(flow, sqlite, kill_grace=0.5) as executor:
        flow_run = await executor.submit(RunRequest("first"))
        assert await executor.wait(flow_run) is RunStatus.SUCCESS
    runs = {r.job: r for r in sqlite.job_runs(flow_run_id=flow_run, limit=None)}
    (chatty,) = sqlite.attempts(runs["first"].id)
    assert chatty.status is AttemptStatus.SUCCESS
    assert chatty.executor == "iso"
    assert chatty.executor_ref and chatty.executor_where
    assert "from print" in chatty.stdout
    assert "from-c-printf" in chatty.stdout
    assert "to stderr" in chatty.stderr
    lines = [(line.level, line.message) for line in sqlite.logs(chatty.id)]
    assert ("INFO", "hello there") in lines
    assert ("WARNING", "careful") in lines
    # a fresh process per attempt: not this test's process, not a pooled worker
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["pid"] != os.getpid()
    (command,) = sqlite.attempts(runs["third"].id)
    assert "from a command" in command.stdout


async def test_a_failure_keeps_its_exception_and_the_retry_policy_decides(
    sqlite: Store,
) -> None:
    flow = isolated_flow(on_iso("a", "fail", retry=RetryPolicy(attempts=2)))
    async with Executor(flow, sqlite, kill_grace=0.5) as executor:
        flow_run = await executor.submit(RunRequest("a"))
        assert await executor.wait(flow_run) is RunStatus.FAILED
    (run,) = sqlite.job_runs(flow_run_id=flow_run, limit=None)
    attempts = sqlite.attempts(run.id)
    assert [a.status for a in attempts] == [AttemptStatus.FAILED, AttemptStatus.FAILED]
    error = attempts[-1].error
    assert error is not None and error.type == "ValueError"
    assert error.function == f"{JOBS}._raise_value_error"
    assert "raise ValueError" in error.traceback


async def test_the_timeout_kills_the_attempt_and_what_it_started(
    sqlite: Store, tmp_path: Path
) -> None:
    pids = tmp_path / "pids.json"
    flow = isolated_flow(on_iso("hang", "spawn_and_hang", params={"pids": str(pids)}, timeout=2.0))
    async with Executor(flow, sqlite, kill_grace=0.5) as executor:
        flow_run = await executor.submit(RunRequest("hang"))
        await until(pids.exists, what="the job wrote its pids")
        assert await executor.wait(flow_run) is RunStatus.FAILED
    (run,) = sqlite.job_runs(flow_run_id=flow_run, limit=None)
    (attempt,) = sqlite.attempts(run.id)
    assert attempt.status is AttemptStatus.TIMEOUT
    assert attempt.error is not None and "timed out after 2s" in attempt.error.message
    for pid in json.loads(pids.read_text()):
        await until(lambda pid=pid: process_gone(pid), what=f"process {pid} killed")


async def test_a_cancellation_stops_a_running_attempt(sqlite: Store, tmp_path: Path) -> None:
    pids = tmp_path / "pids.json"
    flow = isolated_flow(on_iso("hang", "spawn_and_hang", params={"pids": str(pids)}))
    async with Executor(flow, sqlite, kill_grace=0.5, cancel_poll=0.05) as executor:
        flow_run = await executor.submit(RunRequest("hang"))
        await until(pids.exists, what="the job wrote its pids")
        (run,) = sqlite.job_runs(flow_run_id=flow_run, limit=None)
        sqlite.request_cancel(run.id)
        assert await executor.wait(flow_run) is RunStatus.CANCELLED
    (attempt,) = sqlite.attempts(run.id)
    assert attempt.status is AttemptStatus.CANCELLED
    for pid in json.loads(pids.read_text()):
        await until(lambda pid=pid: process_gone(pid), what=f"process {pid} killed")


async def test_secret_values_never_reach_the_store(
    sqlite: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_TEST_TOKEN", "hunter2-isolated")
    flow = isolated_flow(on_iso("leak", "leak_secret", env={"TOKEN": SecretRef("TF_TEST_TOKEN")}))
    async with Executor(flow, sqlite, kill_grace=0.5) as executor:
        flow_run = await executor.submit(RunRequest("leak"))
        assert await executor.wait(flow_run) is RunStatus.FAILED
    (run,) = sqlite.job_runs(flow_run_id=flow_run, limit=None)
    (attempt,) = sqlite.attempts(run.id)
    stored = [attempt.stdout, attempt.stderr]
    assert attempt.error is not None
    stored += [attempt.error.message, attempt.error.traceback]
    stored += [line.message for line in sqlite.logs(attempt.id)]
    assert "token is [secret]" in attempt.stdout
    assert not any("hunter2-isolated" in text for text in stored)


async def test_a_missing_secret_fails_the_attempt_without_a_retry(sqlite: Store) -> None:
    flow = isolated_flow(
        on_iso(
            "needs",
            "noop",
            env={"TOKEN": SecretRef("TF_TEST_NOT_SET_ANYWHERE")},
            retry=RetryPolicy(attempts=3),
        )
    )
    async with Executor(flow, sqlite, kill_grace=0.5) as executor:
        flow_run = await executor.submit(RunRequest("needs"))
        assert await executor.wait(flow_run) is RunStatus.FAILED
    (run,) = sqlite.job_runs(flow_run_id=flow_run, limit=None)
    (attempt,) = sqlite.attempts(run.id)
    assert attempt.error is not None and "TF_TEST_NOT_SET_ANYWHERE" in attempt.error.message
