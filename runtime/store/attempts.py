"""Attempts: one try of a job run, with its output, error and log lines."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from tideflow.runtime.model import AttemptRow, AttemptStatus, ErrorInfo, LogLine, RunStatus

from . import tables as t
from .base import StoreBase, utcnow
from .rows import attempt_of

__all__ = ["MAX_OUTPUT_CHARS", "AttemptQueries", "FinishedAttempt", "FirstStart"]

# Captured output beyond this is cut (the end is kept: that is where errors are).
MAX_OUTPUT_CHARS: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class FinishedAttempt:
    id: int
    flow: str
    job: str
    status: str
    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True, slots=True)
class FirstStart:
    """A scheduled job run's first attempt: when it started against when it was due."""

    attempt_id: int
    flow: str
    job: str
    scheduled_at: datetime
    started_at: datetime


class AttemptQueries(StoreBase):
    def start_attempt(
        self,
        job_run_id: int,
        number: int,
        *,
        pid: int | None = None,
        orchestrator_id: int | None = None,
        at: datetime | None = None,
        executor: str | None = None,
        executor_ref: str | None = None,
        executor_where: str | None = None,
    ) -> int:
        """Record a new running attempt and mark its job run running, in one transaction.
        `executor` names the executor block (None: the built-in local one) and
        `executor_ref` the engine's name for the attempt, to re-attach by."""
        at = at or utcnow()
        with self._write() as conn:
            attempt_id = self._insert_acting(
                conn,
                t.attempts,
                {
                    "job_run_id": job_run_id,
                    "number": number,
                    "status": str(AttemptStatus.RUNNING),
                    "started_at": at,
                    "pid": pid,
                    "host": socket.gethostname(),
                    "orchestrator_id": orchestrator_id,
                    "stdout": "",
                    "stderr": "",
                    "executor": executor,
                    "executor_ref": executor_ref,
                    "executor_where": executor_where,
                },
                f"starting attempt {number} of job run {job_run_id}",
            )
            run = t.job_runs
            conn.execute(
                sa.update(run)
                .where(run.c.id == job_run_id)
                .values(
                    status=str(RunStatus.RUNNING),
                    attempts=number,
                    started_at=sa.func.coalesce(run.c.started_at, at),
                )
            )
            return attempt_id

    def set_attempt_pid(self, attempt_id: int, pid: int) -> None:
        with self._write() as conn:
            conn.execute(sa.update(t.attempts).where(t.attempts.c.id == attempt_id).values(pid=pid))

    def finish_attempt(
        self,
        attempt_id: int,
        status: AttemptStatus,
        *,
        exit_code: int | None = None,
        stdout: str = "",
        stderr: str = "",
        error: ErrorInfo | None = None,
        logs: Iterable[tuple[datetime, str, str]] = (),
        job_run_status: RunStatus | None = None,
        at: datetime | None = None,
    ) -> None:
        """Record an attempt's end, its output and log lines, and optionally its job run's
        new status, in one transaction."""
        at = at or utcnow()
        values: dict[str, Any] = {
            "status": str(status),
            "finished_at": at,
            "exit_code": exit_code,
            "stdout": _cut(stdout),
            "stderr": _cut(stderr),
        }
        if error is not None:
            values.update(
                error_type=error.type,
                error_message=error.message,
                error_traceback=_cut(error.traceback),
                error_function=error.function,
                error_location=error.location,
            )
        with self._write() as conn:
            conn.execute(
                sa.update(t.attempts).where(t.attempts.c.id == attempt_id).values(**values)
            )
            rows = [
                {
                    "attempt_id": attempt_id,
                    "seq": seq,
                    "at": when,
                    "level": level,
                    "message": message,
                }
                for seq, (when, level, message) in enumerate(logs)
            ]
            if rows:
                conn.execute(sa.insert(t.log_lines), rows)
            if job_run_status is not None:
                run_values: dict[str, Any] = {"status": str(job_run_status)}
                if job_run_status.finished:
                    run_values["finished_at"] = at
                job_run_id = (
                    sa.select(t.attempts.c.job_run_id)
                    .where(t.attempts.c.id == attempt_id)
                    .scalar_subquery()
                )
                conn.execute(
                    sa.update(t.job_runs).where(t.job_runs.c.id == job_run_id).values(**run_values)
                )

    def attempts(self, job_run_id: int) -> list[AttemptRow]:
        with self._read() as conn:
            rows = conn.execute(
                sa.select(t.attempts)
                .where(t.attempts.c.job_run_id == job_run_id)
                .order_by(t.attempts.c.number)
            ).all()
        return [attempt_of(r) for r in rows]

    def logs(self, attempt_id: int) -> list[LogLine]:
        with self._read() as conn:
            rows = conn.execute(
                sa.select(t.log_lines)
                .where(t.log_lines.c.attempt_id == attempt_id)
                .order_by(t.log_lines.c.seq)
            ).all()
        return [LogLine(r.attempt_id, r.seq, r.at, r.level, r.message) for r in rows]

    def last_errors(self, job_run_ids: Iterable[int]) -> dict[int, ErrorInfo]:
        """The error of the newest failed attempt of each of these job runs that has one."""
        ids = list(job_run_ids)
        if not ids:
            return {}
        att = t.attempts
        query = (
            sa.select(att)
            .where(att.c.job_run_id.in_(ids), att.c.error_type.is_not(None))
            .order_by(att.c.job_run_id, att.c.number)
        )
        with self._read() as conn:
            rows = conn.execute(query).all()
        found: dict[int, ErrorInfo] = {}
        for row in rows:  # ordered by number: the newest attempt's error wins
            error = attempt_of(row).error
            if error is not None:
                found[row.job_run_id] = error
        return found

    def finished_attempts(self, *, since: datetime) -> list[FinishedAttempt]:
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
        with self._read() as conn:
            return [FinishedAttempt(*row) for row in conn.execute(query)]

    def first_starts(self, *, since: datetime) -> list[FirstStart]:
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
        with self._read() as conn:
            return [FirstStart(*row) for row in conn.execute(query)]


def _cut(text: str) -> str:
    """At most MAX_OUTPUT_CHARS characters, the marker included; the end is kept."""
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    marker = "[… {} characters cut …]\n"
    kept = MAX_OUTPUT_CHARS - len(marker.format(len(text)))
    return marker.format(len(text) - kept) + text[-kept:]
