"""The runtime's vocabulary: run and attempt states, triggers, and the rows the store returns.

A *flow run* is one execution of a job's DAG, started by a trigger (a schedule
instant, a manual trigger, or another flow's job); it holds one *job run* per job
it reaches, and each job run holds its *attempts* (the first and every retry).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class RunStatus(enum.StrEnum):
    """State of a flow run or a job run."""

    PENDING = "pending"  # waiting for its dependencies
    QUEUED = "queued"  # ready, waiting for a pool slot, resources or concurrency
    RUNNING = "running"
    RETRYING = "retrying"  # an attempt failed; waiting for the backoff to pass
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"  # its trigger rule can no longer be satisfied, and nothing failed
    UPSTREAM_FAILED = "upstream_failed"  # not started: a dependency it needed failed
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset(
    {
        RunStatus.SUCCESS,
        RunStatus.FAILED,
        RunStatus.SKIPPED,
        RunStatus.UPSTREAM_FAILED,
        RunStatus.CANCELLED,
    }
)


class AttemptStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"  # the callable raised or the command exited non-zero
    TIMEOUT = "timeout"
    CRASHED = "crashed"  # the worker process died (signal, segfault, os._exit)
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the orchestrator stopped while it ran
    LOST = "lost"  # it was running when the orchestrator died; found at start-up

    @property
    def finished(self) -> bool:
        return self is not AttemptStatus.RUNNING


class TriggerKind(enum.StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    FLOW = "flow"  # after another flow's job
    RETRY = "retry"  # a failed run retried by an operator


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a Python attempt failed: enough to answer "which function threw"."""

    type: str  # qualified exception type, e.g. "ValueError" or "shop.errors.Late"
    message: str
    traceback: str
    function: str | None = None  # "module.function" where it was raised
    location: str | None = None  # "path/to/file.py:42"


@dataclass(frozen=True, slots=True)
class FlowRunRow:
    id: int
    flow: str
    root_job: str
    trigger: TriggerKind
    status: RunStatus
    scheduled_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobRunRow:
    id: int
    flow_run_id: int
    flow: str
    job: str
    trigger: TriggerKind
    status: RunStatus
    scheduled_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    cancel_requested: bool = False
    note: str | None = None  # why it ended without an attempt (skipped, upstream failed, ...)

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class AttemptRow:
    id: int
    job_run_id: int
    number: int  # 1 for the first attempt
    status: AttemptStatus
    started_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    pid: int | None
    host: str | None
    stdout: str
    stderr: str
    error: ErrorInfo | None
    executor: str | None = None  # the executor block it ran on; None: the built-in local
    executor_ref: str | None = None  # the engine's name for it (re-attaching goes by it)
    executor_where: str | None = None  # where it ran, as the executor said


@dataclass(frozen=True, slots=True)
class LogLine:
    attempt_id: int
    seq: int
    at: datetime
    level: str
    message: str


class InstanceStatus(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"  # told to stop: finishing what it holds
    STOPPED = "stopped"
    CRASHED = "crashed"


@dataclass(frozen=True, slots=True)
class InstanceStats:
    """What a consumer instance reports with each heartbeat."""

    status: InstanceStatus
    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    in_flight: int = 0
    rate: float = 0.0
    partitions: tuple[int, ...] = ()
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class InstanceRow:
    id: str
    flow: str
    consumer: str
    host: str
    pid: int | None
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    stats: InstanceStats


@dataclass(frozen=True, slots=True)
class ScaleDecisionRow:
    """One autoscaler decision with everything it was based on."""

    flow: str
    consumer: str
    taken_at: datetime
    backlog: int | None  # None when the reading failed
    per_partition: dict[int, int]
    partitions: int | None
    reading_error: str | None
    current: int
    desired: int
    applied: bool
    reason: str  # a short machine-readable word, e.g. "scale_up", "hold_cooldown"
    explanation: str  # "backlog 3,412 / 500 per instance = 7; capped by 6 partitions -> 6"
    rule: dict[str, Any]
    id: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """A message a consumer instance gave up on after `max_failures` handler failures:
    published to `dead_letter_topic`, or dropped when that is None."""

    flow: str
    consumer: str
    instance_id: str
    at: datetime
    topic: str
    partition: int
    message_id: str
    failures: int
    dead_letter_topic: str | None
    error: str
    id: int | None = None


@dataclass(frozen=True, slots=True)
class ConsumerLogLine:
    """A line a consumer instance logged (its handler's `ctx.logger`, or its own)."""

    instance_id: str
    at: datetime
    level: str
    message: str
