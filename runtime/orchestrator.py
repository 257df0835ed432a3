"""The orchestrator: what `tideflow run` runs for one or more compiled flows.

At start-up it refuses to run a flow another live orchestrator runs together
with other flows (a different set), registers itself, and waits for the lease
of its flows (see below). Leading, it saves each flow's IR (the dashboard draws
it), ensures every topic and consumer group on its broker, and recovers what a
previous orchestrator left: attempts still marked running are marked lost and retried
per their policy, and unfinished flow runs resume. Then, per flow, the
scheduler fires schedules into the executor, manual triggers (claimed from the
store, where `tideflow trigger` and the dashboard leave them) go the same way,
and run events reach the flow's notify blocks, as do the messages consumer
instances dead-letter (`dead_letter`, one event per consumer and look). A job whose `after` names a
job of another flow (`flow.billing.job.close`) starts, through the same path,
when a run of that job finishes as its trigger rule asks (see `FIRES_ON`);
each upstream run acted on is recorded before the start, like a schedule
instant, so a restart neither skips nor repeats one. Each consumer runs as
instances started by its scale backend: one with a `scale` block follows its
backlog through an autoscaler; one without runs a single local instance.

`run(stop)` returns after `stop` is set and everything has stopped: no new
starts; running attempts get `grace` seconds, then are killed and recorded as
interrupted.

Several orchestrators may run the same flows on one store: one leads, the others
stand by (see `_lead` and docs/operations.md). The leader holds the store's lease
of its set of flows, renews it every `renew` seconds, and sets the lease's fencing
token on the store, so that every write acting on the world (a fire recorded, an
attempt started, a scaling decision, a trigger request taken, attempts taken over)
checks it in the same statement. It stops acting at once when the store refuses its
token (`FencedError`), when another holder took the lease, or when it could not
renew for `lease - renew` seconds (before the lease can expire); then it stands by.
A standby polls the lease every `renew / 4` seconds and, once it holds it, does
what a starting orchestrator does: recovers attempts, catches schedules up, starts
consumers and serves trigger requests. A graceful stop releases the lease at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from tideflow.compiler.ir import ConsumerNode, FlowIR
from tideflow.compiler.irjson import to_json
from tideflow.plugins.api import BackendError, Broker, ReportsCrashLoops, Scaler

from .autoscaler import Autoscaler
from .backends import open_broker, open_scaler, open_topic_broker
from .clock import Clock, SystemClock
from .consumer.dead_letter import dead_letter_group
from .executor import Executor, RunRequest
from .executor.remote import ExecutorUnavailable
from .model import AttemptRow, DeadLetterRow, RunStatus, TriggerKind
from .notify import Notifications, dead_letter_event
from .scheduler import FireRequest, Scheduler
from .secrets import UnresolvedValueError
from .store import Fence, FencedError, LeaseGrant, Store, StoreError, lease_key

log = logging.getLogger("tideflow.orchestrator")

# An orchestrator whose heartbeat is older than this is taken for dead.
LIVE_WITHIN_SECONDS = 30.0
HEARTBEAT_SECONDS = 1.0
# The lease's defaults (`tideflow run --lease --renew`).
LEASE_SECONDS = 10.0
RENEW_SECONDS = 2.0


def _tideflow_process(pid: int) -> bool:
    """Whether `pid` is a running tideflow process on this machine."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True  # no /proc: alive, and we cannot tell what it runs
    return b"tideflow" in cmdline


# The endings of another flow's job that start a job waiting for it, by trigger rule.
FIRES_ON: Final[Mapping[str, frozenset[RunStatus]]] = {
    "all_success": frozenset({RunStatus.SUCCESS}),
    "one_success": frozenset({RunStatus.SUCCESS}),
    "none_failed": frozenset({RunStatus.SUCCESS, RunStatus.SKIPPED}),
    "one_failed": frozenset({RunStatus.FAILED, RunStatus.UPSTREAM_FAILED}),
    "all_done": frozenset(s for s in RunStatus if s.finished),
    "always": frozenset(s for s in RunStatus if s.finished),
}


