"""Reads of the run history that the dashboard and /metrics need and `Store` does not offer.

Each is one bounded query on the store's tables (`runtime.tables`), on the
store's engine; nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from tideflow.runtime import tables as t
from tideflow.runtime.model import InstanceRow
from tideflow.runtime.store import Store, utcnow

from .models import OrchestratorInfo, TriggerRequestInfo

__all__ = [
    "FinishedAttempt",
    "FirstStart",
    "applied_decisions",
    "consumers_seen",
    "finished_attempts",
    "first_starts",
    "orchestrators",
    "recent_instances",
    "trigger_requests",
]


def trigger_requests(
    store: Store, *, flow: str | None = None, pending_only: bool = True, limit: int = 50
) -> list[TriggerRequestInfo]:
    """Manual and retry requests, newest first; `pending_only` keeps the unclaimed ones."""
    req = t.trigger_requests
    query = sa.select(req).order_by(req.c.id.desc()).limit(limit)
    if flow is not None:
        query = query.where(req.c.flow == flow)
    if pending_only:
        query = query.where(req.c.claimed_by.is_(None))
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        TriggerRequestInfo(
            id=r.id,
            flow=r.flow,
            job=r.job,
            trigger=r.trigger,
            params=dict(r.params or {}),
            requested_at=r.requested_at,
            requested_by=r.requested_by,
            claimed=r.claimed_by is not None,
            flow_run_id=r.flow_run_id,
        )
        for r in rows
    ]


def orchestrators(store: Store, *, stale_after: float, limit: int = 20) -> list[OrchestratorInfo]:
    """The orchestrators that ticked most recently; `alive` when one has not stopped and
    ticked within `stale_after` seconds."""
    orch = t.orchestrators
    query = sa.select(orch).order_by(orch.c.heartbeat_at.desc()).limit(limit)
    cutoff = utcnow() - timedelta(seconds=stale_after)
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        OrchestratorInfo(
            id=r.id,
            host=r.host,
            pid=r.pid,
            flows=[str(name) for name in (r.flows or [])],
            started_at=r.started_at,
            heartbeat_at=r.heartbeat_at,
            stopped_at=r.stopped_at,
            alive=r.stopped_at is None and r.heartbeat_at >= cutoff,
        )
        for r in rows
    ]


def recent_instances(
    store: Store, *, since: datetime, flow: str | None = None
) -> list[InstanceRow]:
    """Consumer instances not stopped, or stopped since `since`, newest first."""
    return store.instances(flow=flow, active_since=since)


def consumers_seen(store: Store, *, flow: str | None = None) -> set[tuple[str, str]]:
    """(flow, consumer) of every consumer with an instance or a decision on record."""
    found: set[tuple[str, str]] = set()
    with store.engine.connect() as conn:
        for table in (t.consumer_instances, t.scale_decisions):
            query = sa.select(table.c.flow, table.c.consumer).distinct()
            if flow is not None:
                query = query.where(table.c.flow == flow)
            found.update((r.flow, r.consumer) for r in conn.execute(query))
    return found


@dataclass(frozen=True, slots=True)
class FinishedAttempt:
    id: int
    flow: str
    job: str
    status: str
    started_at: datetime
    finished_at: datetime


def finished_attempts(store: Store, *, since: datetime) -> list[FinishedAttempt]:
    """Attempts that finished at or after `since`."""
    att, runs = t.attempts, t.job_runs
    query = (
        sa.select(
            att.c.id,
            runs.c.flow,
            runs.c.job,
            att.c.status,
            att.c.started_at,
            att.c.finished_at,
        )
        .join(runs, runs.c.id == att.c.job_run_id)
        .where(att.c.finished_at.is_not(None), att.c.finished_at >= since)
    )
    with store.engine.connect() as conn:
        return [FinishedAttempt(*row) for row in conn.execute(query)]


@dataclass(frozen=True, slots=True)
class FirstStart:
    """A scheduled job run's first attempt: when it started against when it was due."""

    attempt_id: int
    flow: str
    job: str
    scheduled_at: datetime
    started_at: datetime


def first_starts(store: Store, *, since: datetime) -> list[FirstStart]:
    """First attempts of scheduled root jobs that started at or after `since` (the jobs
    after the root share its instant, but wait for it by design: they are not late)."""
    att, runs, flow_runs = t.attempts, t.job_runs, t.flow_runs
    query = (
        sa.select(att.c.id, runs.c.flow, runs.c.job, runs.c.scheduled_at, att.c.started_at)
        .join(runs, runs.c.id == att.c.job_run_id)
        .join(flow_runs, flow_runs.c.id == runs.c.flow_run_id)
        .where(
            att.c.number == 1,
            runs.c.scheduled_at.is_not(None),
            runs.c.job == flow_runs.c.root_job,
            att.c.started_at >= since,
        )
    )
    with store.engine.connect() as conn:
        return [FirstStart(*row) for row in conn.execute(query)]


def applied_decisions(
    store: Store, *, after_id: int
) -> tuple[dict[tuple[str, str, str], int], int]:
    """Applied autoscaler decisions with an id above `after_id`, counted by (flow,
    consumer, reason), and the id to pass next time (the highest id of any decision)."""
    dec = t.scale_decisions
    with store.engine.connect() as conn:
        # fix the upper end first, so that a decision recorded meanwhile is counted next time
        top = int(conn.execute(sa.select(sa.func.max(dec.c.id))).scalar() or after_id)
        query = (
            sa.select(dec.c.flow, dec.c.consumer, dec.c.reason, sa.func.count())
            .where(dec.c.id > after_id, dec.c.id <= top, dec.c.applied.is_(True))
            .group_by(dec.c.flow, dec.c.consumer, dec.c.reason)
        )
        counts = {(r[0], r[1], r[2]): int(r[3]) for r in conn.execute(query)}
    return counts, max(top, after_id)
