"""Flow runs and job runs: creating them, their states, cancelling, and reading them back."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from tideflow.runtime.model import FlowRunRow, JobRunRow, RunStatus, TriggerKind

from . import tables as t
from .base import StoreBase, inserted_id, utcnow
from .rows import flow_run_of, job_run_of

__all__ = ["RunQueries"]

_IDS_PER_STATEMENT: Final = 5000  # PostgreSQL takes at most 65,535 parameters


class RunQueries(StoreBase):
    def create_flow_run(
        self,
        flow: str,
        root_job: str,
        trigger: TriggerKind,
        *,
        scheduled_at: datetime | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> int:
        with self._write_one() as conn:
            result = conn.execute(
                sa.insert(t.flow_runs).values(
                    flow=flow,
                    root_job=root_job,
                    trigger=str(trigger),
                    status=str(RunStatus.PENDING),
                    scheduled_at=scheduled_at,
                    created_at=utcnow(),
                    params=dict(params or {}),
                )
            )
            return inserted_id(result)

    def create_job_runs(
        self,
        flow_run_id: int,
        flow: str,
        jobs: Sequence[str],
        trigger: TriggerKind,
        *,
        scheduled_at: datetime | None = None,
    ) -> dict[str, int]:
        """One pending job run per job of a flow run, in one transaction; ids by job."""
        if not jobs:
            return {}
        now = utcnow()
        runs = t.job_runs
        if self.postgres:  # one statement whatever the number of jobs: one round trip
            params = {
                "v_flow_run_id": flow_run_id,
                "v_flow": flow,
                "v_jobs": list(jobs),
                "v_trigger": str(trigger),
                "v_status": str(RunStatus.PENDING),
                "v_scheduled_at": scheduled_at,
                "v_created_at": now,
            }
            with self._write_one() as conn:
                inserted = conn.execute(_JOB_RUNS_OF_AN_ARRAY, params).all()
        else:
            rows = [
                {
                    "flow_run_id": flow_run_id,
                    "flow": flow,
                    "job": job,
                    "trigger": str(trigger),
                    "status": str(RunStatus.PENDING),
                    "scheduled_at": scheduled_at,
                    "created_at": now,
                    "attempts": 0,
                    "cancel_requested": False,
                }
                for job in jobs
            ]
            with self._write() as conn:  # multi-row INSERTs (SQLAlchemy's insertmanyvalues)
                inserted = conn.execute(
                    sa.insert(runs).returning(runs.c.id, runs.c.job), rows
                ).all()
        return {row.job: int(row.id) for row in inserted}

    def set_flow_run_status(
        self, flow_run_id: int, status: RunStatus, at: datetime | None = None
    ) -> None:
        at = at or utcnow()
        values: dict[str, Any] = {"status": str(status)}
        if status is RunStatus.RUNNING:
            values["started_at"] = at
        elif status.finished:
            values["finished_at"] = at
        with self._write_one() as conn:
            conn.execute(
                sa.update(t.flow_runs).where(t.flow_runs.c.id == flow_run_id).values(**values)
            )

    def set_job_run_status(
        self,
        job_run_id: int,
        status: RunStatus,
        at: datetime | None = None,
        *,
        note: str | None = None,
    ) -> None:
        """Set a job run's state; `note` says why when it ends without an attempt."""
        at = at or utcnow()
        values: dict[str, Any] = {"status": str(status)}
        if status.finished:
            values["finished_at"] = at
        if note is not None:
            values["note"] = note
        with self._write_one() as conn:
            conn.execute(
                sa.update(t.job_runs).where(t.job_runs.c.id == job_run_id).values(**values)
            )

    def unfinished_flow_runs(self, flows: Sequence[str]) -> list[FlowRunRow]:
        """Flow runs of these flows that have not finished, oldest first (to resume them
        at start-up: runs whose jobs waited for dependencies, backoffs or slots)."""
        finished = [str(s) for s in RunStatus if s.finished]
        runs = t.flow_runs
        query = (
            sa.select(runs)
            .where(runs.c.flow.in_(list(flows)), runs.c.status.not_in(finished))
            .order_by(runs.c.id)
        )
        with self._read() as conn:
            return [flow_run_of(r) for r in conn.execute(query)]

    def mark_queued(self, job_run_ids: Iterable[int]) -> None:
        """Mark job runs that wait for a slot `queued`: those still pending or retrying
        (one that started or ended in the meantime keeps its status). One statement for
        them all: a fan-out queues hundreds at once."""
        ids = list(job_run_ids)
        waiting = [str(RunStatus.PENDING), str(RunStatus.RETRYING)]
        runs = t.job_runs
        for start in range(0, len(ids), _IDS_PER_STATEMENT):
            with self._write_one() as conn:
                conn.execute(
                    sa.update(runs)
                    .where(
                        runs.c.id.in_(ids[start : start + _IDS_PER_STATEMENT]),
                        runs.c.status.in_(waiting),
                    )
                    .values(status=str(RunStatus.QUEUED))
                )

    def request_cancel(self, job_run_id: int) -> bool:
        """Ask the orchestrator to cancel a run; False when it has finished already."""
        finished = [str(s) for s in RunStatus if s.finished]
        with self._write_one() as conn:
            result = conn.execute(
                sa.update(t.job_runs)
                .where(
                    t.job_runs.c.id == job_run_id,
                    t.job_runs.c.status.not_in(finished),
                )
                .values(cancel_requested=True)
            )
            return bool(result.rowcount)

    def cancel_requests(self, job_run_ids: Iterable[int]) -> set[int]:
        ids = list(job_run_ids)
        if not ids:
            return set()
        with self._read() as conn:
            rows = conn.execute(
                sa.select(t.job_runs.c.id).where(
                    t.job_runs.c.id.in_(ids), t.job_runs.c.cancel_requested.is_(True)
                )
            ).all()
        return {r.id for r in rows}

    def job_runs(
        self,
        *,
        flow: str | None = None,
        job: str | None = None,
        status: RunStatus | Sequence[RunStatus] | None = None,
        since: datetime | None = None,
        flow_run_id: int | None = None,
        limit: int | None = 100,
    ) -> list[JobRunRow]:
        """Job runs, newest first."""
        runs = t.job_runs
        query = _newest_runs(runs, flow=flow, status=status, since=since, limit=limit)
        if job is not None:
            query = query.where(runs.c.job == job)
        if flow_run_id is not None:
            query = query.where(runs.c.flow_run_id == flow_run_id)
        with self._read() as conn:
            return [job_run_of(r) for r in conn.execute(query)]

    def finished_job_runs(self, flow: str, job: str, *, after: datetime) -> list[JobRunRow]:
        """Runs of a job that finished after `after`, in the order they finished."""
        runs = t.job_runs
        query = (
            sa.select(runs)
            .where(runs.c.flow == flow, runs.c.job == job, runs.c.finished_at > after)
            .order_by(runs.c.finished_at, runs.c.id)
        )
        with self._read() as conn:
            return [job_run_of(r) for r in conn.execute(query)]

    def job_run(self, job_run_id: int) -> JobRunRow | None:
        with self._read() as conn:
            row = conn.execute(sa.select(t.job_runs).where(t.job_runs.c.id == job_run_id)).first()
        return job_run_of(row) if row else None

    def flow_run(self, flow_run_id: int) -> FlowRunRow | None:
        with self._read() as conn:
            row = conn.execute(
                sa.select(t.flow_runs).where(t.flow_runs.c.id == flow_run_id)
            ).first()
        return flow_run_of(row) if row else None

    def flow_runs(
        self,
        *,
        flow: str | None = None,
        status: RunStatus | Sequence[RunStatus] | None = None,
        since: datetime | None = None,
        limit: int | None = 100,
    ) -> list[FlowRunRow]:
        """Flow runs, newest first."""
        query = _newest_runs(t.flow_runs, flow=flow, status=status, since=since, limit=limit)
        with self._read() as conn:
            return [flow_run_of(r) for r in conn.execute(query)]

    def job_run_counts(self, flow_run_ids: Iterable[int]) -> dict[int, dict[RunStatus, int]]:
        """Each flow run's job runs counted by status."""
        ids = list(flow_run_ids)
        if not ids:
            return {}
        runs = t.job_runs
        query = (
            sa.select(runs.c.flow_run_id, runs.c.status, sa.func.count())
            .where(runs.c.flow_run_id.in_(ids))
            .group_by(runs.c.flow_run_id, runs.c.status)
        )
        counts: dict[int, dict[RunStatus, int]] = {}
        with self._read() as conn:
            for flow_run_id, status, n in conn.execute(query):
                counts.setdefault(int(flow_run_id), {})[RunStatus(status)] = int(n)
        return counts

    def status_counts(
        self, *, flow: str | None = None, since: datetime | None = None
    ) -> dict[tuple[str, str, RunStatus], int]:
        """Job runs counted by (flow, job, status), optionally since a time."""
        runs = t.job_runs
        query = sa.select(runs.c.flow, runs.c.job, runs.c.status, sa.func.count()).group_by(
            runs.c.flow, runs.c.job, runs.c.status
        )
        if flow is not None:
            query = query.where(runs.c.flow == flow)
        if since is not None:
            query = query.where(runs.c.created_at >= since)
        with self._read() as conn:
            return {(r[0], r[1], RunStatus(r[2])): int(r[3]) for r in conn.execute(query)}

    def last_job_runs(self, flow: str) -> dict[str, JobRunRow]:
        """The newest job run of each job of a flow."""
        runs = t.job_runs
        newest = (
            sa.select(sa.func.max(runs.c.id).label("id"))
            .where(runs.c.flow == flow)
            .group_by(runs.c.job)
            .subquery()
        )
        query = sa.select(runs).join(newest, newest.c.id == runs.c.id)
        with self._read() as conn:
            return {r.job: job_run_of(r) for r in conn.execute(query)}


