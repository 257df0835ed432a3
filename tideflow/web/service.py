"""The dashboard's answers, computed from the run history.

`Dashboard` has one method per question the pages and the JSON API answer; both
call the same methods, so a page shows exactly what its API endpoint returns.
Its actions (trigger, retry, cancel) only write requests into the store: the
orchestrator running the flow picks them up.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import shlex
import threading
import zoneinfo
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, Final

from tideflow.compiler.describe import describe_schedule
from tideflow.compiler.ir import (
    ConsumerNode,
    EnvRef,
    FlowIR,
    JobNode,
    RetryPolicy,
    ScaleRule,
    Schedule,
    SecretRef,
)
from tideflow.compiler.irjson import from_json
from tideflow.dsl.durations import format_duration
from tideflow.dsl.suggest import suggest
from tideflow.runtime.model import (
    AttemptRow,
    InstanceRow,
    JobRunRow,
    RunStatus,
    ScaleDecisionRow,
    TriggerKind,
)
from tideflow.runtime.schedule import (
    count_fires_by_day,
    day_windows,
    end_of_month,
    fire_times,
    last_fire,
    next_fire,
)
from tideflow.runtime.store import FlowRecord, Store, utcnow

from .flowgraph import GraphCache, ir_hash
from .models import (
    AttemptInfo,
    Balance,
    CancelAccepted,
    ConsumerDetail,
    ConsumerInfo,
    ConsumerLogLine,
    Consumers,
    DeadLetterInfo,
    DecisionInfo,
    ErrorSummary,
    FlowDetail,
    FlowRunInfo,
    FlowSummary,
    Health,
    HistoryPoint,
    InstanceInfo,
    JobInfo,
    JobRunSummary,
    LogLineInfo,
    OrchestratorInfo,
    Overview,
    RunDetail,
    ScaleRuleInfo,
    SchedulerStatus,
    TriggerAccepted,
    TriggerRequestInfo,
    Upcoming,
    UpcomingDay,
    UpcomingDayEntry,
    UpcomingInstant,
    UpcomingJob,
    Window,
)

__all__ = [
    "ACTIVE_STATUSES",
    "WINDOWS",
    "ConflictError",
    "Dashboard",
    "InvalidRequestError",
    "NotFoundError",
    "assess_balance",
    "describe_value",
]

WINDOWS: Final[Mapping[str, timedelta]] = {
    "5m": timedelta(minutes=5),
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
ACTIVE_STATUSES: Final = (
    RunStatus.PENDING,
    RunStatus.QUEUED,
    RunStatus.RUNNING,
    RunStatus.RETRYING,
)
# statuses after which nothing more happens to a job run (upstream_failed included:
# RunStatus.finished leaves it out, but no attempt ever follows it)
_TERMINAL: Final = frozenset({*(s for s in RunStatus if s.finished), RunStatus.UPSTREAM_FAILED})
_RETRYABLE: Final = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})
MAX_UPCOMING_DAYS: Final = 400
# The consumers page shows each consumer's newest dead letters and log lines.
CONSUMER_DEAD_LETTERS_SHOWN: Final = 10
CONSUMER_LOG_LINES_SHOWN: Final = 50
_MICROSECOND: Final = timedelta(microseconds=1)
_SKEW_BALANCED: Final = 1.5


class NotFoundError(Exception):
    """What was asked for does not exist; the message says what and may suggest a name."""


class ConflictError(Exception):
    """The action does not apply in the thing's current state (a finished run, ...)."""


class InvalidRequestError(Exception):
    """The question cannot be answered as asked (a window too long, ...)."""


@dataclass(frozen=True, slots=True)
class _LoadedFlow:
    record: FlowRecord
    digest: str
    ir: FlowIR | None
    problem: str | None  # why the IR could not be read