@dataclass(frozen=True, slots=True)
class _Upstream:
    """A job of another flow that jobs of `flow` run after."""

    flow: str  # the flow waiting
    upstream_flow: str
    upstream_job: str
    jobs: tuple[str, ...]  # the waiting jobs

    @property
    def ledger_key(self) -> str:
        # kept among the flow's schedule state: the newest upstream finish acted on
        return f"@after:{self.upstream_flow}.{self.upstream_job}"


class OrchestratorError(Exception):
    """The orchestrator cannot start; the message says why and what to do."""


class Role:
    """What an orchestrator is doing now (`Orchestrator.role`)."""

    STARTING: Final = "starting"
    LEADER: Final = "leader"
    STANDBY: Final = "standby"
    STOPPED: Final = "stopped"


@dataclass(frozen=True, slots=True)
class _GatedLedger:
    """The scheduler's ledger, refusing (as a failing store would) while the orchestrator
    must not act: an instant is then neither recorded nor fired, and the next leader
    fires it by its `catch_up`."""

    store: Store
    may_act: Callable[[], bool]

    def _check(self) -> None:
        if not self.may_act():
            raise StoreError("this orchestrator does not lead now")

    def last_fired(self, flow: str) -> dict[str, datetime]:
        return self.store.last_fired(flow)

    def record_fire(self, flow: str, job: str, instant: datetime) -> bool:
        self._check()
        return self.store.record_fire(flow, job, instant)

    def record_fires(self, flow: str, fires: Sequence[tuple[str, datetime]]) -> list[bool]:
        self._check()
        return self.store.record_fires(flow, fires)


@dataclass
class _ConsumerRuntime:
    consumer: ConsumerNode
    scaler: Scaler
    broker: Broker | None = None  # reads the backlog, for the autoscaler
    autoscaler: Autoscaler | None = None
    crash_looping: bool = False


@dataclass
class _FlowRuntime:
    flow: FlowIR
    executor: Executor
    notifications: Notifications
    scheduler: Scheduler | None = None
    consumers: list[_ConsumerRuntime] = field(default_factory=list)