def _newest_runs(
    runs: sa.Table,
    *,
    flow: str | None,
    status: RunStatus | Sequence[RunStatus] | None,
    since: datetime | None,
    limit: int | None,
) -> sa.Select[Any]:
    """Rows of a table of runs (flow runs, job runs), newest first, filtered as the
    reading commands filter them; callers may add conditions of their own."""
    query = sa.select(runs).order_by(runs.c.created_at.desc(), runs.c.id.desc())
    if flow is not None:
        query = query.where(runs.c.flow == flow)
    if status is not None:
        wanted = [status] if isinstance(status, RunStatus) else list(status)
        query = query.where(runs.c.status.in_([str(s) for s in wanted]))
    if since is not None:
        query = query.where(runs.c.created_at >= since)
    return query.limit(limit) if limit is not None else query


def _job_runs_of_an_array() -> sa.Insert:
    """PostgreSQL: INSERT INTO job_runs (...) SELECT ..., job, ... FROM unnest(:jobs)
    RETURNING id, job: the job runs of a flow run in one statement of seven parameters,
    in the order of the jobs. (A row of parameters per job took SQLAlchemy and the
    server 20 to 50 times longer for 500 jobs.)"""
    runs = t.job_runs
    jobs = (
        sa.func.unnest(sa.bindparam("v_jobs", type_=sa.ARRAY(runs.c.job.type)))
        .table_valued("job", with_ordinality="n")
        .render_derived(name="jobs")
    )

    def bind(column: str) -> sa.BindParameter[Any]:
        return sa.bindparam(f"v_{column}", type_=runs.c[column].type)

    rows = sa.select(
        bind("flow_run_id"),
        bind("flow"),
        jobs.c.job,
        bind("trigger"),
        bind("status"),
        bind("scheduled_at"),
        bind("created_at"),
        sa.literal(0, type_=runs.c.attempts.type),
        sa.false(),
    ).order_by(jobs.c.n)
    columns = ["flow_run_id", "flow", "job", "trigger", "status", "scheduled_at", "created_at"]
    return (
        sa.insert(runs)
        .from_select([*columns, "attempts", "cancel_requested"], rows)
        .returning(runs.c.id, runs.c.job)
    )


_JOB_RUNS_OF_AN_ARRAY: Final = _job_runs_of_an_array()