class Dashboard:
    """Answers from one store. Thread-safe (FastAPI calls it from its thread pool)."""

    def __init__(
        self,
        store: Store,
        *,
        zone: tzinfo = UTC,
        instance_alive_seconds: float = 15.0,
        scheduler_stale_seconds: float = 30.0,
        now: Callable[[], datetime] = utcnow,
        graphs: GraphCache | None = None,
        schedule_zones: bool = False,
    ) -> None:
        self.store = store
        self.zone = zone
        # no zone chosen by the operator: count upcoming days on the schedules' wall
        # clock, so a 22:00 New York run on Dec 31 is a Dec 31 run wherever the server is
        self.schedule_zones = schedule_zones
        self.instance_alive_seconds = instance_alive_seconds
        self.scheduler_stale_seconds = scheduler_stale_seconds
        self.now = now
        self.graphs = graphs or GraphCache()
        self._irs: OrderedDict[str, FlowIR | str] = OrderedDict()
        self._irs_lock = threading.Lock()

    # --- the overview ------------------------------------------------------------------

    def overview(self, window: Window = "1h") -> Overview:
        now = self.now()
        since = now - WINDOWS[window]
        counts = self.store.status_counts(since=since)
        records = {record.name: record for record in self.store.flows()}
        active = self.store.job_runs(status=ACTIVE_STATUSES, limit=200)
        failures = self.store.job_runs(status=RunStatus.FAILED, since=since, limit=20)
        names = set(records) | {flow for flow, _, _ in counts} | {r.flow for r in active}
        flows = [
            self._flow_summary(name, records.get(name), counts, active) for name in sorted(names)
        ]
        flows.sort(key=lambda f: (f.health != "failing", f.failed_in_window == 0, f.name))
        totals: Counter[str] = Counter()
        for (_, _, status), n in counts.items():
            totals[status.value] += n
        return Overview(
            now=now,
            window=window,
            since=since,
            totals=dict(totals),
            flows=flows,
            recent_failures=[self._summary(row) for row in failures],
            active=[self._summary(row) for row in active],
            pending_requests=self.trigger_requests(),
            scheduler=self.scheduler(),
        )

    def trigger_requests(
        self, *, flow: str | None = None, pending_only: bool = True, limit: int = 50
    ) -> list[TriggerRequestInfo]:
        """Manual and retry requests, newest first; `pending_only` keeps the unclaimed ones."""
        found = self.store.trigger_requests(flow=flow, pending_only=pending_only, limit=limit)
        return [TriggerRequestInfo.model_validate(r, from_attributes=True) for r in found]

    def scheduler(self) -> SchedulerStatus:
        leaders = {lease.holder for lease in self.store.leases() if lease.led}
        found = [
            OrchestratorInfo.model_validate(o, from_attributes=True).model_copy(
                update={
                    "role": "leader"
                    if o.alive and o.id in leaders
                    else ("standby" if o.alive else "stopped")
                }
            )
            for o in self.store.orchestrators(stale_after=self.scheduler_stale_seconds)
        ]
        last = max((o.heartbeat_at for o in found), default=None)
        return SchedulerStatus(
            last_tick=last, alive=any(o.alive for o in found), orchestrators=found
        )

    def _flow_summary(
        self,
        name: str,
        record: FlowRecord | None,
        counts: Mapping[tuple[str, str, RunStatus], int],
        active: Sequence[JobRunRow],
    ) -> FlowSummary:
        by_status: Counter[str] = Counter()
        for (flow, _, status), n in counts.items():
            if flow == name:
                by_status[status.value] += n
        last = sorted(self.store.last_job_runs(name).values(), key=lambda r: r.job)
        running = [r for r in active if r.flow == name]
        health: Health
        if any(r.status is RunStatus.FAILED for r in last):
            health = "failing"
        elif running:
            health = "running"
        elif last:
            health = "ok"
        else:
            health = "idle"
        description = None
        if record is not None:
            loaded = self._load(record)
            description = loaded.ir.info.description if loaded.ir else None
        return FlowSummary(
            name=name,
            description=description,
            health=health,
            counts=dict(by_status),
            failed_in_window=by_status[RunStatus.FAILED.value],
            last_runs=[self._summary(r) for r in last],
            active=[self._summary(r) for r in running],
            known=record is not None,
        )

    # --- runs --------------------------------------------------------------------------

    def runs(
        self,
        *,
        flow: str | None = None,
        job: str | None = None,
        status: Sequence[RunStatus] = (),
        window: Window | None = None,
        limit: int = 50,
    ) -> list[JobRunSummary]:
        since = self.now() - WINDOWS[window] if window else None
        rows = self.store.job_runs(
            flow=flow, job=job, status=list(status) or None, since=since, limit=limit
        )
        return [self._summary(row) for row in rows]

    def run(self, job_run_id: int) -> RunDetail:
        row = self.store.job_run(job_run_id)
        if row is None:
            raise NotFoundError(f"no run {job_run_id}")
        flow_run = self.store.flow_run(row.flow_run_id)
        siblings = sorted(
            self.store.job_runs(flow_run_id=row.flow_run_id, limit=None), key=lambda r: r.id
        )
        attempts = self.store.attempts(job_run_id)
        return RunDetail(
            run=self._summary(row, attempts),
            flow_run=None
            if flow_run is None
            else FlowRunInfo(
                id=flow_run.id,
                flow=flow_run.flow,
                root_job=flow_run.root_job,
                trigger=flow_run.trigger.value,
                status=flow_run.status.value,
                scheduled_at=flow_run.scheduled_at,
                created_at=flow_run.created_at,
                started_at=flow_run.started_at,
                finished_at=flow_run.finished_at,
                params=flow_run.params,
            ),
            siblings=[self._summary(r) for r in siblings],
            attempts=[self._attempt(a) for a in attempts],
            can_cancel=row.status not in _TERMINAL and not row.cancel_requested,
            can_retry=row.status in _RETRYABLE and self._job_exists(row.flow, row.job),
        )

    def _attempt(self, attempt: AttemptRow) -> AttemptInfo:
        took = None
        if attempt.finished_at is not None:
            took = (attempt.finished_at - attempt.started_at).total_seconds()
        return AttemptInfo(
            id=attempt.id,
            number=attempt.number,
            status=attempt.status.value,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
            duration_seconds=took,
            exit_code=attempt.exit_code,
            pid=attempt.pid,
            host=attempt.host,
            stdout=attempt.stdout,
            stderr=attempt.stderr,
            error=_error(attempt),
            traceback=attempt.error.traceback if attempt.error else None,
            logs=[
                LogLineInfo(seq=line.seq, at=line.at, level=line.level, message=line.message)
                for line in self.store.logs(attempt.id)
            ],
        )

    def _summary(
        self, row: JobRunRow, attempts: Sequence[AttemptRow] | None = None
    ) -> JobRunSummary:
        error = None
        if row.status is RunStatus.FAILED:
            found = self.store.attempts(row.id) if attempts is None else attempts
            error = next((_error(a) for a in reversed(found) if a.error is not None), None)
        return JobRunSummary(
            id=row.id,
            flow_run_id=row.flow_run_id,
            flow=row.flow,
            job=row.job,
            trigger=row.trigger.value,
            status=row.status.value,
            scheduled_at=row.scheduled_at,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            duration_seconds=row.duration,
            attempts=row.attempts,
            cancel_requested=row.cancel_requested,
            note=row.note,
            error=error,
        )

    # --- flows -------------------------------------------------------------------------

    def flow_names(self) -> list[str]:
        return [record.name for record in self.store.flows()]

    def _record(self, name: str) -> FlowRecord:
        record = self.store.flow(name)
        if record is None:
            raise NotFoundError(f'no flow "{name}"' + _suggest(name, self.flow_names()))
        return record

    def _load(self, record: FlowRecord) -> _LoadedFlow:
        digest = ir_hash(record.ir)
        with self._irs_lock:
            parsed = self._irs.get(digest)
        if parsed is None:
            try:
                parsed = from_json(record.ir)
            except ValueError as exc:
                parsed = str(exc)
            with self._irs_lock:
                self._irs[digest] = parsed
                while len(self._irs) > 64:
                    self._irs.popitem(last=False)
        if isinstance(parsed, str):
            return _LoadedFlow(record, digest, None, parsed)
        return _LoadedFlow(record, digest, parsed, None)

    def _job_exists(self, flow: str, job: str) -> bool:
        record = self.store.flow(flow)
        if record is None:
            return False
        loaded = self._load(record)
        return loaded.ir is not None and job in loaded.ir.jobs

    def flow_ir(self, name: str) -> dict[str, Any]:
        """The flow's IR document as stored (secrets are references in it, never values)."""
        return dict(self._record(name).ir)

    def flow(self, name: str, window: Window = "24h") -> FlowDetail:
        record = self._record(name)
        loaded = self._load(record)
        now = self.now()
        last = self.store.last_job_runs(name)
        counts = self.store.status_counts(flow=name, since=now - WINDOWS[window])
        by_job: dict[str, Counter[str]] = {}
        for (_, job_name, status), n in counts.items():
            by_job.setdefault(job_name, Counter())[status.value] += n
        jobs: list[JobInfo] = []
        consumers: list[ConsumerInfo] = []
        info_zone, description = "UTC", None
        if loaded.ir is not None:
            ir = loaded.ir
            info_zone, description = ir.info.timezone, ir.info.description
            for job in sorted(ir.jobs.values(), key=lambda j: j.name):
                last_run = last.get(job.name)
                jobs.append(
                    _job_info(
                        job,
                        None if last_run is None else self._summary(last_run),
                        _next_run(job.schedule, now),
                        dict(by_job.get(job.name, Counter())),
                    )
                )
            topics = ir.topics
            for consumer in sorted(ir.consumers.values(), key=lambda c: c.name):
                topic = topics.get(consumer.consumes)
                consumers.append(
                    _consumer_info(consumer, topic.partitions if topic is not None else None)
                )
        orchestrators = self.store.orchestrators(stale_after=self.scheduler_stale_seconds)
        return FlowDetail(
            name=name,
            description=description,
            timezone=info_zone,
            source=record.source,
            updated_at=record.updated_at,
            ir_hash=loaded.digest,
            jobs=jobs,
            consumers=consumers,
            recent_runs=[self._summary(r) for r in self.store.job_runs(flow=name, limit=30)],
            pending_requests=self.trigger_requests(flow=name),
            orchestrator_alive=any(o.alive and name in o.flows for o in orchestrators),
        )

    def flow_problem(self, name: str) -> str | None:
        """Why the flow's IR cannot be read (None when it can)."""
        return self._load(self._record(name)).problem

    def flow_graph(self, name: str) -> str:
        """The flow's picture as an `<svg>` element, jobs marked with their last status.

        Raises NotFoundError, or flowgraph.GraphUnavailable without graphviz."""
        loaded = self._load(self._record(name))
        if loaded.ir is None:
            raise ConflictError(f'the IR of flow "{name}" cannot be read: {loaded.problem}')
        statuses = {job: row.status.value for job, row in self.store.last_job_runs(name).items()}
        return self.graphs.svg(loaded.digest, loaded.ir, statuses)

    # --- upcoming ----------------------------------------------------------------------

    def upcoming(
        self,
        *,
        flow: str | None = None,
        start: datetime | None = None,
        until: datetime | None = None,
        limit: int = 200,
    ) -> Upcoming:
        """Scheduled instants in [start, until]: by default from now to the end of the
        month (in `upcoming_zone(flow)`, where days are counted too); `limit` bounds
        the list of single instants."""
        zone = self.upcoming_zone(flow)
        start = (start or self.now()).astimezone(UTC)
        until = (until or end_of_month(start, zone)).astimezone(UTC)
        if until < start:
            raise InvalidRequestError("`until` is before `start`")
        if until - start > timedelta(days=MAX_UPCOMING_DAYS):
            raise InvalidRequestError(f"the window is longer than {MAX_UPCOMING_DAYS} days")
        schedules = [
            (name, job, schedule)
            for name, job, schedule in self._schedules(flow)
            if _valid(schedule, start)
        ]
        days = day_windows(start, until, zone)
        jobs: list[UpcomingJob] = []
        per_day: dict[date, list[UpcomingDayEntry]] = {}
        for flow_name, job_name, schedule in schedules:
            total, exact = 0, True
            first: datetime | None = None
            last: datetime | None = None
            counted = count_fires_by_day(schedule, days)
            for (day, _, _), (count, day_exact, day_first) in zip(days, counted, strict=True):
                if count == 0 or day_first is None:
                    continue
                total += count
                exact = exact and day_exact
                first = first or day_first
                per_day.setdefault(day, []).append(
                    UpcomingDayEntry(
                        flow=flow_name, job=job_name, count=count, exact=day_exact, first=day_first
                    )
                )
            if first is not None:
                last = last_fire(schedule, until, first)
            jobs.append(
                UpcomingJob(
                    flow=flow_name,
                    job=job_name,
                    schedule=_describe_schedule(schedule),
                    count=total,
                    exact=exact,
                    first=first,
                    last=last,
                )
            )
        merged = heapq.merge(
            *(
                _labelled(s, start, until, flow_name, job_name)
                for flow_name, job_name, s in schedules
            )
        )
        listed = list(itertools.islice(merged, limit + 1))
        return Upcoming(
            start=start,
            until=until,
            timezone=_zone_name(zone),
            jobs=jobs,
            instants=[UpcomingInstant(at=at, flow=f, job=j) for at, f, j in listed[:limit]],
            truncated=len(listed) > limit,
            days=[
                UpcomingDay(day=day, entries=sorted(entries, key=lambda e: (e.first, e.job)))
                for day, entries in sorted(per_day.items())
            ],
        )

    def upcoming_zone(self, flow: str | None = None) -> tzinfo:
        """The zone upcoming days are counted and shown in: the display zone when the
        operator chose one (`serve --timezone`); else the one zone all the schedules
        shown (the flow's, or every flow's) fire in, else the flow's own zone, else the
        display zone."""
        if not self.schedule_zones:
            return self.zone
        names = {schedule.timezone for _, _, schedule in self._schedules(flow)}
        if len(names) == 1:
            return _zone(names.pop())
        if flow is not None:
            ir = self._load(self._record(flow)).ir
            if ir is not None:
                return _zone(ir.info.timezone)
        return self.zone

    def _schedules(self, flow: str | None) -> list[tuple[str, str, Schedule]]:
        """(flow, job, schedule) of every scheduled job of `flow`, or of every flow."""
        records = [self._record(flow)] if flow is not None else self.store.flows()
        found: list[tuple[str, str, Schedule]] = []
        for record in records:
            ir = self._load(record).ir
            if ir is None:
                continue
            for job in sorted(ir.jobs.values(), key=lambda j: j.name):
                if job.schedule is not None:
                    found.append((record.name, job.name, job.schedule))
        return found

    # --- consumers ---------------------------------------------------------------------

    def consumers(self, *, flow: str | None = None, window: Window = "1h") -> Consumers:
        now = self.now()
        since = now - WINDOWS[window]
        records = [self._record(flow)] if flow is not None else self.store.flows()
        nodes: dict[tuple[str, str], tuple[ConsumerNode, int | None]] = {}
        for record in records:
            ir = self._load(record).ir
            if ir is None:
                continue
            topics = ir.topics
            for consumer in ir.consumers.values():
                topic = topics.get(consumer.consumes)
                partitions = topic.partitions if topic is not None else None
                nodes[(record.name, consumer.name)] = (consumer, partitions)
        keys = set(nodes) | self.store.consumers_seen(flow=flow)
        instances: dict[tuple[str, str], list[InstanceRow]] = {}
        for row in self.store.instances(flow=flow, active_since=since):
            instances.setdefault((row.flow, row.consumer), []).append(row)
        alive_after = now - timedelta(seconds=self.instance_alive_seconds)
        dead_total = self.store.dead_letter_counts(flow=flow)
        dead_recent = self.store.dead_letter_counts(flow=flow, since=since)
        details = []
        for key in sorted(keys):
            flow_name, name = key
            node, _partitions = nodes.get(key, (None, None))
            rows = instances.get(key, [])
            alive_rows = [r for r in rows if r.stopped_at is None and r.heartbeat_at >= alive_after]
            recent = self.store.decisions(flow=flow_name, consumer=name, since=since, limit=5000)
            newest = recent[:1] or self.store.decisions(flow=flow_name, consumer=name, limit=1)
            latest = _decision(newest[0]) if newest else None
            rule = node.scale if node is not None else None
            details.append(
                ConsumerDetail(
                    flow=flow_name,
                    consumer=name,
                    topic=node.consumes if node else None,
                    group=node.group if node else None,
                    scale=_rule_info(rule) if rule else None,
                    alive=len(alive_rows),
                    instances=[_instance(r, r in alive_rows) for r in rows],
                    latest=latest,
                    decisions=[_decision(d) for d in (recent[:20] or newest)],
                    balance=assess_balance(
                        latest.per_partition if latest else {},
                        alive_rows,
                        rule.lag_per_instance if rule else None,
                    ),
                    history=[
                        HistoryPoint(
                            at=d.taken_at, backlog=d.backlog, current=d.current, desired=d.desired
                        )
                        for d in reversed(recent)
                    ],
                    dead_letter=node.dead_letter if node else None,
                    dead_lettered=dead_total.get(key, 0),
                    dead_lettered_window=dead_recent.get(key, 0),
                    dead_letters=[
                        DeadLetterInfo(
                            at=d.at,
                            instance=d.instance_id,
                            topic=d.topic,
                            partition=d.partition,
                            id=d.message_id,
                            failures=d.failures,
                            dead_letter_topic=d.dead_letter_topic,
                            error=d.error,
                        )
                        for d in self.store.dead_letters(
                            flow=flow_name, consumer=name, limit=CONSUMER_DEAD_LETTERS_SHOWN
                        )
                    ],
                    log=[
                        ConsumerLogLine(
                            at=line.at,
                            instance=line.instance_id,
                            level=line.level,
                            message=line.message,
                        )
                        for line in self.store.consumer_logs(
                            flow_name, name, limit=CONSUMER_LOG_LINES_SHOWN
                        )
                    ],
                )
            )
        return Consumers(now=now, window=window, consumers=details)

    # --- actions -----------------------------------------------------------------------

    def trigger(
        self,
        flow: str,
        job: str,
        params: Mapping[str, Any] | None = None,
        *,
        requested_by: str,
        kind: TriggerKind = TriggerKind.MANUAL,
    ) -> TriggerAccepted:
        """Ask the orchestrator running `flow` to start `job` (and what follows it)."""
        loaded = self._load(self._record(flow))
        if loaded.ir is None:
            raise ConflictError(f'the IR of flow "{flow}" cannot be read: {loaded.problem}')
        if job not in loaded.ir.jobs:
            raise NotFoundError(f'flow "{flow}" has no job "{job}"' + _suggest(job, loaded.ir.jobs))
        request_id = self.store.request_trigger(
            flow, job, params=dict(params or {}), trigger=kind, requested_by=requested_by
        )
        return TriggerAccepted(
            request_id=request_id, flow=flow, job=job, trigger=kind.value, params=dict(params or {})
        )

    def retry(self, job_run_id: int, *, requested_by: str) -> TriggerAccepted:
        """Start a failed (or cancelled) job run's job again, with its flow run's params."""
        row = self.store.job_run(job_run_id)
        if row is None:
            raise NotFoundError(f"no run {job_run_id}")
        if row.status not in _RETRYABLE:
            raise ConflictError(
                f"run {job_run_id} is {row.status.value}: only failed or cancelled runs are retried"
            )
        flow_run = self.store.flow_run(row.flow_run_id)
        params = flow_run.params if flow_run is not None else {}
        return self.trigger(
            row.flow, row.job, params, requested_by=requested_by, kind=TriggerKind.RETRY
        )

    def cancel(self, job_run_id: int) -> CancelAccepted:
        row = self.store.job_run(job_run_id)
        if row is None:
            raise NotFoundError(f"no run {job_run_id}")
        if row.status in _TERMINAL or not self.store.request_cancel(job_run_id):
            raise ConflictError(f"run {job_run_id} has already finished ({row.status.value})")
        return CancelAccepted(job_run_id=job_run_id, requested=True)


