"""Driving flow runs: what `submit` records, which job runs start when (trigger
rules, overlap, admission), how each attempt's end is recorded and what follows
it (retries, notifications, the flow run's status), cancellation and shutdown.

One attempt is run by an attempt runner (`attempts.AttemptRunner`; this
machine's is `local.LocalAttempts`); resuming after a restart is `recovery`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol

from tideflow.compiler.ir import FlowIR, JobNode
from tideflow.runtime.backends import open_executor
from tideflow.runtime.context import DEFAULT_PUBLISHER_FACTORY, publishing_ir_json
from tideflow.runtime.dag import Decision, RunPlan, decide, plan_run, skip_reason
from tideflow.runtime.job_worker import qualified_name
from tideflow.runtime.model import AttemptRow, AttemptStatus, ErrorInfo, RunStatus, TriggerKind
from tideflow.runtime.resources import Admission, Capacity, Demand
from tideflow.runtime.retry import attempts_left, retry_delay
from tideflow.runtime.store import Store, utcnow
from tideflow.runtime.worker_pool import WorkerPool

from . import cancellation, recovery
from .attempts import (
    Attempt,
    AttemptOutcome,
    AttemptRunner,
    JobSpec,
    RunningAttempt,
    UnschedulableError,
)
from .attempts import summary as attempt_summary
from .cancellation import CANCEL_POLL_SECONDS, KILL_GRACE_SECONDS
from .local import LocalAttempts
from .notifications import Deliveries, Notify, RunEvent
from .remote import ExecutorUnavailable, PluginAttempts
from .state import FlowRunState, JobRunState

__all__ = ["Executor", "ExecutorClosedError", "RunRequest", "SubmitRequest"]

log = logging.getLogger("tideflow.executor")

_FINISHED_STATUSES: Final = tuple(s for s in RunStatus if s.finished)


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
        source_dir = str(Path(flow.info.source).resolve().parent) if flow.info.source else None
        local = LocalAttempts(
            WorkerPool(self.concurrency),
            publisher_factory=self.publisher_factory,
            sys_path=(source_dir,) if source_dir else (),
            min_workers=min_workers,
        )
        self.pool = local.pool  # the worker processes of this machine
        self.runner: AttemptRunner = local
        # by executor block (None: the built-in local executor); a block of kind
        # `local` shares this machine's pool unless it asks for fresh processes
        self.runners: dict[str | None, AttemptRunner] = {None: local}
        self.remote_blocks: set[str] = set()
        for block in flow.executors.values():
            if block.kind == "local" and not block.options.get("isolate"):
                self.runners[block.name] = local
                continue
            plugin = open_executor(flow, block)
            self.runners[block.name] = PluginAttempts(
                plugin,
                block.name,
                publisher_factory=self.publisher_factory,
                sys_path=(source_dir,) if source_dir else (),
            )
            if plugin.remote:
                self.remote_blocks.add(block.name)
        self._order = flow.dependency_graph()
        self._plans: dict[str, RunPlan] = {}
        self._specs: dict[str, JobSpec] = {}
        self._runs: dict[int, FlowRunState] = {}  # unfinished flow runs, queued ones included
        self._running_roots: dict[str, list[FlowRunState]] = collections.defaultdict(list)
        self._queues: dict[str, collections.deque[FlowRunState]] = collections.defaultdict(
            collections.deque
        )
        self._deliveries = Deliveries(notify) if notify is not None else None
        self._poller: asyncio.Task[None] | None = None
        self._started = False
        self._closing = False
        self._closed = asyncio.Event()
        self._queued: list[int] = []  # job runs to mark queued (see `_mark_queued`)

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
        for runner in self._distinct_runners():
            runner.start()
        self._poller = asyncio.get_running_loop().create_task(
            cancellation.poll(self.cancel_poll, self.check_cancellations)
        )

    async def shutdown(self, grace: float) -> None:
        """Start nothing new; give running attempts `grace` seconds, then kill them
        (attempt `interrupted`); end every unfinished run `cancelled`."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        for runner in self._distinct_runners():
            runner.begin_close()
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
        for runner in self._distinct_runners():
            try:
                await runner.aclose(self.kill_grace)
            except Exception:
                log.warning("closing an executor failed", exc_info=True)
        if self._deliveries is not None:
            await self._deliveries.wait(max(grace, 1.0))
        self._closed.set()

    async def abandon(self) -> None:
        """Stop at once and record nothing more: the executor of a deposed leader, whose
        runs a new leader has taken over (or takes over once it sees this one gone).
        Local attempt processes are killed; remote attempts are left to their engines,
        for the new leader to re-attach to; the job tasks are cancelled before they
        could record an attempt's end or a run's status."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        for runner in self._distinct_runners():
            runner.begin_close()
        self._queues.clear()
        for run in self._runs.values():
            for job_run in run.jobs.values():
                running = job_run.running
                if running is not None and job_run.node.executor not in self.remote_blocks:
                    self._kill(running, AttemptStatus.INTERRUPTED)
        tasks = self._job_tasks()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for runner in self._distinct_runners():
            try:
                await runner.aclose(0.0)
            except Exception:
                log.warning("closing an executor failed", exc_info=True)
        self._closed.set()

    def _distinct_runners(self) -> list[AttemptRunner]:
        seen: list[AttemptRunner] = []
        for runner in self.runners.values():
            if all(runner is not known for known in seen):
                seen.append(runner)
        return seen

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
    ) -> FlowRunState:
        run_id = self.store.create_flow_run(
            self.name, plan.root, trigger, scheduled_at=scheduled_at, params=params
        )
        ids = self.store.create_job_runs(
            run_id, self.name, plan.jobs, trigger, scheduled_at=scheduled_at
        )
        jobs = {name: JobRunState(self.jobs[name], ids[name]) for name in plan.jobs}
        run = FlowRunState(run_id, plan, jobs, trigger, scheduled_at, params)
        self._runs[run_id] = run
        return run

    # -- driving a flow run --

    def _launch(self, run: FlowRunState) -> None:
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

    def _start_job(self, run: FlowRunState, job_run: JobRunState) -> None:
        job_run.started = True
        job_run.task = asyncio.get_running_loop().create_task(self._run_job(run, job_run))

    def _propagate(self, run: FlowRunState, finished: Iterable[str]) -> None:
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

    def _evaluate(self, run: FlowRunState, job: str) -> tuple[Decision, dict[str, str | None]]:
        statuses: dict[str, str | None] = {}
        for upstream in run.plan.upstream[job]:
            statuses[upstream] = run.jobs[upstream].ending
        for outside in run.plan.outside[job]:
            statuses[outside] = str(self._outside_status(run, outside))
        return decide(run.jobs[job].node.trigger, list(statuses.values())), statuses

    def _outside_status(self, run: FlowRunState, job: str) -> RunStatus:
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

    def _skip_reason(self, run: FlowRunState, job: str, statuses: Mapping[str, str | None]) -> str:
        reason = skip_reason(run.jobs[job].node.trigger, statuses)
        missing = sorted(run.never_ran & set(run.plan.outside[job]))
        if missing:
            names = ", ".join(f"`{m}`" for m in missing)
            reason += f"; {names} outside this run never finished a run (counted as skipped)"
        return reason

    def _settle(
        self, run: FlowRunState, job_run: JobRunState, status: RunStatus, reason: str
    ) -> None:
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

    def _mark_finished(self, run: FlowRunState, job_run: JobRunState, status: RunStatus) -> None:
        if not job_run.status.finished:
            run.unfinished -= 1
        job_run.status = status
        job_run.ending = str(status)

    def _job_finished(self, run: FlowRunState, job_run: JobRunState, status: RunStatus) -> None:
        self._mark_finished(run, job_run, status)
        self._propagate(run, [job_run.node.name])
        self._complete_if_done(run)

    def _complete_if_done(self, run: FlowRunState) -> None:
        if run.started and run.unfinished == 0 and not run.done.done():
            self._complete(run)

    def _complete(self, run: FlowRunState) -> None:
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

    def _spec(self, node: JobNode) -> JobSpec:
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
            # a remote attempt takes a slot of the flow and of its pool, but none of
            # this machine's CPU or memory: its engine places it
            remote = node.executor in self.remote_blocks
            spec = self._specs[node.name] = JobSpec(
                demand=Demand(
                    node.pool,
                    node.pool_slots,
                    0.0 if remote else node.resources.cpu or 0.0,
                    0 if remote else node.resources.memory or 0,
                ),
                timeout=node.timeout if node.timeout is not None else self.flow.info.timeout,
                publisher_specs=publisher_specs,
                broker_secrets=tuple(broker_options),
            )
        return spec

    async def _run_job(self, run: FlowRunState, job_run: JobRunState) -> None:
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

    async def _attempts(self, run: FlowRunState, job_run: JobRunState) -> RunStatus:
        node = job_run.node
        spec = self._spec(node)
        problem = self.admission.impossible(spec.demand)
        if problem is not None:
            error = ErrorInfo(
                qualified_name(UnschedulableError),
                f'job "{node.name}" can never start: {problem}',
                "",
            )
            outcome = AttemptOutcome(AttemptStatus.FAILED, error=error, retryable=False)
            attempt_id = self._start_attempt(job_run, job_run.attempts + 1, None, utcnow())
            return self._record(run, job_run, attempt_id, outcome)
        adopted = job_run.adopt
        if adopted is not None:
            job_run.adopt = None
            status = await self._adopted_attempt(run, job_run, spec, adopted)
            if status is not RunStatus.RETRYING:
                return status
            job_run.delay = retry_delay(adopted.number, node.retry, self.rng)
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
                self._mark_queued(job_run.id)
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
                attempt_id, outcome = await self.runners[node.executor].run(
                    self._attempt(run, job_run, spec, number)
                )
            finally:
                self.admission.release(spec.demand)
            status = self._record(run, job_run, attempt_id, outcome)
            if status is not RunStatus.RETRYING:
                return status
            job_run.delay = retry_delay(number, node.retry, self.rng)

    async def _adopted_attempt(
        self, run: FlowRunState, job_run: JobRunState, spec: JobSpec, row: AttemptRow
    ) -> RunStatus:
        """Follow attempt `row`, which a previous orchestrator started and its engine
        still runs, to its end; record it as if this orchestrator had started it."""
        runner = self.runners.get(row.executor)
        acquired = self.admission.try_acquire(spec.demand)  # it runs already: never wait
        try:
            if isinstance(runner, PluginAttempts):
                log.info(
                    'job "%s" (job run %d): re-attached to attempt %d on executor "%s" (%s)',
                    job_run.node.name,
                    job_run.id,
                    row.number,
                    row.executor,
                    row.executor_ref,
                )

                def watch(running: RunningAttempt) -> Callable[[], None]:
                    return self._watch(job_run, running, spec.timeout)

                outcome = await runner.adopt(row, job_run.node, spec, watch)
            else:
                error = ErrorInfo(
                    qualified_name(ExecutorUnavailable),
                    f'executor "{row.executor}" is no longer in the flow',
                    "",
                )
                outcome = AttemptOutcome(AttemptStatus.LOST, error=error)
        finally:
            if acquired:
                self.admission.release(spec.demand)
        return self._record(run, job_run, row.id, outcome)

    async def held_attempts(self, executor: str) -> set[str]:
        """The references of the attempts executor block `executor` still holds
        (running, or ended and not collected): those a restart can re-attach to.
        Raises `ExecutorUnavailable` when it cannot say (or is no remote executor)."""
        runner = self.runners.get(executor)
        if not isinstance(runner, PluginAttempts):
            raise ExecutorUnavailable(f'executor "{executor}" is not in flow "{self.name}"')
        return await runner.held()

    def _attempt(
        self, run: FlowRunState, job_run: JobRunState, spec: JobSpec, number: int
    ) -> Attempt:
        def record_start(
            pid: int | None,
            at: datetime,
            *,
            executor: str | None = None,
            ref: str | None = None,
            where: str | None = None,
        ) -> int:
            return self._start_attempt(
                job_run, number, pid, at, executor=executor, ref=ref, where=where
            )

        def watch(running: RunningAttempt) -> Callable[[], None]:
            return self._watch(job_run, running, spec.timeout)

        return Attempt(
            node=job_run.node,
            flow=self.name,
            job_run_id=job_run.id,
            number=number,
            scheduled_at=run.scheduled_at,
            params=run.params,
            spec=spec,
            record_start=record_start,
            watch=watch,
        )

    def _start_attempt(
        self,
        job_run: JobRunState,
        number: int,
        pid: int | None,
        at: datetime,
        *,
        executor: str | None = None,
        ref: str | None = None,
        where: str | None = None,
    ) -> int:
        job_run.attempts = number
        return self.store.start_attempt(
            job_run.id,
            number,
            pid=pid,
            orchestrator_id=self.orchestrator_id,
            at=at,
            executor=executor,
            executor_ref=ref,
            executor_where=where,
        )

    def _record(
        self, run: FlowRunState, job_run: JobRunState, attempt_id: int, outcome: AttemptOutcome
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
            executor_where=outcome.where,
        )
        if self.notify is not None:
            summary = attempt_summary(outcome)
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
                cancellation.stop_reason(job_run.stop),
            )
        return status

    def _mark_queued(self, job_run_id: int) -> None:
        """Record that a job run waits for a slot. The job runs that queue in one turn
        of the event loop (a fan-out queues hundreds) are written together, in one
        statement, at the next turn; the store leaves alone any that started by then."""
        self._queued.append(job_run_id)
        if len(self._queued) == 1:
            asyncio.get_running_loop().call_soon(self._write_queued)

    def _write_queued(self) -> None:
        ids, self._queued = self._queued, []
        try:
            self.store.mark_queued(ids)
        except Exception:  # only what the history shows while they wait: go on
            log.exception("cannot mark %d job run(s) queued", len(ids))

    def _stopped(self, job_run: JobRunState) -> RunStatus:
        assert job_run.stop is not None
        self.store.set_job_run_status(job_run.id, RunStatus.CANCELLED)
        log.info(
            'job "%s" (job run %d) cancelled before its attempt %d: %s',
            job_run.node.name,
            job_run.id,
            job_run.attempts + 1,
            cancellation.stop_reason(job_run.stop),
        )
        return RunStatus.CANCELLED

    # -- watching an attempt: its timeout, and stops --

    def _watch(
        self, job_run: JobRunState, running: RunningAttempt, timeout: float | None
    ) -> Callable[[], None]:
        job_run.running = running
        timer: asyncio.TimerHandle | None = None
        if job_run.stop is not None:  # asked to stop while it was being started
            self._kill(running, job_run.stop)
        elif timeout is not None:
            timer = asyncio.get_running_loop().call_later(
                timeout, self._kill, running, AttemptStatus.TIMEOUT
            )

        def unwatch() -> None:
            if timer is not None:
                timer.cancel()
            job_run.running = None

        return unwatch

    def _kill(self, running: RunningAttempt, reason: AttemptStatus) -> None:
        cancellation.kill(running, reason, self.kill_grace)

    # -- cancellation --

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
        for job_run_id in sorted(cancellation.requested(self.store, list(active))):
            run, job_run = active[job_run_id]
            self._request_stop(run, job_run, AttemptStatus.CANCELLED, kill=True)

    def _request_stop(
        self, run: FlowRunState, job_run: JobRunState, reason: AttemptStatus, *, kill: bool
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
            self._settle(run, job_run, RunStatus.CANCELLED, cancellation.stop_reason(reason))
            if run.started:
                self._propagate(run, [job_run.node.name])
                self._complete_if_done(run)
        # otherwise its task is between two steps and sees `stop` at the next one

    # -- recovery --

    async def recover(
        self,
        lost: Sequence[AttemptRow],
        unfinished: Iterable[int] = (),
        adopted: Sequence[AttemptRow] = (),
    ) -> list[int]:
        """Resume the flow runs of attempts found lost at start-up (`Store.mark_lost`),
        and the `unfinished` flow runs (`Store.unfinished_flow_runs`) that had no
        attempt running: jobs waiting for dependencies, a backoff or a slot.

        A lost attempt counts as a failed one: its job run is retried per its policy
        (after the policy's backoff) or, with no attempts left, fails. The rest of
        its flow run goes on as if the orchestrator had never stopped. Returns the
        ids of the flow runs resumed.

        `adopted` are attempts a previous orchestrator started on a remote executor
        that still holds them: each is followed to its real end (re-attached), and
        its job run goes on from there."""
        self.start()
        adopt = {a.job_run_id: a for a in adopted}
        ours = {
            job_row.flow_run_id
            for a in adopted
            if (job_row := self.store.job_run(a.job_run_id)) is not None
            and job_row.flow == self.name
        }
        by_flow_run = recovery.lost_by_flow_run(
            self.store, self.name, lost, [*unfinished, *sorted(ours)]
        )
        resumed: list[int] = []
        for flow_run_id, attempts in sorted(by_flow_run.items()):
            if flow_run_id in self._runs:
                continue
            run = self._restore(flow_run_id, attempts)
            if run is not None:
                for job_run in run.jobs.values():
                    attempt = adopt.get(job_run.id)
                    if attempt is not None and not job_run.status.finished:
                        job_run.adopt = attempt
                        job_run.attempts = max(job_run.attempts, attempt.number)
                        job_run.resume = True
                self._launch(run)
                resumed.append(flow_run_id)
        return resumed

    def _restore(self, flow_run_id: int, lost: Sequence[AttemptRow]) -> FlowRunState | None:
        run = recovery.restore(self.store, self.name, self.jobs, self._plan, flow_run_id)
        if run is None:
            return None
        self._runs[flow_run_id] = run

        def emit(
            event: str, job_run: JobRunState, attempt: int, status: AttemptStatus, error: str
        ) -> None:
            self._emit(event, run, job_run, attempt, status, error)

        def failed(job_run: JobRunState) -> None:
            self._mark_finished(run, job_run, RunStatus.FAILED)

        recovery.settle_lost(self.store, run, lost, self.rng, emit, failed)
        return run

    # -- notifications --

    def _emit(
        self,
        event: str,
        run: FlowRunState,
        job_run: JobRunState,
        attempt: int | None,
        status: AttemptStatus | RunStatus,
        error: str | None,
    ) -> None:
        if self._deliveries is None:
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
        self._deliveries.send(record)
