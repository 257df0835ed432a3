"""Run history: SQLite (WAL) by default, PostgreSQL by URL.

`Store.open(url)` migrates the schema to the newest revision (Alembic) before
anything else, so an old state file keeps working after an upgrade. Without a URL
it opens $TIDEFLOW_STATE, else `state.db` in the user's state folder
(`default_url()`): the same store whatever the current folder, so two commands
started in different places never keep two histories (nor fire a schedule twice).

Every method is one short transaction; the store is safe to share between threads
and between processes (SQLite's WAL lets the CLI read while the orchestrator writes).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Final

import platformdirs
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from . import tables as t
from .model import (
    AttemptRow,
    AttemptStatus,
    ConsumerLogLine,
    DeadLetterRow,
    ErrorInfo,
    FlowRunRow,
    InstanceRow,
    InstanceStats,
    InstanceStatus,
    JobRunRow,
    LogLine,
    RunStatus,
    ScaleDecisionRow,
    TriggerKind,
)

STATE_ENV: Final = "TIDEFLOW_STATE"
# Captured output beyond this is cut (the end is kept: that is where errors are).
MAX_OUTPUT_CHARS: Final = 1_000_000
# Log lines kept per consumer instance (older ones are deleted as new ones come).
CONSUMER_LOG_KEEP: Final = 2000


class StoreError(Exception):
    """The state store cannot be opened or used; the message says why."""


class StoreNotFound(StoreError):
    """`Store.open(..., create=False)` found no store where the URL points."""


def _holds_store(engine: sa.Engine) -> bool:
    """Whether the database holds a store: a migration revision, not merely alembic's
    table. The process creating a store makes that table (and, SQLite's DDL being
    outside the migration's transaction, the first tables) before it records the
    revision; a reader that took that for an old store would migrate it as well,
    and the creator's own migration would then fail (`table flows already exists`)."""
    if not sa.inspect(engine).has_table("alembic_version"):
        return False
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() is not None


def default_url() -> str:
    """The store used when neither a URL nor $TIDEFLOW_STATE names one: `state.db` in the
    user's state folder (`~/.local/state/tideflow` on Linux, `$XDG_STATE_HOME` when set)."""
    folder = platformdirs.user_state_path("tideflow", appauthor=False)
    return f"sqlite:///{folder / 'state.db'}"


def resolve_url(url: str | None = None) -> str:
    """The store `url` names, else $TIDEFLOW_STATE's, else `default_url()`; normalized."""
    return normalize_url(url or os.environ.get(STATE_ENV) or default_url())


def describe_url(url: str) -> str:
    """Where a store is, for people: a SQLite file's absolute path, else the URL without
    its password."""
    if url.startswith("sqlite"):
        database = _sqlite_file(url)
        if database is not None:
            return str(Path(database).expanduser().resolve())
    return _safe_url(url)


def utcnow() -> datetime:
    return datetime.now(UTC)


def normalize_url(url: str) -> str:
    """Accept the URLs people write (`postgresql://`, a bare path) and pick our drivers."""
    if "://" not in url:
        return f"sqlite:///{url}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


@dataclass(frozen=True, slots=True)
class FlowRecord:
    name: str
    source: str
    ir: dict[str, Any]
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TriggerRequest:
    id: int
    flow: str
    job: str
    trigger: TriggerKind
    params: dict[str, Any]
    requested_at: datetime
    requested_by: str


class Store:
    """The run history. Create with `Store.open(url)`; close with `close()`."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        # the full URL, password included: handed to processes that open the same store
        self.url = engine.url.render_as_string(hide_password=False)
        self._lock = threading.Lock()  # SQLite allows one writer; queue ours in-process

    # --- lifecycle -------------------------------------------------------------

    @property
    def location(self) -> str:
        """Where this store is, for people (see `describe_url`)."""
        return describe_url(self.url)

    @classmethod
    def open(cls, url: str | None = None, *, migrate: bool = True, create: bool = True) -> Store:
        """Open (and migrate) the store at `url` (see `resolve_url`). With `create=False`,
        for commands that only read, a store that does not exist yet raises StoreNotFound
        instead of being created (a SQLite file, or the schema in a database)."""
        url = resolve_url(url)
        if not create:
            database = _sqlite_file(url) if url.startswith("sqlite") else None
            if database is not None and not Path(database).expanduser().exists():
                _check_could_exist(Path(database).expanduser().resolve(), url)
                raise StoreNotFound(f"no state store at {describe_url(url)}")
        try:
            engine = _create_engine(url)
            store = cls(engine)
            if not create and not _holds_store(engine):
                engine.dispose()
                raise StoreNotFound(f"{_safe_url(url)} holds no tideflow state store")
            if migrate:
                store.migrate()
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            first_line = (str(exc).splitlines() or [""])[0]
            raise StoreError(
                f"cannot open the state store {_safe_url(url)}: "
                f"{exc.__class__.__name__}: {first_line}"
            ) from exc
        return store

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def migrate(self) -> None:
        """Bring the schema to the newest revision (a no-op when it is there already)."""
        with self.engine.begin() as conn:
            config = _alembic_config()
            config.attributes["connection"] = conn
            current = MigrationContext.configure(conn).get_current_revision()
            head = ScriptDirectory.from_config(config).get_current_head()
            if current != head:
                command.upgrade(config, "head")

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self._lock, self.engine.begin() as conn:
            yield conn

    # --- flows -----------------------------------------------------------------

    def save_flow(self, name: str, source: str, ir: Mapping[str, Any]) -> None:
        values = {"source": source, "ir": dict(ir), "updated_at": utcnow()}
        with self._write() as conn:
            updated = conn.execute(
                sa.update(t.flows).where(t.flows.c.name == name).values(**values)
            )
            if updated.rowcount == 0:
                conn.execute(sa.insert(t.flows).values(name=name, **values))

    def flow(self, name: str) -> FlowRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.flows).where(t.flows.c.name == name)).first()
        return FlowRecord(row.name, row.source, row.ir, row.updated_at) if row else None

    def flows(self) -> list[FlowRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.flows).order_by(t.flows.c.name)).all()
        return [FlowRecord(r.name, r.source, r.ir, r.updated_at) for r in rows]

    # --- schedules -------------------------------------------------------------

    def last_fired(self, flow: str) -> dict[str, datetime]:
        """The last instant each job's schedule fired, by job."""
        with self.engine.connect() as conn:
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
        with self._write() as conn:
            jobs = sorted({job for job, _ in fires})
            rows = conn.execute(
                sa.select(state.c.job, state.c.last_fired_at).where(
                    state.c.flow == flow, state.c.job.in_(jobs)
                )
            ).all()
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

    # --- runs ------------------------------------------------------------------

    def create_flow_run(
        self,
        flow: str,
        root_job: str,
        trigger: TriggerKind,
        *,
        scheduled_at: datetime | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> int:
        with self._write() as conn:
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
            return _inserted_id(result)

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
        now = utcnow()
        ids: dict[str, int] = {}
        with self._write() as conn:
            for job in jobs:
                result = conn.execute(
                    sa.insert(t.job_runs).values(
                        flow_run_id=flow_run_id,
                        flow=flow,
                        job=job,
                        trigger=str(trigger),
                        status=str(RunStatus.PENDING),
                        scheduled_at=scheduled_at,
                        created_at=now,
                        attempts=0,
                        cancel_requested=False,
                    )
                )
                ids[job] = _inserted_id(result)
        return ids

    def set_flow_run_status(
        self, flow_run_id: int, status: RunStatus, at: datetime | None = None
    ) -> None:
        at = at or utcnow()
        values: dict[str, Any] = {"status": str(status)}
        if status is RunStatus.RUNNING:
            values["started_at"] = at
        elif status.finished:
            values["finished_at"] = at
        with self._write() as conn:
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
        with self._write() as conn:
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
        with self.engine.connect() as conn:
            return [_flow_run(r) for r in conn.execute(query)]

    def start_attempt(
        self,
        job_run_id: int,
        number: int,
        *,
        pid: int | None = None,
        orchestrator_id: int | None = None,
        at: datetime | None = None,
    ) -> int:
        """Record a new running attempt and mark its job run running, in one transaction."""
        at = at or utcnow()
        with self._write() as conn:
            result = conn.execute(
                sa.insert(t.attempts).values(
                    job_run_id=job_run_id,
                    number=number,
                    status=str(AttemptStatus.RUNNING),
                    started_at=at,
                    pid=pid,
                    host=socket.gethostname(),
                    orchestrator_id=orchestrator_id,
                    stdout="",
                    stderr="",
                )
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
            return _inserted_id(result)

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

    def request_cancel(self, job_run_id: int) -> bool:
        """Ask the orchestrator to cancel a run; False when it has finished already."""
        finished = [str(s) for s in RunStatus if s.finished]
        with self._write() as conn:
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
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.job_runs.c.id).where(
                    t.job_runs.c.id.in_(ids), t.job_runs.c.cancel_requested.is_(True)
                )
            ).all()
        return {r.id for r in rows}

    # --- trigger requests ----------------------------------------------------------

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
            return _inserted_id(result)

    def claim_trigger_requests(
        self, flows: Sequence[str], orchestrator_id: int
    ) -> list[TriggerRequest]:
        """Claim the unclaimed requests for these flows, oldest first; each is claimed once."""
        req = t.trigger_requests
        claimed: list[TriggerRequest] = []
        with self._write() as conn:
            rows = conn.execute(
                sa.select(req)
                .where(req.c.flow.in_(list(flows)), req.c.claimed_by.is_(None))
                .order_by(req.c.id)
            ).all()
            for row in rows:
                done = conn.execute(
                    sa.update(req)
                    .where(req.c.id == row.id, req.c.claimed_by.is_(None))
                    .values(claimed_by=orchestrator_id, claimed_at=utcnow())
                )
                if done.rowcount:
                    claimed.append(
                        TriggerRequest(
                            row.id,
                            row.flow,
                            row.job,
                            TriggerKind(row.trigger),
                            dict(row.params),
                            row.requested_at,
                            row.requested_by,
                        )
                    )
        return claimed

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
        with self.engine.connect() as conn:
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
        with self.engine.connect() as conn:
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

    # --- orchestrators and zombies ---------------------------------------------------

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
            return _inserted_id(result)

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

    def live_orchestrators(self, flows: Sequence[str], within: float) -> list[dict[str, Any]]:
        """Orchestrators not stopped, whose heartbeat is at most `within` seconds old,
        that run any of `flows` (to refuse running a flow twice)."""
        orch = t.orchestrators
        cutoff = utcnow() - timedelta(seconds=within)
        query = sa.select(orch).where(orch.c.stopped_at.is_(None), orch.c.heartbeat_at >= cutoff)
        wanted = set(flows)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            {
                "id": r.id,
                "host": r.host,
                "pid": r.pid,
                "flows": sorted(wanted & set(r.flows)),
                "heartbeat_at": r.heartbeat_at,
            }
            for r in rows
            if wanted & set(r.flows)
        ]

    def last_heartbeat(self) -> datetime | None:
        with self.engine.connect() as conn:
            value: datetime | None = conn.execute(
                sa.select(sa.func.max(t.orchestrators.c.heartbeat_at))
            ).scalar()
        return value

    def mark_lost(
        self, flows: Iterable[str], *, except_orchestrator: int | None = None
    ) -> list[AttemptRow]:
        """Mark attempts still `running` for these flows as lost and return them.

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
        now = utcnow()
        with self._write() as conn:
            rows = conn.execute(query).all()
            ids = [r.id for r in rows]
            if ids:
                conn.execute(
                    sa.update(att)
                    .where(att.c.id.in_(ids))
                    .values(status=str(AttemptStatus.LOST), finished_at=now)
                )
        return [
            dataclasses.replace(_attempt(r), status=AttemptStatus.LOST, finished_at=now)
            for r in rows
        ]

    # --- consumer instances and scaling ------------------------------------------------

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
        with self.engine.connect() as conn:
            return [_instance(r) for r in conn.execute(query)]

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
        with self.engine.connect() as conn:
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
        with self.engine.connect() as conn:
            return [_dead_letter(r) for r in conn.execute(query)]

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
        return [_dead_letter(r) for r in rows]

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
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [ConsumerLogLine(r.instance_id, r.at, r.level, r.message) for r in reversed(rows)]

    def record_decision(self, decision: ScaleDecisionRow) -> int:
        with self._write() as conn:
            result = conn.execute(
                sa.insert(t.scale_decisions).values(
                    flow=decision.flow,
                    consumer=decision.consumer,
                    taken_at=decision.taken_at,
                    backlog=decision.backlog,
                    per_partition={str(k): v for k, v in decision.per_partition.items()},
                    partitions=decision.partitions,
                    reading_error=decision.reading_error,
                    current=decision.current,
                    desired=decision.desired,
                    applied=decision.applied,
                    reason=decision.reason,
                    explanation=decision.explanation,
                    rule=decision.rule,
                )
            )
            return _inserted_id(result)

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
        with self.engine.connect() as conn:
            return [_decision(r) for r in conn.execute(query)]

    # --- queries ---------------------------------------------------------------

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
        with self.engine.connect() as conn:
            return [_job_run(r) for r in conn.execute(query)]

    def finished_job_runs(self, flow: str, job: str, *, after: datetime) -> list[JobRunRow]:
        """Runs of a job that finished after `after`, in the order they finished."""
        runs = t.job_runs
        query = (
            sa.select(runs)
            .where(runs.c.flow == flow, runs.c.job == job, runs.c.finished_at > after)
            .order_by(runs.c.finished_at, runs.c.id)
        )
        with self.engine.connect() as conn:
            return [_job_run(r) for r in conn.execute(query)]

    def job_run(self, job_run_id: int) -> JobRunRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.job_runs).where(t.job_runs.c.id == job_run_id)).first()
        return _job_run(row) if row else None

    def flow_run(self, flow_run_id: int) -> FlowRunRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.flow_runs).where(t.flow_runs.c.id == flow_run_id)
            ).first()
        return _flow_run(row) if row else None

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
        with self.engine.connect() as conn:
            return [_flow_run(r) for r in conn.execute(query)]

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
        with self.engine.connect() as conn:
            for flow_run_id, status, n in conn.execute(query):
                counts.setdefault(int(flow_run_id), {})[RunStatus(status)] = int(n)
        return counts

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
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        found: dict[int, ErrorInfo] = {}
        for row in rows:  # ordered by number: the newest attempt's error wins
            error = _attempt(row).error
            if error is not None:
                found[row.job_run_id] = error
        return found

    def attempts(self, job_run_id: int) -> list[AttemptRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.attempts)
                .where(t.attempts.c.job_run_id == job_run_id)
                .order_by(t.attempts.c.number)
            ).all()
        return [_attempt(r) for r in rows]

    def logs(self, attempt_id: int) -> list[LogLine]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.log_lines)
                .where(t.log_lines.c.attempt_id == attempt_id)
                .order_by(t.log_lines.c.seq)
            ).all()
        return [LogLine(r.attempt_id, r.seq, r.at, r.level, r.message) for r in rows]

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
        with self.engine.connect() as conn:
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
        with self.engine.connect() as conn:
            return {r.job: _job_run(r) for r in conn.execute(query)}


# --- helpers ---------------------------------------------------------------------


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


def _create_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        parsed = sa.engine.make_url(url)
        database = parsed.database
        if database and database != ":memory:":
            # absolute, so that processes started elsewhere open the same file
            absolute = Path(database).expanduser().resolve()
            absolute.parent.mkdir(parents=True, exist_ok=True)
            url = parsed.set(database=str(absolute)).render_as_string(hide_password=False)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL-safe
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _alembic_config() -> Config:
    config = Config()
    location = resources.files("tideflow.runtime").joinpath("migrations")
    config.set_main_option("script_location", str(location))
    return config


def _check_could_exist(path: Path, url: str) -> None:
    """StoreError when `path` can never be a file (a parent is a file): that is a wrong
    URL, not a store that has yet to be made."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise StoreError(
                    f"cannot open the state store {_safe_url(url)}: `{parent}` is not a folder"
                )
            return