# --- records to answers ----------------------------------------------------------------------


def _error(attempt: AttemptRow) -> ErrorSummary | None:
    if attempt.error is None:
        return None
    return ErrorSummary(
        type=attempt.error.type,
        message=attempt.error.message,
        function=attempt.error.function,
        location=attempt.error.location,
    )


def describe_value(value: object) -> str:
    """A value as the flow file writes it; `secret()` and `env()` stay references."""
    if isinstance(value, SecretRef):
        return f'secret("{value.name}")'
    if isinstance(value, EnvRef):
        if value.default is None:
            return f'env("{value.name}")'
        return f'env("{value.name}", "{value.default}")'
    return str(value)


def _command_text(command: object) -> str:
    if isinstance(command, str):
        return command
    if isinstance(command, Iterable):
        return " ".join(
            describe_value(part) if not isinstance(part, str) else shlex.quote(part)
            for part in command
        )
    return describe_value(command)


_ZERO: Final = "0ms"  # the dashboard has always shown a zero duration so, as the graph does


def _describe_schedule(schedule: Schedule) -> str:
    return describe_schedule(schedule, interval=functools.partial(format_duration, zero=_ZERO))


def _retry_text(policy: RetryPolicy) -> str | None:
    if policy.attempts <= 1:
        return None
    text = f"{policy.attempts} attempts"
    backoff = policy.backoff
    if backoff is not None:
        if backoff.kind == "exponential":
            cap = (
                f" up to {format_duration(backoff.cap, zero=_ZERO)}"
                if backoff.cap is not None
                else ""
            )
            text += f", exponential from {format_duration(backoff.initial, zero=_ZERO)}{cap}"
        else:
            text += f", {format_duration(backoff.initial, zero=_ZERO)} apart"
    if policy.jitter:
        text += ", with jitter"
    return text


