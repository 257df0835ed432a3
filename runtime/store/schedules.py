"""Schedules: the last instant each job's schedule fired, recorded before its run starts
so that a restart never fires the same instant twice."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import tables as t
from .base import Fence, StoreBase, utcnow

__all__ = ["ScheduleQueries"]


class ScheduleQueries(StoreBase):
    def last_fired(self, flow: str) -> dict[str, datetime]:
        """The last instant each job's schedule fired, by job."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(t.schedule_state.c.job, t.schedule_state.c.last_fired_at).where(
                    t.schedule_state.c.flow == flow
                )
            ).all()
        return {r.job: r.last_fired_at for r in rows}

    def record_fire(self, flow: str, job: str, instant: datetime) -> bool:
        """Persist that `job` fired at `instant`, before its run starts.

        Returns False (and changes nothing) when that instant, or a later one, was
        recorded already: the caller must then not start a run, so a restart never
        fires the same instant twice.
        """
        return self.record_fires(flow, [(job, instant)])[0]

    def record_fires(self, flow: str, fires: Sequence[tuple[str, datetime]]) -> list[bool]:
        """`record_fire` for several (job, instant) pairs in one transaction.

        The scheduler records every instant due at one wake-up at once: one commit,
        and one statement per kind of change, instead of one of each per job keeps a
        burst of simultaneous schedules on time.
        """
        now = utcnow()
        state = t.schedule_state
        accepted: list[bool] = []
        fence = self.fence
        with self._write() as conn:
            jobs = sorted({job for job, _ in fires})
            if fence is None:
                rows = conn.execute(
                    sa.select(state.c.job, state.c.last_fired_at).where(
                        state.c.flow == flow, state.c.job.in_(jobs)
                    )
                ).all()
            else:
                rows = conn.execute(self._fenced_ledger(fence, flow, jobs)).all()
                if not rows:
                    self._fenced(f"recording {len(fires)} fire(s) of flow {flow!r}")
                rows = [r for r in rows if r.job is not None]
            known: dict[str, datetime] = {r.job: r.last_fired_at for r in rows}
            last = dict(known)
            for job, instant in fires:
                current = last.get(job)
                fresh = current is None or current < instant
                if fresh:
                    last[job] = instant
                accepted.append(fresh)
            changed = {job: instant for job, instant in last.items() if known.get(job) != instant}
            inserts = [
                {"flow": flow, "job": job, "last_fired_at": instant, "updated_at": now}
                for job, instant in changed.items()
                if job not in known
            ]
            updates = [
                {"b_job": job, "b_last": instant}
                for job, instant in changed.items()
                if job in known
            ]
            if inserts:
                conn.execute(sa.insert(state), inserts)
            if updates:
                conn.execute(
                    sa.update(state)
                    .where(state.c.flow == flow, state.c.job == sa.bindparam("b_job"))
                    .values(last_fired_at=sa.bindparam("b_last"), updated_at=now),
                    updates,
                )
        return accepted

    def _fenced_ledger(self, fence: Fence, flow: str, jobs: list[str]) -> sa.Select[Any]:
        """The ledger rows of `jobs`, read through the lease row: no row at all when the
        fence is stale, one with a NULL job when it holds and no job fired yet. The same
        statement checks the fence (and, on PostgreSQL, share-locks the lease row until
        the commit), so recording fires costs no extra round trip."""
        lease, state = t.leader_leases, t.schedule_state
        joined = lease.outerjoin(state, sa.and_(state.c.flow == flow, state.c.job.in_(jobs)))
        query = (
            sa.select(state.c.job, state.c.last_fired_at)
            .select_from(joined)
            .where(
                lease.c.key == fence.key,
                lease.c.token == fence.token,
                lease.c.holder == fence.holder,
            )
        )
        if self.engine.dialect.name == "postgresql":
            query = query.with_for_update(read=True, of=lease)
        return query
