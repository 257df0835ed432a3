"""What the executor knows of the flow runs it drives, while it drives them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tideflow.compiler.ir import JobNode
from tideflow.runtime.dag import RunPlan
from tideflow.runtime.model import AttemptRow, AttemptStatus, RunStatus, TriggerKind

from .attempts import RunningAttempt

__all__ = ["FlowRunState", "JobRunState"]


class JobRunState:
    """One job run of a flow run: where it is, and how to stop it."""

    __slots__ = (
        "adopt",
        "attempts",
        "delay",
        "ending",
        "id",
        "node",
        "resume",
        "running",
        "started",
        "status",
        "stop",
        "task",
        "waiting",
        "wake",
    )

    def __init__(self, node: JobNode, job_run_id: int, status: RunStatus = RunStatus.PENDING):
        self.node = node
        self.id = job_run_id
        self.status = status
        # what the jobs after it see: the status, or "upstream_failed" (recorded as skipped)
        self.ending: str | None = str(status) if status.finished else None
        self.attempts = 0  # attempts made so far
        self.started = False  # its trigger rule let it start (or it was settled)
        self.resume = False  # recovered: start it again whatever its dependencies say
        self.delay = 0.0  # seconds to wait before its next attempt
        self.stop: AttemptStatus | None = None  # CANCELLED or INTERRUPTED once asked to stop
        self.running: RunningAttempt | None = None
        self.waiting: asyncio.Future[bool] | None = None  # admission
        self.wake: asyncio.Event | None = None  # backoff
        self.task: asyncio.Task[None] | None = None
        # recovered: an attempt a previous orchestrator started on a remote executor,
        # still running there, to follow to its end before anything else
        self.adopt: AttemptRow | None = None

    def stopping(self) -> bool:
        # a method, not an attribute test: `stop` changes while the job's task awaits
        return self.stop is not None


class FlowRunState:
    """One flow run: its plan, its job runs, and the future of its final status."""

    def __init__(
        self,
        flow_run_id: int,
        plan: RunPlan,
        jobs: dict[str, JobRunState],
        trigger: TriggerKind,
        scheduled_at: datetime | None,
        params: Mapping[str, Any],
    ) -> None:
        self.id = flow_run_id
        self.plan = plan
        self.jobs = jobs
        self.trigger = trigger
        self.scheduled_at = scheduled_at
        self.params = dict(params)
        self.started = False
        self.unfinished = sum(1 for j in jobs.values() if not j.status.finished)
        self.done: asyncio.Future[RunStatus] = asyncio.get_running_loop().create_future()
        self.outside: dict[str, RunStatus] = {}  # snapshot of dependencies outside the run
        self.never_ran: set[str] = set()
