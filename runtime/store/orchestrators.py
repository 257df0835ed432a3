"""Orchestrators: who runs which flows, their heartbeats, and the attempts a dead one
left behind."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from tideflow.runtime.model import AttemptRow, AttemptStatus

from . import tables as t
from .base import StoreBase, inserted_id, utcnow
from .rows import attempt_of

__all__ = ["LiveOrchestrator", "OrchestratorQueries", "OrchestratorRecord"]


@dataclass(frozen=True, slots=True)
class LiveOrchestrator:
    """An orchestrator running some of the flows asked about (`flows`: those, sorted)."""

    id: int
    host: str
    pid: int
    flows: tuple[str, ...]
    heartbeat_at: datetime
    all_flows: tuple[str, ...] = ()  # every flow it runs, sorted


@dataclass(frozen=True, slots=True)
class OrchestratorRecord:
    """An orchestrator as the dashboard shows it; `alive`: not stopped, and ticked recently."""

    id: int
    host: str
    pid: int
    flows: tuple[str, ...]
    started_at: datetime
    heartbeat_at: datetime  # the scheduler's last tick
    stopped_at: datetime | None
    alive: bool


class OrchestratorQueries(StoreBase):
    def register_orchestrator(self, flows: Sequence[str]) -> int:
        now = utcnow()
        with self._write() as conn:
            result = conn.execute(
                sa.insert(t.orchestrators).values(
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    flows=list(flows),
                    started_at=now,
                    heartbeat_at=now,
                )
            )
            return inserted_id(result)

    def heartbeat(self, orchestrator_id: int, at: datetime | None = None) -> None:
        with self._write() as conn:
            conn.execute(
                sa.update(t.orchestrators)
                .where(t.orchestrators.c.id == orchestrator_id)
                .values(heartbeat_at=at or utcnow())
            )

    def orchestrator_stopped(self, orchestrator_id: int) -> None:
        with self._write() as conn:
            conn.execute(
                sa.update(t.orchestrators)
                .where(t.orchestrators.c.id == orchestrator_id)
                .values(stopped_at=utcnow())
            )

    def live_orchestrators(self, flows: Sequence[str], within: float) -> list[LiveOrchestrator]:
        """Orchestrators not stopped, whose heartbeat is at most `within` seconds old,
        that run any of `flows` (to refuse running a flow twice)."""
        orch = t.orchestrators
        cutoff = utcnow() - timedelta(seconds=within)
        query = sa.select(orch).where(orch.c.stopped_at.is_(None), orch.c.heartbeat_at >= cutoff)
        wanted = set(flows)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [
            LiveOrchestrator(
                id=r.id,
                host=r.host,
                pid=r.pid,
                flows=tuple(sorted(wanted & set(r.flows))),
                heartbeat_at=r.heartbeat_at,
                all_flows=tuple(sorted(r.flows)),
            )
            for r in rows
            if wanted & set(r.flows)
        ]

    def orchestrators(self, *, stale_after: float, limit: int = 20) -> list[OrchestratorRecord]:
        """The orchestrators that ticked most recently; `alive` when one has not stopped and
        ticked within `stale_after` seconds."""
        orch = t.orchestrators
        query = sa.select(orch).order_by(orch.c.heartbeat_at.desc()).limit(limit)
        cutoff = utcnow() - timedelta(seconds=stale_after)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [
            OrchestratorRecord(
                id=r.id,
                host=r.host,
                pid=r.pid,
                flows=tuple(str(name) for name in (r.flows or [])),
                started_at=r.started_at,
                heartbeat_at=r.heartbeat_at,
                stopped_at=r.stopped_at,
                alive=r.stopped_at is None and r.heartbeat_at >= cutoff,
            )
            for r in rows
        ]

    def last_heartbeat(self) -> datetime | None:
        with self._read() as conn:
            value: datetime | None = conn.execute(
                sa.select(sa.func.max(t.orchestrators.c.heartbeat_at))
            ).scalar()
        return value

    def running_attempts(self, flows: Iterable[str]) -> list[AttemptRow]:
        """The attempts recorded as `running` for these flows (at start-up: those an
        orchestrator that died left; the remote ones among them may still run)."""
        runs, att = t.job_runs, t.attempts
        query = (
            sa.select(att)
            .join(runs, runs.c.id == att.c.job_run_id)
            .where(att.c.status == str(AttemptStatus.RUNNING), runs.c.flow.in_(list(flows)))
            .order_by(att.c.id)
        )
        with self._read() as conn:
            return [attempt_of(r) for r in conn.execute(query)]

    def mark_lost(
        self,
        flows: Iterable[str],
        *,
        except_orchestrator: int | None = None,
        keep: Collection[int] = (),
    ) -> list[AttemptRow]:
        """Mark attempts still `running` for these flows as lost and return them,
        except those whose ids are in `keep` (remote attempts being re-attached to).

        Called at start-up: no attempt of ours can be running before we start any,
        so whatever is recorded as running belongs to an orchestrator that died.
        """
        runs, att = t.job_runs, t.attempts
        query = (
            sa.select(att)
            .join(runs, runs.c.id == att.c.job_run_id)
            .where(att.c.status == str(AttemptStatus.RUNNING), runs.c.flow.in_(list(flows)))
        )
        if except_orchestrator is not None:
            query = query.where(
                sa.or_(
                    att.c.orchestrator_id.is_(None), att.c.orchestrator_id != except_orchestrator
                )
            )
        if keep:
            query = query.where(att.c.id.not_in(list(keep)))
        now = utcnow()
        with self._write() as conn:
            rows = conn.execute(query).all()
            ids = [r.id for r in rows]
            if ids:
                update = (
                    sa.update(att)
                    .where(att.c.id.in_(ids))
                    .values(status=str(AttemptStatus.LOST), finished_at=now)
                )
                if self.fence is None:
                    conn.execute(update)
                # only the leader may take attempts over
                elif not conn.execute(update.where(self._fence_holds(self.fence))).rowcount:
                    self._fenced(f"marking {len(ids)} attempt(s) lost")
        return [
            dataclasses.replace(attempt_of(r), status=AttemptStatus.LOST, finished_at=now)
            for r in rows
        ]
