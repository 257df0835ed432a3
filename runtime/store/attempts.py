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

# Log lines written in the statement that finishes their attempt on PostgreSQL (five
# parameters each); an attempt with more writes them in a transaction of its own.
_LOG_LINES_PER_STATEMENT: Final = 1000


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
        values: dict[str, Any] = {
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
        }
        what = f"starting attempt {number} of job run {job_run_id}"
        if self.postgres:
            return self._start_attempt_at_once(values, what)
        run = t.job_runs
        with self._write() as conn:
            attempt_id = self._insert_acting(conn, t.attempts, values, what)
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

    def _start_attempt_at_once(self, values: dict[str, Any], what: str) -> int:
        """`start_attempt` on PostgreSQL: the attempt's INSERT (fenced when the store has
        a fence) and its job run's UPDATE in ONE statement, a data-modifying CTE, which
        commits alone: one round trip where a transaction of two statements took five.
        The statement is built once per shape (and fence): building a CTE costs more
        than the round trip."""
        fence = self.fence
        key = ("start", tuple(values), fence)
        statement = _STATEMENTS.get(key)
        if statement is None:
            guard = None if fence is None else self._fence_holds(fence)
            statement = _remember(key, _start_statement(list(values), guard))
        params = {f"v_{name}": value for name, value in values.items()}
        params.update(
            r_status=str(RunStatus.RUNNING), r_attempts=values["number"], r_at=values["started_at"]
        )
        with self._write_one() as conn:
            attempt_id = conn.execute(statement, params).scalar()
        if attempt_id is None:  # the fence kept the INSERT from writing anything
            self._fenced(what)
        return int(attempt_id)

    def set_attempt_pid(self, attempt_id: int, pid: int) -> None:
        with self._write_one() as conn:
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
        executor_where: str | None = None,
    ) -> None:
        """Record an attempt's end, its output and log lines, and optionally its job run's
        new status, in one transaction. `executor_where`: where a remote attempt ran,
        when its executor said so only at its end."""
        at = at or utcnow()
        values: dict[str, Any] = {
            "status": str(status),
            "finished_at": at,
            "exit_code": exit_code,
            "stdout": _cut(stdout),
            "stderr": _cut(stderr),
        }
        if executor_where is not None:
            values["executor_where"] = executor_where[:500]
        if error is not None:
            values.update(
                error_type=error.type,
                error_message=error.message,
                error_traceback=_cut(error.traceback),
                error_function=error.function,
                error_location=error.location,
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
        run_values: dict[str, Any] | None = None
        if job_run_status is not None:
            run_values = {"status": str(job_run_status)}
            if job_run_status.finished:
                run_values["finished_at"] = at
        if self.postgres and len(rows) <= _LOG_LINES_PER_STATEMENT:
            self._finish_attempt_at_once(attempt_id, values, rows, run_values)
            return
        with self._write() as conn:
            conn.execute(
                sa.update(t.attempts).where(t.attempts.c.id == attempt_id).values(**values)
            )
            if rows:
                conn.execute(sa.insert(t.log_lines), rows)
            if run_values is not None:
                job_run_id = (
                    sa.select(t.attempts.c.job_run_id)
                    .where(t.attempts.c.id == attempt_id)
                    .scalar_subquery()
                )
                conn.execute(
                    sa.update(t.job_runs).where(t.job_runs.c.id == job_run_id).values(**run_values)
                )

    def _finish_attempt_at_once(
        self,
        attempt_id: int,
        values: dict[str, Any],
        log_rows: list[dict[str, Any]],
        run_values: dict[str, Any] | None,
    ) -> None:
        """`finish_attempt` on PostgreSQL: the attempt's UPDATE, its log lines' INSERT and
        its job run's UPDATE in ONE statement (data-modifying CTEs) that commits alone:
        one round trip where a transaction took five or six. Built once per shape, as
        `_start_attempt_at_once`'s."""
        run_columns = None if run_values is None else tuple(run_values)
        key = ("finish", tuple(values), run_columns)
        statement = _STATEMENTS.get(key)
        if statement is None:
            statement = _remember(key, _finish_statement(list(values), run_columns))
        if log_rows:  # its shape is its number of lines: built each time
            statement = statement.add_cte(sa.insert(t.log_lines).values(log_rows).cte("logged"))
        params = {f"v_{name}": value for name, value in values.items()}
        params["v_attempt_id"] = attempt_id
        params.update({f"r_{name}": value for name, value in (run_values or {}).items()})
        with self._write_one() as conn:
            conn.execute(statement, params)

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


# Statements of the PostgreSQL paths, by shape (which columns; the fence): built once,
# executed with each call's values as parameters. Fences change with leaders: the dict
# is emptied now and then rather than let grow.
_STATEMENTS: dict[tuple[Any, ...], sa.Update] = {}
_STATEMENTS_KEPT: Final = 64


def _remember(key: tuple[Any, ...], statement: sa.Update) -> sa.Update:
    if len(_STATEMENTS) >= _STATEMENTS_KEPT:
        _STATEMENTS.clear()
    _STATEMENTS[key] = statement
    return statement


def _binds(table: sa.Table, columns: Iterable[str], prefix: str) -> dict[str, Any]:
    return {c: sa.bindparam(f"{prefix}{c}", type_=table.c[c].type) for c in columns}


def _start_statement(columns: list[str], guard: sa.ColumnElement[bool] | None) -> sa.Update:
    """WITH new_attempt AS (INSERT INTO attempts ... [SELECT ... WHERE <guard>] RETURNING
    id, job_run_id) UPDATE job_runs ... FROM new_attempt RETURNING new_attempt.id: no row
    comes back when the guard (the fence) kept the INSERT from writing."""
    att, run = t.attempts, t.job_runs
    binds = _binds(att, columns, "v_")
    if guard is None:
        insert = sa.insert(att).values(binds)
    else:
        insert = sa.insert(att).from_select(columns, sa.select(*binds.values()).where(guard))
    new = insert.returning(att.c.id, att.c.job_run_id).cte("new_attempt")
    at = sa.bindparam("r_at", type_=run.c.started_at.type)
    return (
        sa.update(run)
        .where(run.c.id == new.c.job_run_id)
        .values(
            status=sa.bindparam("r_status", type_=run.c.status.type),
            attempts=sa.bindparam("r_attempts", type_=run.c.attempts.type),
            started_at=sa.func.coalesce(run.c.started_at, at),
        )
        .returning(new.c.id)
    )


def _finish_statement(columns: list[str], run_columns: tuple[str, ...] | None) -> sa.Update:
    """UPDATE attempts ..., or WITH finished_attempt AS (UPDATE attempts ... RETURNING
    job_run_id) UPDATE job_runs ... FROM finished_attempt."""
    att, run = t.attempts, t.job_runs
    finish = (
        sa.update(att)
        .where(att.c.id == sa.bindparam("v_attempt_id", type_=att.c.id.type))
        .values(_binds(att, columns, "v_"))
    )
    if run_columns is None:
        return finish
    done = finish.returning(att.c.job_run_id).cte("finished_attempt")
    return (
        sa.update(run).where(run.c.id == done.c.job_run_id).values(_binds(run, run_columns, "r_"))
    )
