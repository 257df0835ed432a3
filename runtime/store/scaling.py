"""Autoscaler decisions: each one with its inputs, so "why 7 instances now?" has an answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from tideflow.runtime.model import ScaleDecisionRow

from . import tables as t
from .base import StoreBase
from .rows import decision_of

__all__ = ["AppliedDecisions", "ScalingQueries"]


@dataclass(frozen=True, slots=True)
class AppliedDecisions:
    """Applied decisions counted by (flow, consumer, reason), and `mark`: the id to read on
    from next time."""

    counts: dict[tuple[str, str, str], int]
    mark: int


class ScalingQueries(StoreBase):
    def record_decision(self, decision: ScaleDecisionRow) -> int:
        with self._write() as conn:
            return self._insert_acting(
                conn,
                t.scale_decisions,
                {
                    "flow": decision.flow,
                    "consumer": decision.consumer,
                    "taken_at": decision.taken_at,
                    "backlog": decision.backlog,
                    "per_partition": {str(k): v for k, v in decision.per_partition.items()},
                    "partitions": decision.partitions,
                    "reading_error": decision.reading_error,
                    "current": decision.current,
                    "desired": decision.desired,
                    "applied": decision.applied,
                    "reason": decision.reason,
                    "explanation": decision.explanation,
                    "rule": decision.rule,
                },
                f"a scaling decision for consumer {decision.consumer!r}",
            )

    def decisions(
        self,
        *,
        flow: str | None = None,
        consumer: str | None = None,
        since: datetime | None = None,
        limit: int | None = 50,
    ) -> list[ScaleDecisionRow]:
        """Autoscaler decisions, newest first."""
        dec = t.scale_decisions
        query = sa.select(dec).order_by(dec.c.taken_at.desc(), dec.c.id.desc())
        if flow is not None:
            query = query.where(dec.c.flow == flow)
        if consumer is not None:
            query = query.where(dec.c.consumer == consumer)
        if since is not None:
            query = query.where(dec.c.taken_at >= since)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            return [decision_of(r) for r in conn.execute(query)]

    def applied_decisions(self, *, after_id: int) -> AppliedDecisions:
        """Applied decisions with an id above `after_id`, counted by (flow, consumer,
        reason), and the id to pass next time (the highest id of any decision)."""
        dec = t.scale_decisions
        with self._read() as conn:
            # fix the upper end first, so that a decision recorded meanwhile is counted next time
            top = int(conn.execute(sa.select(sa.func.max(dec.c.id))).scalar() or after_id)
            query = (
                sa.select(dec.c.flow, dec.c.consumer, dec.c.reason, sa.func.count())
                .where(dec.c.id > after_id, dec.c.id <= top, dec.c.applied.is_(True))
                .group_by(dec.c.flow, dec.c.consumer, dec.c.reason)
            )
            counts = {(r[0], r[1], r[2]): int(r[3]) for r in conn.execute(query)}
        return AppliedDecisions(counts, max(top, after_id))
