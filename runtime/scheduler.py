"""The scheduler: fires each job's schedule, and manual and flow triggers, through one callback.

One asyncio task sleeps until the earliest next instant of all scheduled jobs
(a heap, one entry per job), wakes, and for each instant that is due:

1. records it with `store.record_fire(flow, job, instant)` *before* anything
   runs; when the store answers that the instant was recorded already (by an
   earlier life of this process, or another process), it is not fired again;
2. awaits `fire(FireRequest(...))`.

So a restart never fires an instant twice (at most once: an instant recorded
just before a crash is not started again). The callback should hand the run off
and return quickly (the next due instants wait for it); overlapping runs are the
executor's business: every fire is passed on, whatever still runs.

Missed instants follow the job's `catch_up` policy (`schedule.due_on_start`):

- at start-up, the instants after the job's last recorded one and up to now;
- while running, when the scheduler gets to an instant more than
  `misfire_grace` seconds after it (the machine was suspended, the process
  stopped, the event loop starved): that job's due instants are then treated
  exactly as after a restart at that moment.

A job that never fired before misses nothing: it starts with its next instant.
If the store cannot record an instant while running (it is unreachable), the
instant is not fired and is tried again after `store_retry` seconds, then
follows the same rules; one that fails during the start-up catch-up is dropped.

`trigger(job, params)` fires a manual (or flow) trigger through the same
`fire` callback. `on_tick(now)`, when given, is called after each wake; the
task wakes at least every `max_sleep` seconds, so it doubles as a heartbeat.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Protocol, TypeAlias, final

from tideflow.compiler.ir import FlowIR, JobNode, Schedule
from tideflow.dsl.suggest import suggest

from .clock import Clock
from .model import TriggerKind
from .schedule import CATCH_UP_POLICIES, due_on_start, fire_times
from .store import StoreError

__all__ = ["FireCallback", "FireRequest", "ScheduleLedger", "Scheduler", "TickCallback"]

logger = logging.getLogger(__name__)

_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class FireRequest:
    """A request to start a run of `job`: from a schedule instant, or a manual or flow trigger.

    `scheduled_at` is the instant (aware UTC) for schedule fires, None otherwise;
    `lateness` is how many seconds after that instant the request was made.
    `params` are the trigger's own (empty for schedule fires): the executor lays
    them over each job's declared params.
    """

    flow: str
    job: str
    trigger: TriggerKind
    scheduled_at: datetime | None
    params: Mapping[str, Any]
    lateness: float | None


FireCallback: TypeAlias = Callable[[FireRequest], Awaitable[None]]
TickCallback: TypeAlias = Callable[[datetime], Awaitable[None] | None]


class ScheduleLedger(Protocol):
    """What the scheduler needs from the run-history store (`Store` is one); a store
    that fails raises `StoreError`."""

    def last_fired(self, flow: str) -> dict[str, datetime]: ...

    def record_fire(self, flow: str, job: str, instant: datetime) -> bool: ...

    def record_fires(self, flow: str, fires: Sequence[tuple[str, datetime]]) -> list[bool]: ...


@final
class Scheduler:
    """Fires the schedules of one flow: `async with`, or `start()` then `aclose()`, or
    `await run()` (until `aclose()` or cancellation)."""

    def __init__(
        self,
        flow: FlowIR,
        store: ScheduleLedger,
        clock: Clock,
        fire: FireCallback,
        *,
        on_tick: TickCallback | None = None,
        max_sleep: float | None = 30.0,
        misfire_grace: float = 60.0,
        store_retry: float = 1.0,
    ) -> None:
        if max_sleep is not None and max_sleep <= 0:
            raise ValueError("max_sleep must be positive (or None)")
        if misfire_grace < 0 or store_retry <= 0:
            raise ValueError("misfire_grace must be >= 0 and store_retry > 0")
        self.flow = flow.info.name
        self._jobs = flow.jobs
        self._scheduled: dict[str, tuple[JobNode, Schedule]] = {}
        for name, job in sorted(self._jobs.items()):
            if job.schedule is None:
                continue
            if job.catch_up not in CATCH_UP_POLICIES:
                raise ValueError(f'job "{name}" has an unknown catch_up `{job.catch_up}`')
            next(fire_times(job.schedule, clock.now()), None)  # a bad zone or cron fails here
            self._scheduled[name] = (job, job.schedule)
        self._store = store
        self._clock = clock
        self._fire = fire
        self._on_tick = on_tick
        self._max_sleep = None if max_sleep is None else timedelta(seconds=max_sleep)
        self._grace = timedelta(seconds=misfire_grace)
        self._store_retry = timedelta(seconds=store_retry)
        # (wake at, instant, job): wake at is the instant, or later while the store fails
        self._heap: list[tuple[datetime, datetime, str]] = []
        self._upcoming: dict[str, Iterator[datetime]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False
        self._firing = 0

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Run the scheduler in a new task of the running loop (once per scheduler)."""
        if self._task is not None:
            raise RuntimeError("the scheduler was started already")
        self._task = asyncio.create_task(self._main(), name=f"tideflow-scheduler:{self.flow}")
        return self._task

    async def run(self) -> None:
        """Start, and return when closed; cancelling the caller stops the scheduler too."""
        task = self.start()
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not task.cancelled():
            task.result()  # the scheduler's own error, if it had one

    async def aclose(self) -> None:
        """Stop: a fire in progress completes, a sleep is cancelled. Idempotent."""
        self._stopping = self._closed = True
        task = self._task
        if task is None or task.done():
            return
        if not self._firing:
            task.cancel()
        await asyncio.wait({task})
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error

    async def __aenter__(self) -> Scheduler:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def next_fires(self) -> dict[str, datetime]:
        """The next instant of each scheduled job (a job retried after a store error
        shows the instant it retries)."""
        return {job: instant for _, instant, job in sorted(self._heap)}

    # --- triggers ------------------------------------------------------------------------

    async def trigger(
        self,
        job: str,
        params: Mapping[str, Any] | None = None,
        *,
        kind: TriggerKind = TriggerKind.MANUAL,
    ) -> FireRequest:
        """Fire `job` now with `params` through the same callback as schedule instants;
        returns the request. The callback's errors propagate to the caller."""
        if kind is TriggerKind.SCHEDULE:
            raise ValueError("schedule fires come from the schedule, not from trigger()")
        if self._closed:
            raise RuntimeError("the scheduler is closed")
        if job not in self._jobs:
            close = suggest(job, self._jobs)
            hint = f"; {close}" if close else ""
            raise ValueError(f'unknown job `{job}` in flow "{self.flow}"{hint}')
        request = FireRequest(
            flow=self.flow,
            job=job,
            trigger=kind,
            scheduled_at=None,
            params=MappingProxyType(dict(params or {})),
            lateness=None,
        )
        await self._dispatch(request, scheduled=False)
        return request

    # --- the loop --------------------------------------------------------------------------

    async def _main(self) -> None:
        await self._start_up()
        while not self._stopping:
            await self._clock.sleep_until(self._wake_at())
            now = self._clock.now()
            await self._tick(now)
            await self._fire_due(now)

    async def _start_up(self) -> None:
        now = self._clock.now()
        last = self._store.last_fired(self.flow)
        missed: list[tuple[datetime, str]] = []
        for name, (job, schedule) in self._scheduled.items():
            previous = last.get(name)
            missed.extend(
                (instant, name)
                for instant in due_on_start(schedule, previous, now, job.catch_up, job=name)
            )
            start = now if previous is None else max(now, previous)
            self._upcoming[name] = fire_times(schedule, start)
            self._push_next(name)
        missed.sort()
        for instant, name in missed:
            # A store failure here leaves this instant missed for good: the instants
            # after it are still fired, and the store refuses anything older later.
            await self._fire_scheduled(name, instant)
            if self._stopping:
                return
        await self._tick(now)

    def _wake_at(self) -> datetime:
        wake = self._heap[0][0] if self._heap else None
        if self._max_sleep is not None:
            heartbeat = self._clock.now() + self._max_sleep
            wake = heartbeat if wake is None else min(wake, heartbeat)
        if wake is None:
            return datetime.max.replace(tzinfo=UTC)
        return wake

    async def _fire_due(self, now: datetime) -> None:
        on_time: list[tuple[str, datetime]] = []
        while self._heap and self._heap[0][0] <= now and not self._stopping:
            _, instant, name = heapq.heappop(self._heap)
            if now - instant <= self._grace:
                on_time.append((name, instant))
                continue
            job, schedule = self._scheduled[name]
            # Behind by more than the grace: as after a restart at `now`.
            logger.warning(
                'job `%s` of flow "%s" is %.1f s behind its schedule; missed instants follow '
                "its catch-up policy (%s)",
                name,
                self.flow,
                (now - instant).total_seconds(),
                job.catch_up,
            )
            for missed in due_on_start(schedule, instant - _MICROSECOND, now, job.catch_up):
                if not await self._fire_scheduled(name, missed):
                    heapq.heappush(self._heap, (now + self._store_retry, missed, name))
                    break
            else:
                self._upcoming[name] = fire_times(schedule, now)
                self._push_next(name)
        if on_time:
            await self._fire_batch(now, on_time)

    async def _fire_batch(self, now: datetime, due: list[tuple[str, datetime]]) -> None:
        """Record every instant due at this wake in one transaction, then fire them."""
        try:
            recorded = self._store.record_fires(self.flow, due)
        except StoreError as exc:
            logger.warning(
                "cannot record %d due fire(s), not firing them: %s",
                len(due),
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            for name, instant in due:
                heapq.heappush(self._heap, (now + self._store_retry, instant, name))
            return
        for (name, instant), fresh in zip(due, recorded, strict=True):
            self._push_next(name)
            if not fresh:
                logger.info(
                    "job `%s` at %s was fired already; not again", name, instant.isoformat()
                )
                continue
            await self._dispatch(self._schedule_request(name, instant), scheduled=True)

    def _push_next(self, name: str) -> None:
        instant = next(self._upcoming[name], None)
        if instant is not None:
            heapq.heappush(self._heap, (instant, instant, name))

    async def _fire_scheduled(self, name: str, instant: datetime) -> bool:
        """Record then fire one instant; False when the store failed (not fired)."""
        try:
            recorded = self._store.record_fire(self.flow, name, instant)
        except StoreError as exc:
            logger.warning(
                "cannot record the fire of job `%s` at %s, not firing it: %s",
                name,
                instant.isoformat(),
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            return False
        if not recorded:
            logger.info("job `%s` at %s was fired already; not again", name, instant.isoformat())
            return True
        await self._dispatch(self._schedule_request(name, instant), scheduled=True)
        return True

    def _schedule_request(self, name: str, instant: datetime) -> FireRequest:
        return FireRequest(
            flow=self.flow,
            job=name,
            trigger=TriggerKind.SCHEDULE,
            scheduled_at=instant,
            params=MappingProxyType({}),
            lateness=(self._clock.now() - instant).total_seconds(),
        )

    async def _dispatch(self, request: FireRequest, *, scheduled: bool) -> None:
        self._firing += 1
        try:
            await self._fire(request)
        except Exception:
            if not scheduled:
                raise
            # recorded already: the instant is spent whatever the callback did
            logger.exception("the fire callback failed for job `%s`", request.job)
        finally:
            self._firing -= 1

    async def _tick(self, now: datetime) -> None:
        if self._on_tick is None:
            return
        try:
            result = self._on_tick(now)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("the scheduler's on_tick callback failed")