def _sqlite_file(url: str) -> str | None:
    """The file a SQLite URL names; None for an in-memory database or a URL that is not
    one."""
    try:
        database = sa.engine.make_url(url).database
    except sa.exc.ArgumentError:
        return None
    return database if database and database != ":memory:" else None


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(invalid URL)"


def _who() -> str:
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER", "unknown")
    return f"{user}@{socket.gethostname()}"


def _inserted_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _cut(text: str) -> str:
    """At most MAX_OUTPUT_CHARS characters, the marker included; the end is kept."""
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    marker = "[… {} characters cut …]\n"
    kept = MAX_OUTPUT_CHARS - len(marker.format(len(text)))
    return marker.format(len(text) - kept) + text[-kept:]


def _job_run(r: Any) -> JobRunRow:
    return JobRunRow(
        id=r.id,
        flow_run_id=r.flow_run_id,
        flow=r.flow,
        job=r.job,
        trigger=TriggerKind(r.trigger),
        status=RunStatus(r.status),
        scheduled_at=r.scheduled_at,
        created_at=r.created_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        attempts=r.attempts,
        cancel_requested=bool(r.cancel_requested),
        note=r.note,
    )


def _flow_run(r: Any) -> FlowRunRow:
    return FlowRunRow(
        id=r.id,
        flow=r.flow,
        root_job=r.root_job,
        trigger=TriggerKind(r.trigger),
        status=RunStatus(r.status),
        scheduled_at=r.scheduled_at,
        created_at=r.created_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        params=dict(r.params or {}),
    )


