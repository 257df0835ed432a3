"""What the dashboard's JSON API returns: pydantic models, one per answer.

The HTML pages render these same objects, so a page never shows something the
API cannot give. Times are aware UTC datetimes; durations are seconds.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Window = Literal["5m", "1h", "24h", "7d"]
Health = Literal["failing", "running", "ok", "idle"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorSummary(_Model):
    """Why an attempt failed: the exception and where it was raised."""

    type: str
    message: str
    function: str | None = None
    location: str | None = None


class JobRunSummary(_Model):
    id: int
    flow_run_id: int
    flow: str
    job: str
    trigger: str
    status: str
    scheduled_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    attempts: int
    cancel_requested: bool
    note: str | None = Field(None, description="why it ended without an attempt")
    error: ErrorSummary | None = Field(
        None, description="the last attempt's error, for a failed run"
    )


class TriggerRequestInfo(_Model):
    id: int
    flow: str
    job: str
    trigger: str
    params: dict[str, Any]
    requested_at: datetime
    requested_by: str
    claimed: bool
    flow_run_id: int | None


class OrchestratorInfo(_Model):
    id: int
    host: str
    pid: int
    flows: list[str]
    started_at: datetime
    heartbeat_at: datetime = Field(description="the scheduler's last tick")
    stopped_at: datetime | None
    alive: bool
    role: str = Field(
        default="stopped",
        description="leader (holds its flows' lease), standby (alive, waiting to take "
        "over) or stopped",
    )


class SchedulerStatus(_Model):
    last_tick: datetime | None
    alive: bool = Field(description="an orchestrator ticked recently and has not stopped")
    orchestrators: list[OrchestratorInfo]


class FlowSummary(_Model):
    name: str
    description: str | None
    health: Health
    counts: dict[str, int] = Field(description="job runs by status, within the window")
    failed_in_window: int
    last_runs: list[JobRunSummary] = Field(description="each job's newest run")
    active: list[JobRunSummary] = Field(description="runs pending, queued, running or retrying")
    known: bool = Field(description="the flow's IR is in the store (it has run under tideflow run)")


class Overview(_Model):
    now: datetime
    window: Window
    since: datetime
    totals: dict[str, int] = Field(description="job runs by status, within the window")
    flows: list[FlowSummary] = Field(description="failing flows first")
    recent_failures: list[JobRunSummary]
    active: list[JobRunSummary]
    pending_requests: list[TriggerRequestInfo]
    scheduler: SchedulerStatus


class JobInfo(_Model):
    name: str
    description: str | None
    runs: str = Field(description='what it runs: "module:function" or the command')
    schedule: str | None
    timezone: str | None
    after: list[str]
    trigger_rule: str
    retry: str | None
    timeout_seconds: float | None
    env: dict[str, str] = Field(description='values as written: secret("NAME"), never a value')
    last_run: JobRunSummary | None
    next_run: datetime | None
    counts: dict[str, int]


class ScaleRuleInfo(_Model):
    backend: str
    min: int
    max: int
    lag_per_instance: int
    activation_lag: int
    poll_seconds: float
    cooldown_seconds: float


class ConsumerInfo(_Model):
    name: str
    topic: str
    group: str
    partitions: int | None
    runs: str
    scale: ScaleRuleInfo | None


class FlowDetail(_Model):
    name: str
    description: str | None
    timezone: str
    source: str
    updated_at: datetime
    ir_hash: str
    jobs: list[JobInfo]
    consumers: list[ConsumerInfo]
    recent_runs: list[JobRunSummary]
    pending_requests: list[TriggerRequestInfo]
    orchestrator_alive: bool


class LogLineInfo(_Model):
    seq: int
    at: datetime
    level: str
    message: str


class AttemptInfo(_Model):
    id: int
    number: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    exit_code: int | None
    pid: int | None
    host: str | None
    stdout: str
    stderr: str
    error: ErrorSummary | None
    traceback: str | None
    logs: list[LogLineInfo]


class FlowRunInfo(_Model):
    id: int
    flow: str
    root_job: str
    trigger: str
    status: str
    scheduled_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    params: dict[str, Any]


class RunDetail(_Model):
    run: JobRunSummary
    flow_run: FlowRunInfo | None
    siblings: list[JobRunSummary] = Field(description="the job runs of the same flow run")
    attempts: list[AttemptInfo]
    can_cancel: bool
    can_retry: bool


class UpcomingInstant(_Model):
    at: datetime
    flow: str
    job: str


class UpcomingJob(_Model):
    flow: str
    job: str
    schedule: str
    count: int = Field(description="instants in the window (a lower bound unless exact)")
    exact: bool
    first: datetime | None
    last: datetime | None


class UpcomingDayEntry(_Model):
    flow: str
    job: str
    count: int
    exact: bool
    first: datetime


class UpcomingDay(_Model):
    day: date
    entries: list[UpcomingDayEntry]


class Upcoming(_Model):
    start: datetime
    until: datetime
    timezone: str = Field(description="the zone that days are counted in")
    jobs: list[UpcomingJob]
    instants: list[UpcomingInstant] = Field(description="the first instants, in time order")
    truncated: bool = Field(description="more instants exist than `instants` lists")
    days: list[UpcomingDay]


class InstanceInfo(_Model):
    id: str
    host: str
    pid: int | None
    status: str
    alive: bool
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    handled: int
    failed: int
    dead_lettered: int
    in_flight: int
    rate: float
    partitions: list[int]
    last_error: str | None


class DecisionInfo(_Model):
    id: int | None
    taken_at: datetime
    backlog: int | None
    per_partition: dict[int, int]
    partitions: int | None
    reading_error: str | None
    current: int
    desired: int
    applied: bool
    reason: str
    explanation: str


class Balance(_Model):
    balanced: bool | None = Field(description="None when there is too little to tell")
    summary: str
    skew: float | None = Field(description="largest partition backlog / mean partition backlog")


class HistoryPoint(_Model):
    at: datetime
    backlog: int | None
    current: int
    desired: int


class DeadLetterInfo(_Model):
    """A message a consumer gave up on after `max_failures` handler failures."""

    at: datetime
    instance: str
    topic: str = Field(description="the topic it was consumed from")
    partition: int
    id: str = Field(description="its id on that topic")
    failures: int
    dead_letter_topic: str | None = Field(description="None: dropped (no dead-letter topic)")
    error: str


class ConsumerLogLine(_Model):
    at: datetime
    instance: str
    level: str
    message: str


class ConsumerDetail(_Model):
    flow: str
    consumer: str
    topic: str | None
    group: str | None
    scale: ScaleRuleInfo | None
    alive: int
    instances: list[InstanceInfo]
    latest: DecisionInfo | None
    decisions: list[DecisionInfo] = Field(description="the newest decisions, newest first")
    balance: Balance
    history: list[HistoryPoint] = Field(description="decisions within the window, oldest first")
    dead_letter: str | None = Field(default=None, description="the consumer's dead-letter topic")
    dead_lettered: int = Field(default=0, description="messages given up on, in all")
    dead_lettered_window: int = Field(default=0, description="messages given up on in the window")
    dead_letters: list[DeadLetterInfo] = Field(
        default_factory=list, description="the newest dead letters, newest first"
    )
    log: list[ConsumerLogLine] = Field(
        default_factory=list, description="the newest lines its instances logged, oldest first"
    )


class Consumers(_Model):
    now: datetime
    window: Window
    consumers: list[ConsumerDetail]


class TriggerBody(_Model):
    params: dict[str, Any] = Field(default_factory=dict)


class TriggerAccepted(_Model):
    request_id: int
    flow: str
    job: str
    trigger: str
    params: dict[str, Any]


class CancelAccepted(_Model):
    job_run_id: int
    requested: bool


class Problem(_Model):
    detail: str