def _job_info(
    job: JobNode,
    last_run: JobRunSummary | None,
    next_run: datetime | None,
    counts: dict[str, int],
) -> JobInfo:
    return JobInfo(
        name=job.name,
        description=job.description,
        runs=job.run if job.run else _command_text(job.command),
        schedule=_describe_schedule(job.schedule) if job.schedule else None,
        timezone=job.schedule.timezone if job.schedule else None,
        after=list(job.after),
        trigger_rule=job.trigger,
        retry=_retry_text(job.retry),
        timeout_seconds=job.timeout,
        env={key: describe_value(value) for key, value in sorted(job.env.items())},
        last_run=last_run,
        next_run=next_run,
        counts=counts,
    )


def _rule_info(rule: ScaleRule) -> ScaleRuleInfo:
    return ScaleRuleInfo(
        backend=rule.backend,
        min=rule.min,
        max=rule.max,
        lag_per_instance=rule.lag_per_instance,
        activation_lag=rule.activation_lag,
        poll_seconds=rule.poll,
        cooldown_seconds=rule.cooldown,
    )


def _consumer_info(consumer: ConsumerNode, partitions: int | None) -> ConsumerInfo:
    return ConsumerInfo(
        name=consumer.name,
        topic=consumer.consumes,
        group=consumer.group,
        partitions=partitions,
        runs=consumer.run,
        scale=_rule_info(consumer.scale) if consumer.scale else None,
    )