def _instance(r: Any) -> InstanceRow:
    stats = InstanceStats(
        status=InstanceStatus(r.status),
        handled=r.handled,
        failed=r.failed,
        dead_lettered=r.dead_lettered,
        in_flight=r.in_flight,
        rate=r.rate,
        partitions=tuple(r.partitions or ()),
        last_error=r.last_error,
    )
    return InstanceRow(
        id=r.id,
        flow=r.flow,
        consumer=r.consumer,
        host=r.host,
        pid=r.pid,
        started_at=r.started_at,
        heartbeat_at=r.heartbeat_at,
        stopped_at=r.stopped_at,
        stats=stats,
    )


def _dead_letter(r: Any) -> DeadLetterRow:
    return DeadLetterRow(
        id=r.id,
        flow=r.flow,
        consumer=r.consumer,
        instance_id=r.instance_id,
        at=r.at,
        topic=r.topic,
        partition=r.partition,
        message_id=r.message_id,
        failures=r.failures,
        dead_letter_topic=r.dead_letter_topic,
        error=r.error,
    )


def _decision(r: Any) -> ScaleDecisionRow:
    return ScaleDecisionRow(
        id=r.id,
        flow=r.flow,
        consumer=r.consumer,
        taken_at=r.taken_at,
        backlog=r.backlog,
        per_partition={int(k): int(v) for k, v in (r.per_partition or {}).items()},
        partitions=r.partitions,
        reading_error=r.reading_error,
        current=r.current,
        desired=r.desired,
        applied=bool(r.applied),
        reason=r.reason,
        explanation=r.explanation,
        rule=dict(r.rule or {}),
    )


def _attempt(r: Any) -> AttemptRow:
    error = None
    if r.error_type is not None:
        error = ErrorInfo(
            r.error_type,
            r.error_message or "",
            r.error_traceback or "",
            r.error_function,
            r.error_location,
        )
    return AttemptRow(
        id=r.id,
        job_run_id=r.job_run_id,
        number=r.number,
        status=AttemptStatus(r.status),
        started_at=r.started_at,
        finished_at=r.finished_at,
        exit_code=r.exit_code,
        pid=r.pid,
        host=r.host,
        stdout=r.stdout or "",
        stderr=r.stderr or "",
        error=error,
    )
