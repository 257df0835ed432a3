"""Trigger requests: a manual or retry run asked for by the CLI or the dashboard waits
here until the orchestrator running its flow claims it (the store is the only channel
between them)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from tideflow.runtime.model import TriggerKind

from . import tables as t
from .base import StoreBase, inserted_id, utcnow

__all__ = ["TriggerQueries", "TriggerRequest", "TriggerRequestRecord"]


@dataclass(frozen=True, slots=True)
class TriggerRequest:
    """A request as an orchestrator claims it: what to start."""

    id: int
    flow: str
    job: str
    trigger: TriggerKind
    params: dict[str, Any]
    requested_at: datetime
    requested_by: str


@dataclass(frozen=True, slots=True)
class TriggerRequestRecord:
    """A request as the dashboard lists it: what was asked, and whether it was taken."""

    id: int
    flow: str
    job: str
    trigger: str
    params: dict[str, Any]
    requested_at: datetime
    requested_by: str
    claimed: bool
    flow_run_id: int | None


class TriggerQueries(StoreBase):
    def request_trigger(
        self,
        flow: str,
        job: str,
        *,
        params: Mapping[str, Any] | None = None,
        trigger: TriggerKind = TriggerKind.MANUAL,
        requested_by: str | None = None,
    ) -> int:
        """Ask the orchestrator running `flow` to start `job`; returns the request id."""
        with self._write() as conn:
            result = conn.execute(
                sa.insert(t.trigger_requests).values(
                    flow=flow,
                    job=job,
                    trigger=str(trigger),
                    params=dict(params or {}),
                    requested_at=utcnow(),
                    requested_by=requested_by or _who(),
                )
            )
            return inserted_id(result)

    def claim_trigger_requests(
        self, flows: Sequence[str], orchestrator_id: int
    ) -> list[TriggerRequest]:
        """Claim the unclaimed requests for these flows, oldest first; each is claimed once."""
        req = t.trigger_requests
        # one statement claims them all; with a fence, it claims nothing unless the lease
        # still carries the leader's token
        statement = (
            sa.update(req)
            .where(req.c.flow.in_(list(flows)), req.c.claimed_by.is_(None))
            .values(claimed_by=orchestrator_id, claimed_at=utcnow())
            .returning(req)
        )
        if self.fence is not None:
            statement = statement.where(self._fence_holds(self.fence))
        with self._write() as conn:
            rows = conn.execute(statement).all()
        return [
            TriggerRequest(
                row.id,
                row.flow,
                row.job,
                TriggerKind(row.trigger),
                dict(row.params),
                row.requested_at,
                row.requested_by,
            )
            for row in sorted(rows, key=lambda r: r.id)
        ]

    def link_trigger_request(self, request_id: int, flow_run_id: int) -> None:
        with self._write() as conn:
            conn.execute(
                sa.update(t.trigger_requests)
                .where(t.trigger_requests.c.id == request_id)
                .values(flow_run_id=flow_run_id)
            )

    def trigger_request_run(self, request_id: int) -> tuple[bool, int | None]:
        """(claimed, flow run id) of a request."""
        req = t.trigger_requests
        with self._read() as conn:
            row = conn.execute(
                sa.select(req.c.claimed_by, req.c.flow_run_id).where(req.c.id == request_id)
            ).first()
        if row is None:
            return False, None
        return row.claimed_by is not None, row.flow_run_id

    def pending_trigger_requests(self, flow: str | None = None) -> list[TriggerRequest]:
        """Requests no orchestrator has claimed yet, oldest first (they fire when one starts)."""
        req = t.trigger_requests
        query = sa.select(req).where(req.c.claimed_by.is_(None)).order_by(req.c.id)
        if flow is not None:
            query = query.where(req.c.flow == flow)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [
            TriggerRequest(
                r.id,
                r.flow,
                r.job,
                TriggerKind(r.trigger),
                dict(r.params or {}),
                r.requested_at,
                r.requested_by,
            )
            for r in rows
        ]

    def withdraw_trigger_request(self, request_id: int) -> bool:
        """Delete a request no orchestrator has claimed; False when it was claimed already
        (or never existed). Atomic against `claim_trigger_requests`."""
        req = t.trigger_requests
        with self._write() as conn:
            result = conn.execute(
                sa.delete(req).where(req.c.id == request_id, req.c.claimed_by.is_(None))
            )
            return bool(result.rowcount)

    def trigger_requests(
        self, *, flow: str | None = None, pending_only: bool = True, limit: int = 50
    ) -> list[TriggerRequestRecord]:
        """Manual and retry requests, newest first; `pending_only` keeps the unclaimed ones."""
        req = t.trigger_requests
        query = sa.select(req).order_by(req.c.id.desc()).limit(limit)
        if flow is not None:
            query = query.where(req.c.flow == flow)
        if pending_only:
            query = query.where(req.c.claimed_by.is_(None))
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [
            TriggerRequestRecord(
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


def _who() -> str:
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER", "unknown")
    return f"{user}@{socket.gethostname()}"
