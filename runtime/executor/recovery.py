"""Resuming flow runs after the orchestrator stopped: from the run history to the
executor's state again.

An attempt found lost at start-up (`Store.mark_lost`) counts as a failed one: its
job run is retried per its policy (after the policy's backoff) or, with no
attempts left, fails. Flow runs that had no attempt running (jobs waiting for
dependencies, a backoff or a slot) are resumed too. The rest of each flow run
goes on as if the orchestrator had never stopped.
"""

from __future__ import annotations

import collections
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence

from tideflow.compiler.ir import JobNode
from tideflow.runtime.dag import RunPlan
from tideflow.runtime.model import AttemptRow, AttemptStatus, RunStatus
from tideflow.runtime.retry import attempts_left, retry_delay
from tideflow.runtime.store import Store

from .state import FlowRunState, JobRunState

__all__ = ["LOST", "Emit", "lost_by_flow_run", "restore", "settle_lost"]

log = logging.getLogger("tideflow.executor")

#: The error summary of an attempt found lost.
LOST = "the orchestrator stopped while the attempt ran"

#: emit(event, job_run, attempt number, status, error): tell the notifiers.
Emit = Callable[[str, JobRunState, int, AttemptStatus, str], None]


def lost_by_flow_run(
    store: Store, flow: str, lost: Sequence[AttemptRow], unfinished: Iterable[int]
) -> dict[int, list[AttemptRow]]:
    """The flow runs of `flow` to resume, each with the newest lost attempt of each
    of its job runs (none for the `unfinished` flow runs that had none)."""
    newest: dict[int, AttemptRow] = {}
    for attempt in lost:
        known = newest.get(attempt.job_run_id)
        if known is None or attempt.number > known.number:
            newest[attempt.job_run_id] = attempt
    by_flow_run: dict[int, list[AttemptRow]] = collections.defaultdict(list)
    for job_run_id, attempt in newest.items():
        row = store.job_run(job_run_id)
        if row is None or row.flow != flow:
            continue
        by_flow_run[row.flow_run_id].append(attempt)
    for flow_run_id in unfinished:
        by_flow_run.setdefault(flow_run_id, [])
    return by_flow_run


def restore(
    store: Store,
    flow: str,
    jobs: Mapping[str, JobNode],
    plan_of: Callable[[str], RunPlan],
    flow_run_id: int,
) -> FlowRunState | None:
    """The state of a flow run as the store has it, with job runs created for jobs
    its plan gained; None (and the run ended `failed`) when its root job is gone."""
    row = store.flow_run(flow_run_id)
    if row is None:
        return None
    rows = {r.job: r for r in store.job_runs(flow_run_id=flow_run_id, limit=None)}
    if row.root_job not in jobs:
        for job_row in rows.values():
            if not job_row.status.finished:
                store.set_job_run_status(job_row.id, RunStatus.FAILED)
        store.set_flow_run_status(flow_run_id, RunStatus.FAILED)
        log.warning(
            'flow run %d cannot be resumed: job "%s" is no longer in flow "%s"',
            flow_run_id,
            row.root_job,
            flow,
        )
        return None
    plan = plan_of(row.root_job)
    for name, job_row in rows.items():
        if name not in plan.jobs and not job_row.status.finished:
            store.set_job_run_status(job_row.id, RunStatus.CANCELLED)
            log.warning(
                'job run %d cancelled: job "%s" is no longer part of this run', job_row.id, name
            )
    missing = [name for name in plan.jobs if name not in rows]
    created = (
        store.create_job_runs(
            flow_run_id, flow, missing, row.trigger, scheduled_at=row.scheduled_at
        )
        if missing
        else {}
    )
    states: dict[str, JobRunState] = {}
    for name in plan.jobs:
        if name in created:
            states[name] = JobRunState(jobs[name], created[name])
            continue
        job_row = rows[name]
        job_run = JobRunState(jobs[name], job_row.id, job_row.status)
        job_run.attempts = job_row.attempts
        if not job_row.status.finished and job_row.status is not RunStatus.PENDING:
            job_run.resume = True  # it had started: carry on with its next attempt
        states[name] = job_run
    return FlowRunState(flow_run_id, plan, states, row.trigger, row.scheduled_at, row.params)


def settle_lost(
    store: Store,
    run: FlowRunState,
    lost: Sequence[AttemptRow],
    rng: random.Random,
    emit: Emit,
    failed: Callable[[JobRunState], None],
) -> None:
    """Count each lost attempt of `run` as failed: its job run retries after its
    policy's backoff or, with no attempts left, fails (`failed(job_run)` marks it
    finished). Each is notified as `lost` (then `failure`, `retries_exhausted`)."""
    lost_by_id = {a.job_run_id: a for a in lost}
    for job_run in run.jobs.values():
        attempt = lost_by_id.get(job_run.id)
        if attempt is None:
            continue
        job_run.attempts = max(job_run.attempts, attempt.number)
        emit("lost", job_run, attempt.number, AttemptStatus.LOST, LOST)
        policy = job_run.node.retry
        if attempts_left(attempt.number, policy):
            job_run.resume = True
            job_run.delay = retry_delay(attempt.number, policy, rng)
            job_run.status = RunStatus.RETRYING
            store.set_job_run_status(job_run.id, RunStatus.RETRYING)
        else:
            job_run.started = True
            store.set_job_run_status(job_run.id, RunStatus.FAILED)
            failed(job_run)
            emit("failure", job_run, attempt.number, AttemptStatus.LOST, LOST)
            if policy.attempts > 1:
                emit("retries_exhausted", job_run, attempt.number, AttemptStatus.LOST, LOST)