@dataclass
class Orchestrator:
    """Runs `flows` against `store` until `run(stop)` sees `stop` set."""

    flows: Sequence[FlowIR]
    store: Store
    grace: float = 30.0
    trigger_poll: float = 0.5
    clock: Clock = field(default_factory=SystemClock)
    executor_options: Mapping[str, Any] = field(default_factory=dict)
    on_started: Callable[[Orchestrator], None] | None = None
    # the leader lease: its length, and how often the leader renews it
    lease: float = LEASE_SECONDS
    renew: float = RENEW_SECONDS
    # called at each change of `role` (after it changed)
    on_role: Callable[[Orchestrator], None] | None = None
    # what run() builds
    id: int | None = field(default=None, init=False)
    role: str = field(default=Role.STARTING, init=False)
    term: LeaseGrant | None = field(default=None, init=False)  # the lease, while leading
    runtimes: dict[str, _FlowRuntime] = field(default_factory=dict, init=False)
    upstreams: list[_Upstream] = field(default_factory=list, init=False)
    _last_heartbeat: float = field(default=0.0, init=False)
    _renewed: float = field(default=0.0, init=False)  # monotonic start of the last renewal
    _lost: asyncio.Event | None = field(default=None, init=False)
    _lost_why: str = field(default="", init=False)
    _recovered: bool = field(default=False, init=False)
    _dead: list[int] = field(default_factory=list, init=False)  # found dead at start-up
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)
    _unreachable: bool = field(default=False, init=False)

    @property
    def names(self) -> list[str]:
        return [flow.info.name for flow in self.flows]

    def next_fires(self) -> dict[tuple[str, str], datetime]:
        """The next instant of every scheduled job, by (flow, job)."""
        fires: dict[tuple[str, str], datetime] = {}
        for name, runtime in self.runtimes.items():
            if runtime.scheduler is not None:
                for job, instant in runtime.scheduler.next_fires().items():
                    fires[(name, job)] = instant
        return fires

    @property
    def lease_key(self) -> str:
        return lease_key(self.names)

    async def run(self, stop: asyncio.Event) -> None:
        if not 0 < self.renew < self.lease:
            raise OrchestratorError(
                f"the lease renewal ({self.renew:g}s) must be shorter than the lease "
                f"({self.lease:g}s)"
            )
        self._check_can_start()
        try:
            self.store.check_lease_support()
        except StoreError as exc:
            raise OrchestratorError(str(exc)) from exc
        # consumer instances (tideflow worker processes) report to the same store
        os.environ["TIDEFLOW_STATE"] = self.store.url
        self.id = self.store.register_orchestrator(self.names)
        log.info("orchestrator %d started for %s", self.id, ", ".join(self.names))
        beating = asyncio.create_task(self._heartbeats())
        try:
            while not stop.is_set():
                grant = await self._stand_by(stop)
                if grant is not None:
                    await self._lead(stop, grant)
        finally:
            if self.runtimes:  # a standby's prepared executors
                await self._wind_down(0.0)
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
            self._set_role(Role.STOPPED)
            with contextlib.suppress(StoreError):
                self.store.orchestrator_stopped(self.id)
            log.info("orchestrator %d stopped", self.id)

    # --- the lease -----------------------------------------------------------------------

    def _set_role(self, role: str, why: str = "") -> None:
        if role == self.role:
            return
        self.role = role
        if role == Role.LEADER and self.term is not None:
            log.info(
                "orchestrator %d leads %s (fencing token %d)%s",
                self.id,
                ", ".join(self.names),
                self.term.token,
                why,
            )
        elif role == Role.STANDBY:
            log.info("orchestrator %d stands by%s", self.id, why)
        if self.on_role is not None:
            self.on_role(self)

    def may_act(self) -> bool:
        """Whether this orchestrator may act now: it leads, nothing refused its token, and
        its last renewal is recent enough that the lease cannot have expired."""
        if self.role != Role.LEADER or self._lost is None or self._lost.is_set():
            return False
        if time.monotonic() - self._renewed > self.lease - self.renew:
            self._lose(
                f"the lease was not renewed for {time.monotonic() - self._renewed:.1f}s "
                f"(lease {self.lease:g}s)"
            )
            return False
        return True

    def _lose(self, why: str) -> None:
        if self._lost is not None and not self._lost.is_set():
            self._lost_why = why
            self._lost.set()

    def _acquire(self) -> LeaseGrant | None:
        assert self.id is not None
        started = time.monotonic()
        try:
            grant = self.store.acquire_lease(
                self.lease_key, self.id, self.lease, steal_from=self._dead
            )
        except StoreError as exc:
            if not self._unreachable:  # once per outage, not at every poll
                log.warning("the lease could not be read: %s", _first_line(exc))
            self._unreachable = True
            return None
        self._unreachable = False
        if grant is not None:
            self._renewed = started
        return grant

    async def _stand_by(self, stop: asyncio.Event) -> LeaseGrant | None:
        """Poll the lease until this orchestrator holds it (the grant) or `stop` is set."""
        poll = self.renew / 4
        while not stop.is_set():
            grant = self._acquire()
            if grant is not None:
                return grant
            if self.role != Role.STANDBY:
                holder = self._holder()
                self._set_role(Role.STANDBY, f": orchestrator {holder} leads" if holder else "")
            if not self.runtimes:
                try:  # a warm standby: its workers are up when it takes over
                    self._prepare()
                except Exception:
                    log.exception("the executors could not be prepared; they start on takeover")
                    await self._wind_down(0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll)
        return None

    def _holder(self) -> int | None:
        with contextlib.suppress(StoreError):
            state = self.store.lease(self.lease_key)
            return state.holder if state is not None else None
        return None

    async def _keep_lease(self, grant: LeaseGrant) -> None:
        """Renew every `renew` seconds; lose the lease when another holder has it, or when
        renewing failed for `lease - renew` seconds."""
        assert self.id is not None and self._lost is not None
        while not self._lost.is_set():
            deadline = self._renewed + self.lease - self.renew
            wait = min(self.renew, max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), wait)
            if self._lost.is_set() or not self.may_act():
                return
            if time.monotonic() - self._renewed < self.renew * 0.9:
                continue  # woken early for the deadline: not yet time to renew
            started = time.monotonic()
            try:
                held = await asyncio.to_thread(
                    self.store.renew_lease, grant.key, self.id, grant.token, self.lease
                )
            except StoreError as exc:
                log.warning("the lease could not be renewed: %s", _first_line(exc))
                continue
            if not held:
                self._lose("another orchestrator holds the lease")
                return
            self._renewed = started

    def _fenced(self, fence: Fence) -> None:
        # the store refused a write: called where the write was made, maybe another thread
        why = f"the store refused fencing token {fence.token}: another orchestrator leads"
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._lose, why)

    async def _lead(self, stop: asyncio.Event, grant: LeaseGrant) -> None:
        """Act as the leader until `stop` is set or the lease is lost; then stop acting at
        once and wind down (graceful: the lease is released first, so that a standby
        takes over while this one drains)."""
        assert self.id is not None
        self._loop = asyncio.get_running_loop()
        self.term = grant
        self._lost = asyncio.Event()
        self._lost_why = ""
        self._recovered = False
        self.store.fence = Fence(grant.key, grant.token, self.id)
        self.store.on_fenced = self._fenced
        taken = ""
        if grant.previous_holder is not None:
            how = "released it" if grant.released else "let it expire"
            taken = f", taking over from orchestrator {grant.previous_holder}, which {how}"
        self._set_role(Role.LEADER, taken)
        keeper = asyncio.create_task(self._keep_lease(grant))
        try:
            for flow in self.flows:
                self.store.save_flow(flow.info.name, flow.info.source, to_json(flow))
                await self._ensure_topics(flow)
            self._prepare()
            await self._recover_if_ready(grant)
            self._watch_other_flows()
            for runtime in self.runtimes.values():
                await self._start_consumers(runtime)
                if runtime.scheduler is not None:
                    runtime.scheduler.start()
            if self.on_started is not None:
                self.on_started(self)
            await self._serve_triggers(stop)
        except StoreError as exc:  # FencedError included
            self._lose(_first_line(exc))
        finally:
            graceful = not self._lost.is_set()
            self._lose("stopping")
            await self._stop_acting()
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            self.store.fence = None
            self.store.on_fenced = None
            if graceful:
                with contextlib.suppress(StoreError):
                    self.store.release_lease(grant.key, self.id, grant.token)
                    log.info("orchestrator %d released the lease", self.id)
            else:
                self._set_role(Role.STANDBY, f": {self._lost_why}")
            self.term = None
            # a deposed leader's runs are the new leader's: it kills its attempts and
            # records nothing more about them
            await self._wind_down(self.grace, abandon=not graceful)

    # --- start-up ------------------------------------------------------------------------

    def _check_can_start(self) -> None:
        """Refuse what two orchestrators must never do: lead overlapping but different
        sets of flows (each would hold a lease of its own and both would act). The same
        set is fine: the second one stands by."""
        names = self.names
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise OrchestratorError(f"flow names must differ; given twice: {', '.join(twice)}")
        for other in self.store.live_orchestrators(names, LIVE_WITHIN_SECONDS):
            if other.host == socket.gethostname() and not _tideflow_process(other.pid):
                # killed (SIGKILL, a crash) moments ago: its heartbeat is fresh, its
                # process is gone; its lease may be taken at once
                self.store.orchestrator_stopped(other.id)
                self._dead.append(other.id)
                continue
            if other.all_flows == tuple(sorted(names)):
                continue  # the same flows: one of us leads, the other stands by
            age = time.time() - other.heartbeat_at.timestamp()
            raise OrchestratorError(
                f"flow {', '.join(repr(f) for f in other.flows)} is already run by "
                f"orchestrator {other.id} (pid {other.pid} on {other.host}, last "
                f"heartbeat {age:.0f}s ago) together with other flows "
                f"({', '.join(other.all_flows)}); orchestrators of the same flows stand by "
                "for each other only when they run exactly the same set: stop it first, "
                "or run the same files"
            )

    async def _ensure_topics(self, flow: FlowIR) -> None:
        """Create topics and consumer groups up front, so that a group's backlog counts
        every message published from now on."""
        groups: dict[str, list[str]] = {}
        for consumer in flow.consumers.values():
            groups.setdefault(consumer.consumes, []).append(consumer.group)
            if consumer.dead_letter is not None:  # what `tideflow dlq` reads
                groups.setdefault(consumer.dead_letter, []).append(dead_letter_group(consumer))
        for broker_name in flow.brokers:
            if not any(t.broker == broker_name for t in flow.topics.values()):
                continue
            try:
                async with open_broker(flow, broker_name) as broker:
                    await broker.ensure_topics(groups)
            except (BackendError, UnresolvedValueError, OSError) as exc:
                log.warning(
                    'broker "%s" of flow "%s" is not ready (%s); jobs that publish to it fail '
                    "until it is",
                    broker_name,
                    flow.info.name,
                    exc,
                )

    def _prepare(self) -> None:
        """Build each flow's executor (its worker processes started) and scheduler (not
        started): at once when leading, ahead of time when standing by."""
        if not self.runtimes:
            for flow in self.flows:
                self._start_flow(flow)

    def _start_flow(self, flow: FlowIR) -> None:
        notifications = Notifications(flow)
        executor = Executor(
            flow,
            self.store,
            notify=notifications.deliver,
            orchestrator_id=self.id,
            **dict(self.executor_options),
        )
        executor.start()
        runtime = _FlowRuntime(flow, executor, notifications)
        if any(job.schedule is not None for job in flow.jobs.values()):
            runtime.scheduler = Scheduler(
                flow,
                _GatedLedger(self.store, self.may_act),
                self.clock,
                self._fire,
                on_tick=self._tick,
                max_sleep=5.0,
            )
        self.runtimes[flow.info.name] = runtime

    async def _adoptable(self) -> list[AttemptRow]:
        """The attempts a previous orchestrator left running on remote executors that
        still hold them (to re-attach to); the rest of its attempts are lost."""
        adoptable: list[AttemptRow] = []
        held: dict[tuple[str, str], set[str] | None] = {}
        for row in self.store.running_attempts(self.names):
            if row.executor is None or row.executor_ref is None:
                continue
            job_run = self.store.job_run(row.job_run_id)
            runtime = self.runtimes.get(job_run.flow) if job_run is not None else None
            if runtime is None:
                continue
            key = (runtime.flow.info.name, row.executor)
            if key not in held:
                try:
                    held[key] = await runtime.executor.held_attempts(row.executor)
                except ExecutorUnavailable as exc:
                    log.warning("%s: its attempts left running count as lost", exc)
                    held[key] = None
            refs = held[key]
            if refs is not None and row.executor_ref in refs:
                adoptable.append(row)
        return adoptable

    async def _recover(self) -> None:
        adopted = await self._adoptable()
        lost = self.store.mark_lost(
            self.names, except_orchestrator=self.id, keep=[a.id for a in adopted]
        )
        unfinished = self.store.unfinished_flow_runs(self.names)
        if adopted:
            log.warning(
                "%d attempt(s) a previous orchestrator started still run on their executors: "
                "re-attached",
                len(adopted),
            )
        for name, runtime in self.runtimes.items():
            flow_runs = [r.id for r in unfinished if r.flow == name]
            resumed = await runtime.executor.recover(lost, flow_runs, adopted)
            if resumed:
                log.warning(
                    'flow "%s": resumed %d run(s) left unfinished by a previous orchestrator',
                    name,
                    len(resumed),
                )
        if lost:
            log.warning(
                "%d attempt(s) were running when the last orchestrator died: lost", len(lost)
            )

    async def _start_consumers(self, runtime: _FlowRuntime) -> None:
        flow = runtime.flow
        for consumer in flow.consumers.values():
            try:
                runtime.consumers.append(await self._start_consumer(flow, consumer, runtime))
            except (BackendError, UnresolvedValueError, OSError, LookupError) as exc:
                log.warning(
                    'consumer "%s" of flow "%s" cannot start: %s',
                    consumer.name,
                    flow.info.name,
                    exc,
                )

    async def _start_consumer(
        self, flow: FlowIR, consumer: ConsumerNode, runtime: _FlowRuntime
    ) -> _ConsumerRuntime:
        scaler = open_scaler(flow, consumer)
        if consumer.scale is None:
            # no scale block: one instance, kept running
            await scaler.scale(1)
            return _ConsumerRuntime(consumer, scaler)
        broker = open_topic_broker(flow, consumer.consumes)
        rule = consumer.scale
        topic, group = consumer.consumes, consumer.group
        timeout = max(1.0, min(rule.poll, 10.0))

        async def read_backlog() -> Any:
            return await broker.read_backlog(topic, group, timeout=timeout)

        autoscaler = Autoscaler(
            flow.info.name,
            consumer,
            rule,
            read_backlog,
            scaler,
            self.store,
            self.clock,
            partitioned=type(broker).partitioned,
            may_act=self.may_act,
        )
        autoscaler.start()
        return _ConsumerRuntime(consumer, scaler, broker, autoscaler)

    async def _watch_consumers(self) -> None:
        """Tell the notify blocks when a consumer starts or stops crash-looping."""
        for runtime in self.runtimes.values():
            for item in runtime.consumers:
                looping = isinstance(item.scaler, ReportsCrashLoops) and item.scaler.crash_looping
                if looping and not item.crash_looping:
                    await runtime.notifications.consumer_event(
                        "crash_loop",
                        item.consumer.name,
                        f'consumer "{item.consumer.name}" of flow "{runtime.flow.info.name}" '
                        "is crash-looping: its instances keep exiting",
                    )
                item.crash_looping = looping

    async def _notify_dead_letters(self) -> None:
        """One `dead_letter` event per consumer for the messages its instances gave up
        on since the last look (each stored dead letter is claimed once)."""
        try:
            rows = self.store.claim_dead_letters(self.names)
        except Exception as exc:
            log.warning("dead letters could not be read from the state store: %s", exc)
            return
        by_consumer: dict[tuple[str, str], list[DeadLetterRow]] = {}
        for row in rows:
            by_consumer.setdefault((row.flow, row.consumer), []).append(row)
        for (flow, consumer), found in by_consumer.items():
            runtime = self.runtimes.get(flow)
            if runtime is None:
                continue
            summary, details = dead_letter_event(consumer, found)
            await runtime.notifications.consumer_event("dead_letter", consumer, summary, details)

    def _watch_other_flows(self) -> None:
        """Start following the other flows' jobs that jobs here run after. The first
        time, from now: runs that finished before are history, not triggers."""
        waiting: dict[tuple[str, str, str], list[str]] = {}
        for flow in self.flows:
            for job in flow.jobs.values():
                for upstream_flow, upstream_job in job.after_flows:
                    key = (flow.info.name, upstream_flow, upstream_job)
                    waiting.setdefault(key, []).append(job.name)
        now = datetime.now(UTC)
        for (name, upstream_flow, upstream_job), jobs in sorted(waiting.items()):
            upstream = _Upstream(name, upstream_flow, upstream_job, tuple(jobs))
            if upstream.ledger_key not in self.store.last_fired(name):
                self.store.record_fire(name, upstream.ledger_key, now)
            self.upstreams.append(upstream)

    async def _follow_other_flows(self) -> None:
        for upstream in self.upstreams:
            since = self.store.last_fired(upstream.flow)[upstream.ledger_key]
            finished = self.store.finished_job_runs(
                upstream.upstream_flow, upstream.upstream_job, after=since
            )
            runtime = self.runtimes[upstream.flow]
            for row in finished:
                assert row.finished_at is not None
                if not self.store.record_fire(upstream.flow, upstream.ledger_key, row.finished_at):
                    continue
                for job in upstream.jobs:
                    if row.status not in FIRES_ON[runtime.flow.jobs[job].trigger]:
                        continue
                    flow_run = await runtime.executor.submit(
                        RunRequest(job, TriggerKind.FLOW, params={})
                    )
                    log.info(
                        'flow "%s": job "%s" after %s.%s (run %d, %s) -> flow run %d',
                        upstream.flow,
                        job,
                        upstream.upstream_flow,
                        upstream.upstream_job,
                        row.id,
                        row.status,
                        flow_run,
                    )

    # --- running -------------------------------------------------------------------------

    async def _fire(self, request: FireRequest) -> None:
        if not self.may_act():
            # recorded in the instant before the lease was lost: the run is not started
            log.warning(
                'flow "%s": job "%s" at %s not started: this orchestrator no longer leads',
                request.flow,
                request.job,
                request.scheduled_at,
            )
            return
        runtime = self.runtimes[request.flow]
        await runtime.executor.submit(request)

    def _tick(self, now: datetime) -> None:
        self._heartbeat()

    def _heartbeat(self) -> None:
        if self.id is None:
            return
        moment = time.monotonic()
        if moment - self._last_heartbeat >= HEARTBEAT_SECONDS:
            self._last_heartbeat = moment
            self.store.heartbeat(self.id)

    async def _serve_triggers(self, stop: asyncio.Event) -> None:
        """Claim manual triggers from the store until `stop` is set or the lease is
        lost."""
        assert self.id is not None and self._lost is not None and self.term is not None
        lost = self._lost
        while not stop.is_set() and self.may_act():
            try:
                await self._serve_once()
            except FencedError:
                raise
            except StoreError as exc:
                # a blip: the lease keeper steps down if it lasts (lease - renew)
                log.warning("the state store failed: %s", _first_line(exc))
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
            try:
                await asyncio.wait(waits, timeout=self.trigger_poll, return_when="FIRST_COMPLETED")
            finally:
                for waiting in waits:
                    waiting.cancel()

    async def _serve_once(self) -> None:
        assert self.id is not None and self.term is not None
        self._heartbeat()
        if not self._recovered:
            await self._recover_if_ready(self.term)
        await self._watch_consumers()
        await self._notify_dead_letters()
        await self._follow_other_flows()
        if not self.may_act():
            return  # a request taken now could not be started
        for request in self.store.claim_trigger_requests(self.names, self.id):
            runtime = self.runtimes[request.flow]
            if request.job not in runtime.flow.jobs:
                log.warning(
                    'trigger request %d names job "%s", which flow "%s" no longer has',
                    request.id,
                    request.job,
                    request.flow,
                )
                continue
            flow_run = await runtime.executor.submit(
                RunRequest(request.job, request.trigger, params=request.params)
            )
            self.store.link_trigger_request(request.id, flow_run)
            log.info(
                'flow "%s": %s trigger of job "%s" by %s -> flow run %d',
                request.flow,
                request.trigger,
                request.job,
                request.requested_by,
                flow_run,
            )

    @staticmethod
    async def _stop_consumer(item: _ConsumerRuntime) -> None:
        with contextlib.suppress(Exception):
            await item.scaler.aclose()
        if item.broker is not None:
            with contextlib.suppress(Exception):
                await item.broker.aclose()

    async def _heartbeats(self) -> None:
        """Beat every HEARTBEAT_SECONDS for the whole life of the process, leading,
        standing by or draining: a new leader waits for the old one's attempts until
        its heartbeat stops (see `_previous_gone`)."""
        while True:  # cancelled by run() at the very end
            with contextlib.suppress(StoreError):
                self._heartbeat()
            await asyncio.sleep(HEARTBEAT_SECONDS / 2)

    def _previous_gone(self, grant: LeaseGrant) -> bool:
        """Whether the attempts still marked running by the orchestrator that led before
        may be taken over (marked lost, their runs resumed). At once when its lease
        expired: it died, or it was deposed and abandons its runs. After a graceful
        release it drains its attempts itself: then only once it has stopped (or been
        silent for a lease)."""
        previous = grant.previous_holder
        if previous is None or previous == self.id or not grant.released:
            return True
        for other in self.store.live_orchestrators(self.names, self.lease):
            if other.id == previous:
                return other.host == socket.gethostname() and not _tideflow_process(other.pid)
        return True

    async def _recover_if_ready(self, grant: LeaseGrant) -> None:
        if self._previous_gone(grant):
            self._recovered = True
            await self._recover()

    async def _stop_acting(self) -> None:
        """No more fires, scaling or trigger claims: at once."""
        for runtime in self.runtimes.values():
            if runtime.scheduler is not None:
                with contextlib.suppress(Exception):
                    await runtime.scheduler.aclose()
            for item in runtime.consumers:
                if item.autoscaler is not None:
                    with contextlib.suppress(Exception):
                        await item.autoscaler.aclose()

    async def _wind_down(self, grace: float, *, abandon: bool = False) -> None:
        """Stop consumers and executors: running attempts get `grace` seconds, or with
        `abandon` (a deposed leader) are killed at once with nothing recorded."""
        # instances drain (each within its drain_timeout) while jobs finish
        await asyncio.gather(
            *(self._stop_consumer(item) for r in self.runtimes.values() for item in r.consumers)
        )
        await asyncio.gather(
            *(
                runtime.executor.abandon() if abandon else runtime.executor.shutdown(grace)
                for runtime in self.runtimes.values()
            )
        )
        for runtime in self.runtimes.values():
            await runtime.notifications.aclose()
        self.runtimes = {}
        self.upstreams = []


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]