def _instance(row: InstanceRow, alive: bool) -> InstanceInfo:
    stats = row.stats
    return InstanceInfo(
        id=row.id,
        host=row.host,
        pid=row.pid,
        status=stats.status.value,
        alive=alive,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        stopped_at=row.stopped_at,
        handled=stats.handled,
        failed=stats.failed,
        dead_lettered=stats.dead_lettered,
        in_flight=stats.in_flight,
        rate=stats.rate,
        partitions=sorted(stats.partitions),
        last_error=stats.last_error,
    )


def _decision(row: ScaleDecisionRow) -> DecisionInfo:
    return DecisionInfo(
        id=row.id,
        taken_at=row.taken_at,
        backlog=row.backlog,
        per_partition=dict(sorted(row.per_partition.items())),
        partitions=row.partitions,
        reading_error=row.reading_error,
        current=row.current,
        desired=row.desired,
        applied=row.applied,
        reason=row.reason,
        explanation=row.explanation,
    )


def _assess_shared_queue(backlog: int, alive: Sequence[InstanceRow]) -> Balance:
    """One partition (a NATS durable, a one-partition topic) read by several live
    instances: the work is shared when every instance holds or handles messages.
    An instance that holds the whole backlog leaves the others idle while messages
    wait."""
    working = [r for r in alive if r.stats.in_flight > 0 or r.stats.rate > 0]
    idle = len(alive) - len(working)
    if backlog == 0 and not working:
        return Balance(balanced=None, summary="no backlog: nothing to share", skew=None)
    if not working:
        summary = f"none of {len(alive)} live instances is handling messages"
        return Balance(balanced=None, summary=f"{summary} ({backlog:,} waiting)", skew=None)
    if idle and backlog > 0:
        return Balance(
            balanced=False,
            summary=(
                f"unbalanced: {idle} of {len(alive)} live instances handle nothing while "
                f"{backlog:,} messages wait (an instance holds at most `max_in_flight`)"
            ),
            skew=None,
        )
    if idle:
        summary = f"{len(working)} of {len(alive)} live instances are busy; no backlog waits"
        return Balance(balanced=None, summary=summary, skew=None)
    return Balance(
        balanced=True,
        summary=f"balanced: all {len(alive)} live instances are handling messages",
        skew=None,
    )


