"""The leader lease and the fence, on SQLite and on the real PostgreSQL: who holds the
lease, how the token grows, and that every write acting on the world checks it."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tideflow.compiler.ir import JobNode
from tideflow.runtime.executor import Executor, RunRequest
from tideflow.runtime.model import AttemptStatus, RunStatus, ScaleDecisionRow, TriggerKind
from tideflow.runtime.store import Fence, FencedError, Store, StoreError, lease_key

from .jobs_for_tests.flows import make_flow
from .jobs_for_tests.harness import process_gone

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def test_one_holder_at_a_time_and_the_token_grows_at_each_change(store: Store) -> None:
    first = store.acquire_lease("demo", 1, 30.0)
    assert first is not None and first.new_term and first.token == 1
    assert store.acquire_lease("demo", 2, 30.0) is None  # held and not expired
    again = store.acquire_lease("demo", 1, 30.0)  # the holder renews: same term
    assert again is not None and again.token == 1 and not again.new_term
    assert store.renew_lease("demo", 1, 1, 30.0)
    assert not store.renew_lease("demo", 2, 1, 30.0)
    assert store.release_lease("demo", 1, 1)
    second = store.acquire_lease("demo", 2, 30.0)
    assert second is not None and second.token == 2 and second.new_term
    assert second.previous_holder == 1 and second.released
    assert not store.renew_lease("demo", 1, 1, 30.0)  # the old term is over


def test_an_expired_lease_is_taken_over_by_the_database_clock(store: Store) -> None:
    assert store.acquire_lease("demo", 1, 0.2) is not None
    deadline = time.monotonic() + 30
    taken = None
    while taken is None:
        assert time.monotonic() < deadline, "the lease never expired"
        taken = store.acquire_lease("demo", 2, 30.0)
        time.sleep(0.05)
    assert taken.token == 2 and taken.previous_holder == 1 and not taken.released
    state = store.lease("demo")
    assert state is not None and state.holder == 2 and state.led
    assert state.previous_expires_at is not None
    assert state.previous_expires_at <= state.acquired_at


def test_writes_that_act_check_the_fence(store: Store) -> None:
    old = store.acquire_lease("demo", 1, 30.0)
    assert old is not None
    store.fence = Fence("demo", old.token, 1)
    refused: list[Fence] = []
    store.on_fenced = refused.append
    assert store.record_fires("demo", [("tick", T0)]) == [True]
    store.release_lease("demo", 1, old.token)
    new = store.acquire_lease("demo", 2, 30.0)
    assert new is not None

    with pytest.raises(FencedError):
        store.record_fire("demo", "tick", T0 + timedelta(seconds=1))
    assert store.last_fired("demo") == {"tick": T0}  # nothing written
    flow_run = store.create_flow_run(
        "demo", "tick", TriggerKind.SCHEDULE, scheduled_at=T0, params={}
    )
    job_run = store.create_job_runs(flow_run, "demo", ["tick"], TriggerKind.SCHEDULE)["tick"]
    with pytest.raises(FencedError):
        store.start_attempt(job_run, 1)
    assert store.attempts(job_run) == []
    with pytest.raises(FencedError):
        store.record_decision(_decision())
    assert store.decisions() == []
    store.request_trigger("demo", "tick")
    assert store.claim_trigger_requests(["demo"], 1) == []  # taken by nobody
    assert len(refused) == 3 and isinstance(refused[0], Fence)

    store.fence = Fence("demo", new.token, 2)
    assert store.record_fire("demo", "tick", T0 + timedelta(seconds=1))
    assert store.start_attempt(job_run, 1) > 0
    assert store.record_decision(_decision()) > 0
    assert [r.job for r in store.claim_trigger_requests(["demo"], 2)] == ["tick"]
    store.fence = None  # unfenced: the single-orchestrator paths, tests, the CLI
    assert store.record_fire("demo", "tick", T0 + timedelta(seconds=2))


def test_marking_attempts_lost_is_fenced(store: Store) -> None:
    grant = store.acquire_lease("demo", 1, 30.0)
    assert grant is not None
    flow_run = store.create_flow_run(
        "demo", "tick", TriggerKind.SCHEDULE, scheduled_at=T0, params={}
    )
    job_run = store.create_job_runs(flow_run, "demo", ["tick"], TriggerKind.SCHEDULE)["tick"]
    store.start_attempt(job_run, 1, orchestrator_id=1)
    store.fence = Fence("demo", grant.token + 1, 2)  # a token the lease never had
    with pytest.raises(FencedError):
        store.mark_lost(["demo"], except_orchestrator=2)
    store.fence = Fence("demo", grant.token, 1)
    assert [a.job_run_id for a in store.mark_lost(["demo"], except_orchestrator=2)] == [job_run]


def test_an_in_memory_sqlite_store_cannot_hold_a_shared_lease() -> None:
    with Store.open("sqlite://") as store, pytest.raises(StoreError, match="in-memory"):
        store.check_lease_support()


def test_the_lease_key_is_the_sorted_flow_names() -> None:
    assert lease_key(["billing", "audit"]) == lease_key(("audit", "billing")) == "audit,billing"


def _decision() -> ScaleDecisionRow:
    return ScaleDecisionRow(
        flow="demo",
        consumer="workers",
        taken_at=T0,
        backlog=10,
        per_partition={},
        partitions=1,
        reading_error=None,
        current=1,
        desired=2,
        applied=True,
        reason="backlog",
        explanation="10 / 5",
        rule={},
    )


@pytest.mark.anyio
async def test_a_deposed_leaders_executor_runs_no_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    """The fence refuses the attempt's record: the worker that had been handed the job
    is killed, and no attempt exists."""
    here = Path(__file__).resolve().parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(here))
    started, release = tmp_path / "started", tmp_path / "release"
    params = {"started": str(started), "release": str(release)}
    flow = make_flow([JobNode("slow", run="jobs_for_tests.jobs:wait_for_release", params=params)])
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        old = store.acquire_lease("demo", 1, 30.0)
        assert old is not None
        store.release_lease("demo", 1, old.token)
        assert store.acquire_lease("demo", 2, 30.0) is not None
        store.fence = Fence("demo", old.token, 1)  # deposed: another leads now
        async with Executor(flow, store, kill_grace=0.5) as executor:
            flow_run = await executor.submit(RunRequest("slow"))
            await executor.wait(flow_run)
            assert not executor.pool.busy, "the worker handed the job was left running it"
        (job_run,) = store.job_runs(flow_run_id=flow_run, limit=None)
        assert store.attempts(job_run.id) == []
    if started.exists():  # the worker had begun it: it was killed, not left running
        deadline = time.monotonic() + 20
        while not process_gone(int(started.read_text())):
            assert time.monotonic() < deadline, "the attempt's process still runs"
            await asyncio.sleep(0.05)
    assert not release.exists()


@pytest.mark.anyio
async def test_a_deposed_leaders_executor_abandons_its_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    """`abandon()` kills the attempt's process and records nothing: the attempt stays
    `running` in the history for the new leader to mark lost and retry."""
    here = Path(__file__).resolve().parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(here))
    started, release = tmp_path / "started", tmp_path / "release"
    params = {"started": str(started), "release": str(release)}
    flow = make_flow(
        [
            JobNode("slow", run="jobs_for_tests.jobs:wait_for_release", params=params),
            JobNode("next", run="jobs_for_tests.jobs:noop", after=("slow",)),
        ]
    )
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        executor = Executor(flow, store, kill_grace=0.5)
        executor.start()
        flow_run = await executor.submit(RunRequest("slow"))
        deadline = time.monotonic() + 20
        while not started.exists():
            assert time.monotonic() < deadline, "the attempt never started"
            await asyncio.sleep(0.02)
        pid = int(started.read_text())
        await executor.abandon()
        deadline = time.monotonic() + 20
        while not process_gone(pid):
            assert time.monotonic() < deadline, "the attempt's process still runs"
            await asyncio.sleep(0.05)
        jobs = {r.job: r for r in store.job_runs(flow_run_id=flow_run, limit=None)}
        assert jobs["slow"].status is RunStatus.RUNNING
        assert jobs["next"].status is RunStatus.PENDING
        (attempt,) = store.attempts(jobs["slow"].id)
        assert attempt.status is AttemptStatus.RUNNING and attempt.finished_at is None
        assert store.flow_run(flow_run) is not None
        assert [a.id for a in store.mark_lost(["tests"])] == [attempt.id]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
