"""Consumer instances: their heartbeats and numbers, the log lines they send, and the
messages they gave up on (dead letters)."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from tideflow.runtime.model import (
    ConsumerLogLine,
    DeadLetterRow,
    InstanceRow,
    InstanceStats,
    InstanceStatus,
)

from . import tables as t
from .base import StoreBase, utcnow
from .rows import dead_letter_of, instance_of

__all__ = ["CONSUMER_LOG_KEEP", "ConsumerQueries"]

# Log lines kept per consumer instance (older ones are deleted as new ones come).
CONSUMER_LOG_KEEP: Final = 2000


class ConsumerQueries(StoreBase):
    def instance_started(
        self, instance_id: str, flow: str, consumer: str, *, pid: int | None = None
    ) -> None:
        now = utcnow()
        with self._write() as conn:
            conn.execute(
                sa.insert(t.consumer_instances).values(
                    id=instance_id,
                    flow=flow,
                    consumer=consumer,
                    host=socket.gethostname(),
                    pid=pid,
                    status=str(InstanceStatus.STARTING),
                    started_at=now,
                    heartbeat_at=now,
                    handled=0,
                    failed=0,
                    dead_lettered=0,
                    in_flight=0,
                    rate=0.0,
                    partitions=[],
                )
            )

    def instance_heartbeat(self, instance_id: str, stats: InstanceStats) -> None:
        """Record an instance's numbers; a final status (stopped, crashed) ends it."""
        now = utcnow()
        values: dict[str, Any] = {
            "status": str(stats.status),
            "heartbeat_at": now,
            "handled": stats.handled,
            "failed": stats.failed,
            "dead_lettered": stats.dead_lettered,
            "in_flight": stats.in_flight,
            "rate": stats.rate,
            "partitions": list(stats.partitions),
            "last_error": stats.last_error,
        }
        if stats.status in (InstanceStatus.STOPPED, InstanceStatus.CRASHED):
            values["stopped_at"] = now
        with self._write() as conn:
            conn.execute(
                sa.update(t.consumer_instances)
                .where(t.consumer_instances.c.id == instance_id)
                .values(**values)
            )

    def instances(
        self,
        *,
        flow: str | None = None,
        consumer: str | None = None,
        alive_within: float | None = None,
        active_since: datetime | None = None,
    ) -> list[InstanceRow]:
        """Instances, newest first; `alive_within` keeps those not stopped whose last
        heartbeat is at most that many seconds old; `active_since` those not stopped,
        or stopped since then."""
        inst = t.consumer_instances
        query = sa.select(inst).order_by(inst.c.started_at.desc())
        if flow is not None:
            query = query.where(inst.c.flow == flow)
        if consumer is not None:
            query = query.where(inst.c.consumer == consumer)
        if alive_within is not None:
            cutoff = utcnow() - timedelta(seconds=alive_within)
            query = query.where(inst.c.stopped_at.is_(None), inst.c.heartbeat_at >= cutoff)
        if active_since is not None:
            query = query.where(
                sa.or_(inst.c.stopped_at.is_(None), inst.c.stopped_at >= active_since)
            )
        with self._read() as conn:
            return [instance_of(r) for r in conn.execute(query)]

    def record_dead_letters(self, rows: Sequence[DeadLetterRow]) -> None:
        """Record messages consumer instances gave up on (dead-lettered or dropped)."""
        if not rows:
            return
        with self._write() as conn:
            conn.execute(
                sa.insert(t.dead_letters),
                [
                    {
                        "flow": r.flow,
                        "consumer": r.consumer,
                        "instance_id": r.instance_id,
                        "at": r.at,
                        "topic": r.topic,
                        "partition": r.partition,
                        "message_id": r.message_id,
                        "failures": r.failures,
                        "dead_letter_topic": r.dead_letter_topic,
                        "error": r.error,
                    }
                    for r in rows
                ],
            )

    def dead_letter_counts(
        self, *, flow: str | None = None, since: datetime | None = None
    ) -> dict[tuple[str, str], int]:
        """Messages given up on, by (flow, consumer), optionally since a time."""
        dead = t.dead_letters
        query = sa.select(dead.c.flow, dead.c.consumer, sa.func.count()).group_by(
            dead.c.flow, dead.c.consumer
        )
        if flow is not None:
            query = query.where(dead.c.flow == flow)
        if since is not None:
            query = query.where(dead.c.at >= since)
        with self._read() as conn:
            return {(r[0], r[1]): int(r[2]) for r in conn.execute(query)}

    def dead_letters(
        self, *, flow: str | None = None, consumer: str | None = None, limit: int = 100
    ) -> list[DeadLetterRow]:
        """The newest messages given up on, newest first."""
        dead = t.dead_letters
        query = sa.select(dead).order_by(dead.c.id.desc()).limit(limit)
        if flow is not None:
            query = query.where(dead.c.flow == flow)
        if consumer is not None:
            query = query.where(dead.c.consumer == consumer)
        with self._read() as conn:
            return [dead_letter_of(r) for r in conn.execute(query)]

    def claim_dead_letters(self, flows: Sequence[str]) -> list[DeadLetterRow]:
        """Dead letters of `flows` not yet notified, marked notified now, oldest first
        (the orchestrator's `dead_letter` notifications: each row is claimed once)."""
        dead = t.dead_letters
        with self._write() as conn:
            rows = conn.execute(
                sa.select(dead)
                .where(dead.c.flow.in_(list(flows)), dead.c.notified_at.is_(None))
                .order_by(dead.c.id)
            ).all()
            if rows:
                conn.execute(
                    sa.update(dead)
                    .where(dead.c.id.in_([r.id for r in rows]))
                    .values(notified_at=utcnow())
                )
        return [dead_letter_of(r) for r in rows]

    def record_consumer_logs(
        self, flow: str, consumer: str, instance_id: str, lines: Sequence[ConsumerLogLine]
    ) -> None:
        """Append an instance's log lines, keeping its newest CONSUMER_LOG_KEEP."""
        if not lines:
            return
        logs = t.consumer_log_lines
        with self._write() as conn:
            conn.execute(
                sa.insert(logs),
                [
                    {
                        "flow": flow,
                        "consumer": consumer,
                        "instance_id": instance_id,
                        "at": line.at,
                        "level": line.level,
                        "message": line.message,
                    }
                    for line in lines
                ],
            )
            newest = conn.execute(
                sa.select(sa.func.max(logs.c.id)).where(logs.c.instance_id == instance_id)
            ).scalar_one()
            conn.execute(
                sa.delete(logs).where(
                    logs.c.instance_id == instance_id, logs.c.id <= newest - CONSUMER_LOG_KEEP
                )
            )

    def consumer_logs(
        self,
        flow: str | None,
        consumer: str,
        *,
        instance_id: str | None = None,
        since: datetime | None = None,
        limit: int = 200,
    ) -> list[ConsumerLogLine]:
        """A consumer's newest `limit` log lines (of one instance when given), oldest first."""
        logs = t.consumer_log_lines
        query = (
            sa.select(logs)
            .where(logs.c.consumer == consumer)
            .order_by(logs.c.id.desc())
            .limit(limit)
        )
        if flow is not None:
            query = query.where(logs.c.flow == flow)
        if instance_id is not None:
            query = query.where(logs.c.instance_id == instance_id)
        if since is not None:
            query = query.where(logs.c.at >= since)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [ConsumerLogLine(r.instance_id, r.at, r.level, r.message) for r in reversed(rows)]

    def consumers_seen(self, *, flow: str | None = None) -> set[tuple[str, str]]:
        """(flow, consumer) of every consumer with an instance or a decision on record."""
        found: set[tuple[str, str]] = set()
        with self._read() as conn:
            for table in (t.consumer_instances, t.scale_decisions):
                query = sa.select(table.c.flow, table.c.consumer).distinct()
                if flow is not None:
                    query = query.where(table.c.flow == flow)
                found.update((r.flow, r.consumer) for r in conn.execute(query))
        return found
