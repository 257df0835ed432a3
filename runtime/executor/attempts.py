"""One attempt of a job, as the executor's driver sees it, whoever runs it.

The driver decides when a job may run and what its outcome means (retry, fail,
notify); an *attempt runner* runs one attempt and reports an `AttemptOutcome`.
`Attempt` is what the driver hands a runner: what to run, and the two calls
back a runner makes, `record_start` once the attempt has a process (or failed
before having one) and `watch` with the handle that kills it (timeouts and
cancellations go through it). The runner of this machine is `local.LocalAttempts`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from tideflow.compiler.ir import JobNode
from tideflow.runtime import secrets
from tideflow.runtime.job_worker import qualified_name
from tideflow.runtime.model import AttemptStatus, ErrorInfo
from tideflow.runtime.resources import Demand
from tideflow.runtime.worker_pool import Captured

__all__ = [
    "Attempt",
    "AttemptOutcome",
    "AttemptRunner",
    "AttemptTimeout",
    "JobSpec",
    "RecordStart",
    "RunningAttempt",
    "UnschedulableError",
    "WorkerCrashed",
    "killed_error",
    "redacted",
    "summary",
]


class AttemptTimeout(Exception):
    """An attempt ran longer than the job's timeout (recorded as the attempt's error)."""


class WorkerCrashed(Exception):
    """The worker process running an attempt died (recorded as the attempt's error)."""


class UnschedulableError(Exception):
    """A job needs more than its pool or the machine has (recorded as the error)."""


# Run histories record these by their qualified name: the public one they always had.
for _kind in (AttemptTimeout, WorkerCrashed, UnschedulableError):
    _kind.__module__ = "tideflow.runtime.executor"


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What every attempt of a job shares, computed once."""

    demand: Demand
    timeout: float | None
    publisher_specs: Mapping[str, str]  # topic -> flow_ir_json
    broker_secrets: tuple[object, ...]  # option values that may hold secret() references


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """How an attempt ended; `retryable` False when another attempt cannot help."""

    status: AttemptStatus
    exit_code: int | None = None
    captured: Captured = field(default_factory=Captured)
    error: ErrorInfo | None = None
    retryable: bool = True
    where: str | None = None  # where a remote attempt ran, as its executor said


class RunningAttempt:
    """An attempt in progress, and how to kill it."""

    __slots__ = ("kill", "killing", "reason")

    def __init__(self, kill: Callable[[float], asyncio.Task[None]]) -> None:
        self.kill = kill  # kill(grace): the task that kills it
        self.reason: AttemptStatus | None = None  # set when we kill it, and why
        self.killing: asyncio.Task[None] | None = None


class RecordStart(Protocol):
    """Records an attempt's start and returns its id: `pid` of a local process, or
    the `executor` block with the engine's `ref` for it and `where` it runs."""

    def __call__(
        self,
        pid: int | None,
        at: datetime,
        *,
        executor: str | None = None,
        ref: str | None = None,
        where: str | None = None,
    ) -> int: ...


@dataclass(frozen=True, slots=True)
class Attempt:
    """Attempt `number` of job run `job_run_id`, handed to an attempt runner.

    `record_start(pid, at)` records the attempt's start and returns its id;
    `watch(running)` hands over the kill handle and returns the call that ends
    the watch once the attempt's process has ended."""

    node: JobNode
    flow: str
    job_run_id: int
    number: int
    scheduled_at: datetime | None
    params: Mapping[str, Any]  # the flow run's, over the job's own
    spec: JobSpec
    record_start: RecordStart
    watch: Callable[[RunningAttempt], Callable[[], None]]


class AttemptRunner(Protocol):
    """Where attempts run. `run` runs one (calls may overlap) and returns the
    attempt's id and outcome; `start` gets ready, `begin_close` says the executor
    is stopping (prepare nothing more), `aclose` ends what is left."""

    def start(self) -> None: ...

    def begin_close(self) -> None: ...

    async def run(self, attempt: Attempt) -> tuple[int, AttemptOutcome]: ...

    async def aclose(self, grace: float) -> None: ...


def killed_error(reason: AttemptStatus, timeout: float | None) -> ErrorInfo | None:
    """The error recorded for an attempt we killed: a timeout says so, a stop does not."""
    if reason is AttemptStatus.TIMEOUT:
        return ErrorInfo(
            qualified_name(AttemptTimeout),
            f"timed out after {timeout:g}s; its process group was killed",
            "",
        )
    return None


def summary(outcome: AttemptOutcome) -> str | None:
    """One line for a notification: the error, or the status when it is not a success."""
    if outcome.error is not None:
        return f"{outcome.error.type}: {outcome.error.message}".splitlines()[0]
    if outcome.status is not AttemptStatus.SUCCESS:
        return str(outcome.status)
    return None


def redacted(outcome: AttemptOutcome, redact: secrets.Redactor) -> AttemptOutcome:
    """`outcome` with every secret value removed from what it captured and its error."""
    if not redact:
        return outcome
    captured = Captured(
        redact(outcome.captured.stdout),
        redact(outcome.captured.stderr),
        tuple((at, level, redact(message)) for at, level, message in outcome.captured.logs),
    )
    error = outcome.error
    if error is not None:
        error = ErrorInfo(
            error.type,
            redact(error.message),
            redact(error.traceback),
            error.function,
            error.location,
        )
    return AttemptOutcome(
        outcome.status, outcome.exit_code, captured, error, outcome.retryable, outcome.where
    )
