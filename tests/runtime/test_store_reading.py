"""The store's answers for the CLI's reading commands (flow runs, why a run failed, pending
trigger requests), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tideflow.runtime.model import AttemptStatus, ErrorInfo, RunStatus, TriggerKind
from tideflow.runtime.store import Store

T0 = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


def fail(store: Store, job_run: int, number: int, message: str) -> None:
    attempt = store.start_attempt(job_run, number)
    store.finish_attempt(
        attempt,
        AttemptStatus.FAILED,
        error=ErrorInfo("ValueError", message, "Traceback ..."),
        job_run_status=RunStatus.RETRYING,
    )


def test_flow_runs_newest_first_filtered_with_their_jobs_counted(store: Store) -> None:
    old = store.create_flow_run("orders", "extract", TriggerKind.SCHEDULE, scheduled_at=T0)
    store.create_job_runs(old, "orders", ["extract", "load"], TriggerKind.SCHEDULE)
    store.set_flow_run_status(old, RunStatus.SUCCESS)
    new = store.create_flow_run("orders", "load", TriggerKind.MANUAL, params={"day": "mon"})
    ids = store.create_job_runs(new, "orders", ["load"], TriggerKind.MANUAL)
    store.set_job_run_status(ids["load"], RunStatus.FAILED)
    store.set_flow_run_status(new, RunStatus.FAILED)
    other = store.create_flow_run("billing", "close", TriggerKind.MANUAL)

    assert [r.id for r in store.flow_runs()] == [other, new, old]
    assert [r.id for r in store.flow_runs(flow="orders")] == [new, old]
    (failed,) = store.flow_runs(status=RunStatus.FAILED)
    assert (failed.id, failed.root_job, failed.params) == (new, "load", {"day": "mon"})
    assert [r.id for r in store.flow_runs(status=[RunStatus.SUCCESS, RunStatus.FAILED])] == [
        new,
        old,
    ]
    assert store.flow_runs(since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert len(store.flow_runs(limit=1)) == 1
    assert store.job_run_counts([old, new, other]) == {
        old: {RunStatus.PENDING: 2},
        new: {RunStatus.FAILED: 1},
    }
    assert store.job_run_counts([]) == {}


def test_last_errors_are_each_runs_newest_failed_attempt(store: Store) -> None:
    flow_run = store.create_flow_run("orders", "extract", TriggerKind.SCHEDULE)
    ids = store.create_job_runs(flow_run, "orders", ["extract", "load"], TriggerKind.SCHEDULE)
    fail(store, ids["extract"], 1, "first")
    fail(store, ids["extract"], 2, "second")
    fine = store.start_attempt(ids["extract"], 3)
    store.finish_attempt(fine, AttemptStatus.SUCCESS, job_run_status=RunStatus.SUCCESS)
    errors = store.last_errors([ids["extract"], ids["load"]])
    assert list(errors) == [ids["extract"]]  # `load` never failed
    assert errors[ids["extract"]].message == "second"
    assert store.last_errors([]) == {}


def test_pending_requests_can_be_withdrawn_until_one_is_claimed(store: Store) -> None:
    first = store.request_trigger("orders", "extract", params={"n": 1}, requested_by="ops@h")
    second = store.request_trigger("orders", "load")
    other = store.request_trigger("billing", "close")
    assert [r.id for r in store.pending_trigger_requests()] == [first, second, other]
    (pending, _) = store.pending_trigger_requests("orders")
    assert (pending.job, pending.params, pending.requested_by) == ("extract", {"n": 1}, "ops@h")

    assert store.withdraw_trigger_request(first)
    assert not store.withdraw_trigger_request(first)  # gone
    assert [r.id for r in store.claim_trigger_requests(["orders"], 1)] == [second]  # not first
    assert not store.withdraw_trigger_request(second)  # an orchestrator has it
    assert [r.id for r in store.pending_trigger_requests()] == [other]