def assess_balance(
    per_partition: Mapping[int, int],
    alive: Sequence[InstanceRow],
    lag_per_instance: int | None,
) -> Balance:
    """Whether the backlog is spread evenly over the partitions, and whether every live
    instance holds some; `skew` is the largest partition's backlog over the mean.
    With one partition and several live instances, whether every one of them works."""
    idle = [r.id for r in alive if not r.stats.partitions]
    busy = [r for r in alive if r.stats.partitions]
    idle_note = ""
    if idle and busy:
        idle_note = f"; {len(idle)} of {len(alive)} live instances hold no partition"
    elif sum(per_partition.values()) > 0:
        # partitions spread evenly, yet one instance may hold the messages of several
        # (taken before the others joined) while the others wait for them
        waiting = [r for r in alive if r.stats.in_flight == 0 and r.stats.rate == 0]
        if waiting and len(waiting) < len(alive):
            idle_note = (
                f"; {len(waiting)} of {len(alive)} live instances handle nothing while "
                f"{sum(per_partition.values()):,} messages wait"
            )
    if len(per_partition) < 2:
        if per_partition and len(alive) >= 2:
            return _assess_shared_queue(sum(per_partition.values()), alive)
        text = (
            "one partition: nothing to balance"
            if per_partition
            else "no per-partition backlog reported yet"
        )
        return Balance(balanced=None, summary=text + idle_note, skew=None)
    total = sum(per_partition.values())
    floor = max(len(per_partition), lag_per_instance or 0)
    if total < floor:
        summary = f"backlog of {total:,} is too small to judge the spread"
        return Balance(
            balanced=None if not idle_note else False, summary=summary + idle_note, skew=None
        )
    mean = total / len(per_partition)
    hot, largest = max(per_partition.items(), key=lambda item: (item[1], -item[0]))
    skew = largest / mean
    if skew <= _SKEW_BALANCED and not idle_note:
        return Balance(
            balanced=True,
            summary=f"balanced: the fullest partition holds {skew:.1f}× the mean backlog",
            skew=skew,
        )
    if skew <= _SKEW_BALANCED:
        return Balance(balanced=False, summary=f"partitions balanced{idle_note}", skew=skew)
    share = largest / total
    return Balance(
        balanced=False,
        summary=(
            f"unbalanced: partition {hot} holds {share:.0%} of the backlog "
            f"({skew:.1f}× the mean){idle_note}"
        ),
        skew=skew,
    )


# --- schedules ------------------------------------------------------------------------------


def _zone(name: str) -> tzinfo:
    return UTC if name == "UTC" else zoneinfo.ZoneInfo(name)


def _labelled(
    schedule: Schedule, start: datetime, until: datetime, flow: str, job: str
) -> Iterator[tuple[datetime, str, str]]:
    for instant in fire_times(schedule, start - _MICROSECOND, until):
        yield instant, flow, job


def _next_run(schedule: Schedule | None, now: datetime) -> datetime | None:
    if schedule is None:
        return None
    try:
        return next_fire(schedule, now)
    except ValueError:
        return None


def _valid(schedule: Schedule, now: datetime) -> bool:
    try:
        next(fire_times(schedule, now), None)
    except ValueError:
        return False
    return True


def _zone_name(zone: tzinfo) -> str:
    return getattr(zone, "key", None) or str(zone)


def _suggest(name: str, known: Iterable[str]) -> str:
    close = suggest(name, known)
    return f"; {close}" if close else ""
