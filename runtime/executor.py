"""The executor: runs a job's DAG, one attempt per worker process, and records everything.

`submit(request)` creates a *flow run* holding the requested (root) job and every
job downstream of it, then drives it in the background; `wait(flow_run_id)`
returns its final status. Jobs start as their trigger rules allow (see
`runtime.dag`, which also says how a dependency outside the run counts),
bounded by the flow's concurrency limit, pools and the machine's CPU and
memory (`runtime.resources`).

Overlap (`JobNode.overlap`) applies per root job when a request arrives while a
flow run of the same root job is unfinished:
- `skip`: a flow run is recorded with the root's job run `skipped` (and nothing
  downstream), so operators see that an instant came and was skipped;
- `queue`: the flow run is recorded now (its job runs `pending`) and starts
  when the earlier ones of that root job have finished, first in first out;
- `allow`: it starts at once.

Attempts: Python callables run in pre-started worker processes
(`runtime.worker_pool`), commands as processes of their own
(`runtime.commands`); each attempt records its start and end, status, exit
code, stdout, stderr, log records and, for a failure, an `ErrorInfo`, with
every secret value redacted. A failed attempt (failed, timed out, crashed) is
retried as the job's retry policy says (`runtime.retry`), except when retrying
cannot help: a job needing more than the machine or its pool has, a missing
`env()`/`secret()` variable, or a program that does not exist.

Statuses when something stops a job: a cancellation requested through
`Store.request_cancel` (polled every `cancel_poll` seconds) kills the running
attempt (attempt `cancelled`) and ends the job run `cancelled`; `shutdown(grace)`
starts nothing new, lets running attempts finish for `grace` seconds, kills the
rest (attempt `interrupted`) and ends every unfinished job run and flow run
`cancelled`.

Notifications (`notify`, awaited in the background, failures only logged),
names from `compiler.schema.NOTIFY_EVENTS`:
- `success`: a job run succeeded;
- `retry`: an attempt failed and another will follow;
- `timeout`: an attempt timed out (beside `retry` or `failure`);
- `failure`: a job run failed (its last attempt failed);
- `retries_exhausted`: a job run failed after every attempt its policy allows,
  when that is more than one (sent right after `failure`, same job run id);
- `lost`: `recover()` found an attempt that was running when the orchestrator died.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol

from tideflow.compiler.ir import FlowIR, JobNode

from . import secrets
from .commands import CommandFailed, LinePublisher, RunningCommand, command_argv
from .context import (
    DEFAULT_PUBLISHER_FACTORY,
    Publisher,
    PublisherFactory,
    PublishError,
    load_object,
    publishing_ir_json,
)
from .dag import Decision, RunPlan, decide, plan_run, skip_reason
from .job_worker import qualified_name
from .model import (
    AttemptRow,
    AttemptStatus,
    ErrorInfo,
    RunStatus,
    TriggerKind,
)
from .resources import Admission, Capacity, Demand
from .retry import attempts_left, retry_delay
from .store import Store, utcnow
from .worker_pool import Captured, WorkerPool, describe_exit

log = logging.getLogger("tideflow.executor")

CANCEL_POLL_SECONDS: Final = 0.5
KILL_GRACE_SECONDS: Final = 2.0
_FINISHED_STATUSES: Final = tuple(s for s in RunStatus if s.finished)
_CHUNK: Final = 500  # ids per cancel_requests query


# --- public values ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunEvent:
    """Something a notifier may be told: `event` is a name from NOTIFY_EVENTS."""

    event: str
    flow: str
    job: str
    flow_run_id: int
    job_run_id: int
    attempt: int | None  # the attempt it is about; None when no attempt ran
    status: str  # the attempt's status (or the job run's, when no attempt ran)
    error: str | None  # one line, secrets redacted
    at: datetime


Notify = Callable[[RunEvent], Awaitable[None]]


class SubmitRequest(Protocol):
    """What `submit` needs; the scheduler's FireRequest is one."""

    @property
    def job(self) -> str: ...

    @property
    def trigger(self) -> TriggerKind | str: ...

    @property
    def scheduled_at(self) -> datetime | None: ...

    @property
    def params(self) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A request to run `job` and what is downstream of it (for callers and tests)."""

    job: str
    trigger: TriggerKind = TriggerKind.MANUAL
    scheduled_at: datetime | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


class ExecutorClosedError(RuntimeError):
    """`submit` was called after `shutdown`."""


class AttemptTimeout(Exception):
    """An attempt ran longer than the job's timeout (recorded as the attempt's error)."""


class WorkerCrashed(Exception):
    """The worker process running an attempt died (recorded as the attempt's error)."""


class UnschedulableError(Exception):
    """A job needs more than its pool or the machine has (recorded as the error)."""


# --- internal state ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: AttemptStatus
    exit_code: int | None = None
    captured: Captured = field(default_factory=Captured)
    error: ErrorInfo | None = None
    retryable: bool = True


class _Running:
    """An attempt in progress, and how to kill it."""

    __slots__ = ("kill", "killing", "reason")

    def __init__(self, kill: Callable[[float], asyncio.Task[None]]) -> None:
        self.kill = kill
        self.reason: AttemptStatus | None = None  # set when we kill it, and why
        self.killing: asyncio.Task[None] | None = None


class _JobRun:
    __slots__ = (
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
        self.running: _Running | None = None
        self.waiting: asyncio.Future[bool] | None = None  # admission
        self.wake: asyncio.Event | None = None  # backoff
        self.task: asyncio.Task[None] | None = None

    def stopping(self) -> bool:
        # a method, not an attribute test: `stop` changes while the job's task awaits
        return self.stop is not None


class _FlowRun:
    def __init__(
        self,
        flow_run_id: int,
        plan: RunPlan,
        jobs: dict[str, _JobRun],
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


@dataclass(frozen=True, slots=True)
class _JobSpec:
    """What every attempt of a job shares, computed once."""

    demand: Demand
    timeout: float | None
    publisher_specs: Mapping[str, str]  # topic -> flow_ir_json
    broker_secrets: tuple[object, ...]  # option values that may hold secret() references


# --- the executor --------------------------------------------------------------------------


class Executor:
    """Runs flow runs of one flow. Use inside a running event loop; `shutdown` at the end."""

    def __init__(
        self,
        flow: FlowIR,
        store: Store,
        *,
        notify: Notify | None = None,
        publisher: str | None = None,
        concurrency: int | None = None,
        orchestrator_id: int | None = None,
        min_workers: int = 1,
        kill_grace: float = KILL_GRACE_SECONDS,
        cancel_poll: float = CANCEL_POLL_SECONDS,
        capacity: Capacity | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """`publisher` names a publisher factory, "module:function" (default:
        `runtime.context.make_publisher`); `concurrency` overrides the flow's;
        `capacity` overrides the machine's (for tests)."""
        self.flow = flow
        self.name = flow.info.name
        self.store = store
        self.notify = notify
        self.publisher_factory = publisher or DEFAULT_PUBLISHER_FACTORY
        self.concurrency = concurrency or flow.info.concurrency
        self.orchestrator_id = orchestrator_id
        self.min_workers = min_workers
        self.kill_grace = kill_grace
        self.cancel_poll = cancel_poll
        self.rng = rng or random.Random()
        self.jobs = flow.jobs
        self._topics = flow.topics
        self._brokers = flow.brokers
        self.admission = Admission(
            self.concurrency, {p.name: p.slots for p in flow.pools.values()}, capacity
        )
        self.pool = WorkerPool(self.concurrency)
        self._order = flow.dependency_graph()
        self._plans: dict[str, RunPlan] = {}
        self._specs: dict[str, _JobSpec] = {}
        source_dir = str(Path(flow.info.source).resolve().parent) if flow.info.source else None
        self._sys_path = (source_dir,) if source_dir else ()
        self._runs: dict[int, _FlowRun] = {}  # unfinished flow runs, queued ones included
        self._running_roots: dict[str, list[_FlowRun]] = collections.defaultdict(list)
        self._queues: dict[str, collections.deque[_FlowRun]] = collections.defaultdict(
            collections.deque
        )
        self._deliveries: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._started = False
        self._closing = False
        self._closed = asyncio.Event()

    # -- lifecycle --

    async def __aenter__(self) -> Executor:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown(self.kill_grace)

    def start(self) -> None:
        """Start the worker processes and the cancellation poller (`submit` does it too)."""
        if self._started:
            return
        self._started = True
        self.pool.prestart(self.min_workers)
        self._poller = asyncio.get_running_loop().create_task(self._poll_cancellations())

    async def shutdown(self, grace: float) -> None:
        """Start nothing new; give running attempts `grace` seconds, then kill them
        (attempt `interrupted`); end every unfinished run `cancelled`."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        for queue in self._queues.values():
            while queue:
                run = queue.popleft()
                for job_run in run.jobs.values():
                    if not job_run.status.finished:
                        self._settle(run, job_run, RunStatus.CANCELLED, "the orchestrator stopped")
                self._complete(run)
        for run in list(self._runs.values()):
            for job_run in list(run.jobs.values()):
                if not job_run.status.finished:
                    self._request_stop(run, job_run, AttemptStatus.INTERRUPTED, kill=False)
        tasks = self._job_tasks()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for run in list(self._runs.values()):
            for job_run in run.jobs.values():
                if job_run.running is not None:
                    self._kill(job_run.running, AttemptStatus.INTERRUPTED)
        while tasks := self._job_tasks():
            await asyncio.wait(tasks)
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self.pool.close(self.kill_grace)
        if self._deliveries:
            await asyncio.wait(self._deliveries, timeout=max(grace, 1.0))
        self._closed.set()

    def _job_tasks(self) -> set[asyncio.Task[None]]:
        return {
            j.task
            for run in self._runs.values()
            for j in run.jobs.values()
            if j.task is not None and not j.task.done()
        }

    # -- submitting and waiting --

    async def submit(self, request: SubmitRequest) -> int:
        """Record a flow run for `request.job` and everything downstream, and drive it
        in the background (or queue or skip it, per the root job's overlap policy).
        Returns the flow run's id."""
        if self._closing:
            raise ExecutorClosedError("the executor is shutting down")
        flow = getattr(request, "flow", None)
        if flow is not None and flow != self.name:
            raise ValueError(f'request for flow "{flow}" given to the executor of "{self.name}"')
        node = self.jobs.get(request.job)
        if node is None:
            raise ValueError(f'flow "{self.name}" has no job "{request.job}"')
        self.start()
        trigger = TriggerKind(str(request.trigger))
        params = dict(request.params or {})
        busy = self._running_roots.get(node.name) or self._queues.get(node.name)
        if busy and node.overlap == "skip":
            return self._record_skipped(node, trigger, request.scheduled_at, params, busy[0].id)
        run = self._create_run(self._plan(node.name), trigger, request.scheduled_at, params)
        if busy and node.overlap == "queue":
            self._queues[node.name].append(run)
            log.info(
                'flow run %d of job "%s" queued behind flow run %d (overlap = queue)',
                run.id,
                node.name,
                busy[-1].id,
            )
        else:
            self._launch(run)
        return run.id

    async def wait(self, flow_run_id: int) -> RunStatus:
        """The final status of a flow run, once it has one."""
        run = self._runs.get(flow_run_id)
        if run is not None:
            return await asyncio.shield(run.done)
        row = self.store.flow_run(flow_run_id)
        if row is None:
            raise KeyError(flow_run_id)
        return row.status

    async def join(self) -> None:
        """Wait until no flow run is unfinished or queued."""
        while self._runs:
            await asyncio.wait([asyncio.shield(r.done) for r in list(self._runs.values())])

    @property
    def active_runs(self) -> list[int]:
        return sorted(self._runs)

    def _plan(self, root: str) -> RunPlan:
        plan = self._plans.get(root)
        if plan is None:
            plan = self._plans[root] = plan_run(self._order, root)
        return plan

    def _record_skipped(
        self,
        node: JobNode,
        trigger: TriggerKind,
        scheduled_at: datetime | None,
        params: Mapping[str, Any],
        busy_id: int,
    ) -> int:
        run_id = self.store.create_flow_run(
            self.name, node.name, trigger, scheduled_at=scheduled_at, params=params
        )
        ids = self.store.create_job_runs(
            run_id, self.name, [node.name], trigger, scheduled_at=scheduled_at
        )
        note = f"flow run {busy_id} of this job was still going (overlap = skip)"
        self.store.set_job_run_status(ids[node.name], RunStatus.SKIPPED, note=note)
        self.store.set_flow_run_status(run_id, RunStatus.SKIPPED)
        log.info(
            'flow run %d of job "%s" skipped: flow run %d of that job is unfinished '
            "(overlap = skip)",
            run_id,
            node.name,
            busy_id,
        )
        return run_id

    def _create_run(
        self,
        plan: RunPlan,
        trigger: TriggerKind,
        scheduled_at: datetime | None,
        params: Mapping[str, Any],
    ) -> _FlowRun:
        run_id = self.store.create_flow_run(
            self.name, plan.root, trigger, scheduled_at=scheduled_at, params=params
        )
        ids = self.store.create_job_runs(
            run_id, self.name, plan.jobs, trigger, scheduled_at=scheduled_at
        )
        jobs = {name: _JobRun(self.jobs[name], ids[name]) for name in plan.jobs}
        run = _FlowRun(run_id, plan, jobs, trigger, scheduled_at, params)
        self._runs[run_id] = run
        return run

    # -- driving a flow run --

    def _launch(self, run: _FlowRun) -> None:
        run.started = True
        self._running_roots[run.plan.root].append(run)
        self.store.set_flow_run_status(run.id, RunStatus.RUNNING)
        finished: list[str] = []
        for name in run.plan.jobs:
            job_run = run.jobs[name]
            if job_run.status.finished:
                finished.append(name)
            elif not job_run.started and (
                name == run.plan.root or job_run.resume or job_run.node.trigger == "always"
            ):
                self._start_job(run, job_run)
        self._propagate(run, finished)
        self._complete_if_done(run)

    def _start_job(self, run: _FlowRun, job_run: _JobRun) -> None:
        job_run.started = True
        job_run.task = asyncio.get_running_loop().create_task(self._run_job(run, job_run))

    def _propagate(self, run: _FlowRun, finished: Iterable[str]) -> None:
        """Decide the dependents of jobs that just finished (a worklist: skips cascade)."""
        work = list(finished)
        while work:
            name = work.pop()
            for child in run.plan.downstream[name]:
                job_run = run.jobs[child]
                if job_run.started or job_run.status.finished:
                    continue
                decision, statuses = self._evaluate(run, child)
                if decision is Decision.WAIT:
                    continue
                if decision is Decision.RUN and not self._closing:
                    self._start_job(run, job_run)
                    continue
                if decision is Decision.RUN:
                    self._settle(run, job_run, RunStatus.CANCELLED, "the orchestrator is stopping")
                else:
                    status = (
                        RunStatus.UPSTREAM_FAILED
                        if decision is Decision.UPSTREAM_FAILED
                        else RunStatus.SKIPPED
                    )
                    self._settle(run, job_run, status, self._skip_reason(run, child, statuses))
                work.append(child)

    def _evaluate(self, run: _FlowRun, job: str) -> tuple[Decision, dict[str, str | None]]:
        statuses: dict[str, str | None] = {}
        for upstream in run.plan.upstream[job]:
            statuses[upstream] = run.jobs[upstream].ending
        for outside in run.plan.outside[job]:
            statuses[outside] = str(self._outside_status(run, outside))
        return decide(run.jobs[job].node.trigger, list(statuses.values())), statuses

    def _outside_status(self, run: _FlowRun, job: str) -> RunStatus:
        """The newest finished run of a job outside this run (see `runtime.dag`)."""
        status = run.outside.get(job)
        if status is None:
            rows = self.store.job_runs(flow=self.name, job=job, status=_FINISHED_STATUSES, limit=1)
            if rows:
                status = rows[0].status
            else:
                status = RunStatus.SKIPPED
                run.never_ran.add(job)
            run.outside[job] = status
        return status

    def _skip_reason(self, run: _FlowRun, job: str, statuses: Mapping[str, str | None]) -> str:
        reason = skip_reason(run.jobs[job].node.trigger, statuses)
        missing = sorted(run.never_ran & set(run.plan.outside[job]))
        if missing:
            names = ", ".join(f"`{m}`" for m in missing)
            reason += f"; {names} outside this run never finished a run (counted as skipped)"
        return reason

    def _settle(self, run: _FlowRun, job_run: _JobRun, status: RunStatus, reason: str) -> None:
        """End a job run that never started an attempt."""
        job_run.started = True
        self.store.set_job_run_status(job_run.id, status, note=reason)
        self._mark_finished(run, job_run, status)
        log.info(
            'job "%s" (job run %d, flow run %d) %s: %s',
            job_run.node.name,
            job_run.id,
            run.id,
            status,
            reason,
        )

    def _mark_finished(self, run: _FlowRun, job_run: _JobRun, status: RunStatus) -> None:
        if not job_run.status.finished:
            run.unfinished -= 1
        job_run.status = status
        job_run.ending = str(status)

    def _job_finished(self, run: _FlowRun, job_run: _JobRun, status: RunStatus) -> None:
        self._mark_finished(run, job_run, status)
        self._propagate(run, [job_run.node.name])
        self._complete_if_done(run)

    def _complete_if_done(self, run: _FlowRun) -> None:
        if run.started and run.unfinished == 0 and not run.done.done():
            self._complete(run)

    def _complete(self, run: _FlowRun) -> None:
        statuses = {j.status for j in run.jobs.values()}
        # a job that failed fails the run; a cancellation (with what it left
        # unrun downstream) cancels it; a job a failure outside the run kept from
        # running fails it too
        if RunStatus.FAILED in statuses:
            status = RunStatus.FAILED
        elif RunStatus.CANCELLED in statuses:
            status = RunStatus.CANCELLED
        elif RunStatus.UPSTREAM_FAILED in statuses:
            status = RunStatus.FAILED
        else:
            status = RunStatus.SUCCESS
        self.store.set_flow_run_status(run.id, status)
        if not run.done.done():
            run.done.set_result(status)
        self._runs.pop(run.id, None)
        root = run.plan.root
        running = self._running_roots.get(root)
        if running is not None and run in running:
            running.remove(run)
        queue = self._queues.get(root)
        if queue and not running and not self._closing:
            self._launch(queue.popleft())

    # -- one job run: admission, attempts, retries --

    def _spec(self, node: JobNode) -> _JobSpec:
        spec = self._specs.get(node.name)
        if spec is None:
            topics = self._topics
            publisher_specs = {
                topic: publishing_ir_json(self.flow, topic)
                for topic in node.publishes
                if topic in topics
            }
            brokers = self._brokers
            broker_options: list[object] = [
                dict(brokers[topics[t].broker].options)
                for t in node.publishes
                if t in topics and topics[t].broker in brokers
            ]
            spec = self._specs[node.name] = _JobSpec(
                demand=Demand(
                    node.pool,
                    node.pool_slots,
                    node.resources.cpu or 0.0,
                    node.resources.memory or 0,
                ),
                timeout=node.timeout if node.timeout is not None else self.flow.info.timeout,
                publisher_specs=publisher_specs,
                broker_secrets=tuple(broker_options),
            )
        return spec

    async def _run_job(self, run: _FlowRun, job_run: _JobRun) -> None:
        try:
            status = await self._attempts(run, job_run)
        except Exception:  # a bug or a store failure: never leave the run hanging
            log.exception(
                'job "%s" (job run %d) failed inside tideflow', job_run.node.name, job_run.id
            )
            status = RunStatus.FAILED
            with contextlib.suppress(Exception):
                self.store.set_job_run_status(job_run.id, status)
        self._job_finished(run, job_run, status)

    async def _attempts(self, run: _FlowRun, job_run: _JobRun) -> RunStatus:
        node = job_run.node
        spec = self._spec(node)
        problem = self.admission.impossible(spec.demand)
        if problem is not None:
            error = ErrorInfo(
                qualified_name(UnschedulableError),
                f'job "{node.name}" can never start: {problem}',
                "",
            )
            outcome = _Outcome(AttemptStatus.FAILED, error=error, retryable=False)
            attempt_id = self._start_attempt(job_run, job_run.attempts + 1, None, utcnow())
            return self._record(run, job_run, attempt_id, outcome)
        while True:
            if job_run.delay > 0 and not job_run.stopping():
                job_run.wake = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(job_run.wake.wait(), job_run.delay)
                job_run.wake = None
            job_run.delay = 0.0
            if job_run.stopping():
                return self._stopped(job_run)
            if not self.admission.try_acquire(spec.demand):
                self.store.set_job_run_status(job_run.id, RunStatus.QUEUED)
                job_run.waiting = self.admission.wait(spec.demand)
                granted = await job_run.waiting
                job_run.waiting = None
                if job_run.stopping():
                    if granted:
                        self.admission.release(spec.demand)
                    return self._stopped(job_run)
            try:
                number = job_run.attempts + 1
                job_run.attempts = number
                if node.run is not None:
                    attempt_id, outcome = await self._python_attempt(run, job_run, spec, number)
                else:
                    attempt_id, outcome = await self._command_attempt(run, job_run, spec, number)
            finally:
                self.admission.release(spec.demand)
            status = self._record(run, job_run, attempt_id, outcome)
            if status is not RunStatus.RETRYING:
                return status
            job_run.delay = retry_delay(number, node.retry, self.rng)

    def _start_attempt(self, job_run: _JobRun, number: int, pid: int | None, at: datetime) -> int:
        job_run.attempts = number
        return self.store.start_attempt(
            job_run.id, number, pid=pid, orchestrator_id=self.orchestrator_id, at=at
        )

    def _record(
        self, run: _FlowRun, job_run: _JobRun, attempt_id: int, outcome: _Outcome
    ) -> RunStatus:
        """Store an attempt's end and decide what follows; the job run's new status."""
        node = job_run.node
        number = job_run.attempts
        attempt = outcome.status
        if attempt is AttemptStatus.SUCCESS:
            status = RunStatus.SUCCESS
        elif attempt in (AttemptStatus.CANCELLED, AttemptStatus.INTERRUPTED):
            status = RunStatus.CANCELLED
        elif outcome.retryable and attempts_left(number, node.retry):
            status = RunStatus.CANCELLED if job_run.stop is not None else RunStatus.RETRYING
        else:
            status = RunStatus.FAILED
        captured = outcome.captured
        self.store.finish_attempt(
            attempt_id,
            attempt,
            exit_code=outcome.exit_code,
            stdout=captured.stdout,
            stderr=captured.stderr,
            error=outcome.error,
            logs=captured.logs,
            job_run_status=status,
        )
        if self.notify is not None:
            summary = _summary(outcome)
            if attempt is AttemptStatus.TIMEOUT:
                self._emit("timeout", run, job_run, number, attempt, summary)
            if status is RunStatus.SUCCESS:
                self._emit("success", run, job_run, number, attempt, None)
            elif status is RunStatus.RETRYING:
                self._emit("retry", run, job_run, number, attempt, summary)
            elif status is RunStatus.FAILED:
                self._emit("failure", run, job_run, number, attempt, summary)
                if node.retry.attempts > 1 and number >= node.retry.attempts:
                    self._emit("retries_exhausted", run, job_run, number, attempt, summary)
        if status is RunStatus.CANCELLED and job_run.stop is not None:
            log.info(
                'job "%s" (job run %d) %s: %s',
                node.name,
                job_run.id,
                status,
                _stop_reason(job_run.stop),
            )
        return status

    def _stopped(self, job_run: _JobRun) -> RunStatus:
        assert job_run.stop is not None
        self.store.set_job_run_status(job_run.id, RunStatus.CANCELLED)
        log.info(
            'job "%s" (job run %d) cancelled before its attempt %d: %s',
            job_run.node.name,
            job_run.id,
            job_run.attempts + 1,
            _stop_reason(job_run.stop),
        )
        return RunStatus.CANCELLED

    # -- attempts --

    def _arm(
        self, job_run: _JobRun, running: _Running, timeout: float | None
    ) -> asyncio.TimerHandle | None:
        job_run.running = running
        if job_run.stop is not None:  # asked to stop while it was being started
            self._kill(running, job_run.stop)
            return None
        if timeout is None:
            return None
        return asyncio.get_running_loop().call_later(
            timeout, self._kill, running, AttemptStatus.TIMEOUT
        )

    def _kill(self, running: _Running, reason: AttemptStatus) -> None:
        if running.reason is None:
            running.reason = reason
            running.killing = running.kill(self.kill_grace)

    def _resolve(self, node: JobNode) -> secrets.Resolved:
        argv = node.command if isinstance(node.command, tuple) else ()
        return secrets.resolve(node.env, argv, where=f'job "{node.name}"')

    def _redactor(self, spec: _JobSpec, resolved: secrets.Resolved | None) -> secrets.Redactor:
        values = set(resolved.secrets) if resolved is not None else set()
        if spec.broker_secrets:
            values |= secrets.secret_values(spec.broker_secrets)
        return secrets.Redactor(values)

    async def _python_attempt(
        self, run: _FlowRun, job_run: _JobRun, spec: _JobSpec, number: int
    ) -> tuple[int, _Outcome]:
        node = job_run.node
        try:
            resolved = self._resolve(node)
        except secrets.UnresolvedValueError as exc:
            return self._unresolved(job_run, number, exc)
        request = {
            "target": node.run,
            "run_id": job_run.id,
            "flow": self.name,
            "job": node.name,
            "attempt": number,
            "scheduled_at": run.scheduled_at,
            "params": {**node.params, **run.params},
            "env": resolved.env,
            "secrets": tuple(resolved.secrets),
            "publishes": node.publishes,
            "publisher": (self.publisher_factory, spec.publisher_specs)
            if spec.publisher_specs
            else None,
            "sys_path": self._sys_path,
        }
        worker = self.pool.acquire()
        at = utcnow()
        reply_future = worker.start(request)
        # recorded while the worker already runs the attempt: the write overlaps it
        attempt_id = self._start_attempt(job_run, number, worker.pid, at)
        running = _Running(lambda grace: self.pool.discard(worker, grace))
        timer = self._arm(job_run, running, spec.timeout)
        try:
            reply = await reply_future
        finally:
            if timer is not None:
                timer.cancel()
            job_run.running = None
        if reply is not None and running.reason is None:
            captured = worker.captured()
            self.pool.release(worker)
        else:
            await (running.killing or self.pool.discard(worker, 0))
            captured = worker.captured()
            if not self._closing:  # keep the pool warm for the next attempts
                self.pool.prestart(self.min_workers)
        redact = self._redactor(spec, resolved)
        if reply is not None:
            if reply["ok"]:
                outcome = _Outcome(AttemptStatus.SUCCESS, captured=captured)
            else:
                outcome = _Outcome(
                    AttemptStatus.FAILED,
                    exit_code=reply["exit_code"],
                    captured=captured,
                    error=ErrorInfo(*reply["error"]),
                )
        elif running.reason is not None:
            outcome = _Outcome(
                running.reason,
                exit_code=worker.returncode,
                captured=captured,
                error=_killed_error(running.reason, spec.timeout),
            )
        else:
            what = f"the worker process (pid {worker.pid}) {describe_exit(worker.returncode)}"
            outcome = _Outcome(
                AttemptStatus.CRASHED,
                exit_code=worker.returncode,
                captured=captured,
                error=ErrorInfo(qualified_name(WorkerCrashed), what, ""),
            )
        return attempt_id, _redacted(outcome, redact)

    async def _command_attempt(
        self, run: _FlowRun, job_run: _JobRun, spec: _JobSpec, number: int
    ) -> tuple[int, _Outcome]:
        node = job_run.node
        try:
            resolved = self._resolve(node)
        except secrets.UnresolvedValueError as exc:
            return self._unresolved(job_run, number, exc)
        redact = self._redactor(spec, resolved)
        assert node.command is not None
        command = node.command if isinstance(node.command, str) else resolved.argv
        argv = command_argv(command, node.shell)
        env = {**os.environ, **resolved.env}
        lines: LinePublisher | None = None
        if node.publish_stdout and node.publishes:
            topic = node.publishes[0]
            lines = LinePublisher(self._publisher_maker(spec, topic), topic)
        at = utcnow()
        try:
            command_run = await RunningCommand.start(
                argv, env=env, on_line=lines.add if lines is not None else None
            )
        except OSError as exc:
            attempt_id = self._start_attempt(job_run, number, None, at)
            error = ErrorInfo(
                qualified_name(type(exc)), f"cannot run `{argv[0]}`: {exc.strerror or exc}", ""
            )
            retryable = not isinstance(exc, FileNotFoundError | PermissionError)
            outcome = _Outcome(AttemptStatus.FAILED, error=error, retryable=retryable)
            return attempt_id, _redacted(outcome, redact)
        attempt_id = self._start_attempt(job_run, number, command_run.pid, at)
        running = _Running(command_run.kill)
        timer = self._arm(job_run, running, spec.timeout)
        try:
            result = await command_run.wait()
        finally:
            if timer is not None:
                timer.cancel()
            job_run.running = None
        if running.killing is not None:
            await running.killing
        captured = Captured(result.stdout, result.stderr)
        code = result.returncode
        if running.reason is not None:
            outcome = _Outcome(
                running.reason,
                exit_code=code,
                captured=captured,
                error=_killed_error(running.reason, spec.timeout),
            )
        elif code < 0:
            what = f"`{argv[0]}` {describe_exit(code)}"
            error = ErrorInfo(qualified_name(CommandFailed), what, "")
            outcome = _Outcome(AttemptStatus.CRASHED, code, captured, error)
        elif code != 0:
            last = next((ln for ln in reversed(result.stderr.splitlines()) if ln.strip()), "")
            what = f"`{argv[0]}` exited with code {code}" + (f": {last.strip()}" if last else "")
            error = ErrorInfo(qualified_name(CommandFailed), what, "")
            outcome = _Outcome(AttemptStatus.FAILED, code, captured, error)
        else:
            outcome = _Outcome(AttemptStatus.SUCCESS, code, captured)
        if lines is not None:
            try:
                if outcome.status is AttemptStatus.SUCCESS:
                    await lines.finish()
            except Exception as exc:
                error = ErrorInfo(
                    qualified_name(type(exc)),
                    f"publishing stdout to topic `{lines.topic}` failed: {exc}",
                    "",
                )
                outcome = _Outcome(AttemptStatus.FAILED, code, captured, error)
            finally:
                await lines.close()
        return attempt_id, _redacted(outcome, redact)

    def _publisher_maker(self, spec: _JobSpec, topic: str) -> Callable[[], Publisher]:
        factory_path = self.publisher_factory
        flow_ir_json = spec.publisher_specs.get(topic)

        def make() -> Publisher:
            if flow_ir_json is None:
                raise PublishError(f"topic `{topic}` is not defined in the flow")
            factory: PublisherFactory = load_object(factory_path)
            return factory(flow_ir_json, topic)

        return make

    def _unresolved(
        self, job_run: _JobRun, number: int, exc: secrets.UnresolvedValueError
    ) -> tuple[int, _Outcome]:
        attempt_id = self._start_attempt(job_run, number, None, utcnow())
        error = ErrorInfo(qualified_name(type(exc)), str(exc), "")
        return attempt_id, _Outcome(AttemptStatus.FAILED, error=error, retryable=False)

    # -- cancellation --

    async def _poll_cancellations(self) -> None:
        while True:
            await asyncio.sleep(self.cancel_poll)
            try:
                self.check_cancellations()
            except Exception:  # the store may be briefly unavailable: try next time
                log.exception("cannot read cancellation requests")

    def check_cancellations(self) -> None:
        """Stop the job runs an operator asked to cancel (polled every `cancel_poll` s)."""
        active = {
            j.id: (run, j)
            for run in self._runs.values()
            for j in run.jobs.values()
            if not j.status.finished and j.stop is None
        }
        if not active:
            return
        ids = list(active)
        requested: set[int] = set()
        for start in range(0, len(ids), _CHUNK):
            requested |= self.store.cancel_requests(ids[start : start + _CHUNK])
        for job_run_id in sorted(requested):
            run, job_run = active[job_run_id]
            self._request_stop(run, job_run, AttemptStatus.CANCELLED, kill=True)

    def _request_stop(
        self, run: _FlowRun, job_run: _JobRun, reason: AttemptStatus, *, kill: bool
    ) -> None:
        if job_run.status.finished or job_run.stop is not None:
            return
        job_run.stop = reason
        if job_run.running is not None:
            if kill:
                self._kill(job_run.running, reason)
        elif job_run.waiting is not None:
            self.admission.withdraw(job_run.waiting)
        elif job_run.wake is not None:
            job_run.wake.set()
        elif not job_run.started:
            self._settle(run, job_run, RunStatus.CANCELLED, _stop_reason(reason))
            if run.started:
                self._propagate(run, [job_run.node.name])
                self._complete_if_done(run)
        # otherwise its task is between two steps and sees `stop` at the next one

    # -- recovery --

    async def recover(
        self, lost: Sequence[AttemptRow], unfinished: Iterable[int] = ()
    ) -> list[int]:
        """Resume the flow runs of attempts found lost at start-up (`Store.mark_lost`),
        and the `unfinished` flow runs (`Store.unfinished_flow_runs`) that had no
        attempt running: jobs waiting for dependencies, a backoff or a slot.

        A lost attempt counts as a failed one: its job run is retried per its policy
        (after the policy's backoff) or, with no attempts left, fails. The rest of
        its flow run goes on as if the orchestrator had never stopped. Returns the
        ids of the flow runs resumed."""
        self.start()
        newest: dict[int, AttemptRow] = {}
        for attempt in lost:
            known = newest.get(attempt.job_run_id)
            if known is None or attempt.number > known.number:
                newest[attempt.job_run_id] = attempt
        by_flow_run: dict[int, list[AttemptRow]] = collections.defaultdict(list)
        for job_run_id, attempt in newest.items():
            row = self.store.job_run(job_run_id)
            if row is None or row.flow != self.name:
                continue
            by_flow_run[row.flow_run_id].append(attempt)
        for flow_run_id in unfinished:
            by_flow_run.setdefault(flow_run_id, [])
        resumed: list[int] = []
        for flow_run_id, attempts in sorted(by_flow_run.items()):
            if flow_run_id in self._runs:
                continue
            run = self._restore(flow_run_id, attempts)
            if run is not None:
                self._launch(run)
                resumed.append(flow_run_id)
        return resumed

    def _restore(self, flow_run_id: int, lost: Sequence[AttemptRow]) -> _FlowRun | None:
        row = self.store.flow_run(flow_run_id)
        if row is None:
            return None
        rows = {r.job: r for r in self.store.job_runs(flow_run_id=flow_run_id, limit=None)}
        if row.root_job not in self.jobs:
            for job_row in rows.values():
                if not job_row.status.finished:
                    self.store.set_job_run_status(job_row.id, RunStatus.FAILED)
            self.store.set_flow_run_status(flow_run_id, RunStatus.FAILED)
            log.warning(
                'flow run %d cannot be resumed: job "%s" is no longer in flow "%s"',
                flow_run_id,
                row.root_job,
                self.name,
            )
            return None
        plan = self._plan(row.root_job)
        for name, job_row in rows.items():
            if name not in plan.jobs and not job_row.status.finished:
                self.store.set_job_run_status(job_row.id, RunStatus.CANCELLED)
                log.warning(
                    'job run %d cancelled: job "%s" is no longer part of this run', job_row.id, name
                )
        missing = [name for name in plan.jobs if name not in rows]
        created = (
            self.store.create_job_runs(
                flow_run_id, self.name, missing, row.trigger, scheduled_at=row.scheduled_at
            )
            if missing
            else {}
        )
        jobs: dict[str, _JobRun] = {}
        for name in plan.jobs:
            if name in created:
                jobs[name] = _JobRun(self.jobs[name], created[name])
                continue
            job_row = rows[name]
            job_run = _JobRun(self.jobs[name], job_row.id, job_row.status)
            job_run.attempts = job_row.attempts
            if not job_row.status.finished and job_row.status is not RunStatus.PENDING:
                job_run.resume = True  # it had started: carry on with its next attempt
            jobs[name] = job_run
        run = _FlowRun(flow_run_id, plan, jobs, row.trigger, row.scheduled_at, row.params)
        self._runs[flow_run_id] = run
        lost_by_id = {a.job_run_id: a for a in lost}
        for job_run in jobs.values():
            attempt = lost_by_id.get(job_run.id)
            if attempt is None:
                continue
            job_run.attempts = max(job_run.attempts, attempt.number)
            summary = "the orchestrator stopped while the attempt ran"
            self._emit("lost", run, job_run, attempt.number, AttemptStatus.LOST, summary)
            policy = job_run.node.retry
            if attempts_left(attempt.number, policy):
                job_run.resume = True
                job_run.delay = retry_delay(attempt.number, policy, self.rng)
                job_run.status = RunStatus.RETRYING
                self.store.set_job_run_status(job_run.id, RunStatus.RETRYING)
            else:
                job_run.started = True
                self.store.set_job_run_status(job_run.id, RunStatus.FAILED)
                self._mark_finished(run, job_run, RunStatus.FAILED)
                self._emit("failure", run, job_run, attempt.number, AttemptStatus.LOST, summary)
                if policy.attempts > 1:
                    self._emit(
                        "retries_exhausted",
                        run,
                        job_run,
                        attempt.number,
                        AttemptStatus.LOST,
                        summary,
                    )
        return run

    # -- notifications --

    def _emit(
        self,
        event: str,
        run: _FlowRun,
        job_run: _JobRun,
        attempt: int | None,
        status: AttemptStatus | RunStatus,
        error: str | None,
    ) -> None:
        if self.notify is None:
            return
        record = RunEvent(
            event=event,
            flow=self.name,
            job=job_run.node.name,
            flow_run_id=run.id,
            job_run_id=job_run.id,
            attempt=attempt,
            status=str(status),
            error=error,
            at=utcnow(),
        )
        task = asyncio.get_running_loop().create_task(self._deliver(self.notify, record))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    @staticmethod
    async def _deliver(notify: Notify, event: RunEvent) -> None:
        try:
            await notify(event)
        except Exception:
            log.exception("notification %s for job run %d failed", event.event, event.job_run_id)


# --- helpers ---------------------------------------------------------------------------------


def _stop_reason(reason: AttemptStatus) -> str:
    if reason is AttemptStatus.CANCELLED:
        return "cancellation requested"
    return "the orchestrator stopped"


def _killed_error(reason: AttemptStatus, timeout: float | None) -> ErrorInfo | None:
    if reason is AttemptStatus.TIMEOUT:
        return ErrorInfo(
            qualified_name(AttemptTimeout),
            f"timed out after {timeout:g}s; its process group was killed",
            "",
        )
    return None


def _summary(outcome: _Outcome) -> str | None:
    if outcome.error is not None:
        return f"{outcome.error.type}: {outcome.error.message}".splitlines()[0]
    if outcome.status is not AttemptStatus.SUCCESS:
        return str(outcome.status)
    return None


def _redacted(outcome: _Outcome, redact: secrets.Redactor) -> _Outcome:
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
    return _Outcome(outcome.status, outcome.exit_code, captured, error, outcome.retryable)
