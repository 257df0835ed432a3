"""The scheduler and the clocks: firing, restarts and catch-up, triggers, heartbeats, stopping.

Most tests run on a `VirtualClock` and a real store (SQLite and PostgreSQL);
one runs the scheduler in a real process on the system clock and kills it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tideflow.compiler.ir import FlowInfo, FlowIR, JobNode, Schedule
from tideflow.runtime.clock import SystemClock, VirtualClock
from tideflow.runtime.model import TriggerKind
from tideflow.runtime.scheduler import FireRequest, Scheduler
from tideflow.runtime.store import Store, StoreError

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def at(minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


def every(seconds: float, catch_up: str = "latest", name: str = "tick", **extra: Any) -> JobNode:
    schedule = Schedule("every", "UTC", interval=seconds)
    return JobNode(name, schedule=schedule, catch_up=catch_up, **extra)


def flow_of(*jobs: JobNode, name: str = "orders") -> FlowIR:
    flow = FlowIR(FlowInfo(name, f"{name}.flow"))
    for job in jobs:
        flow.add(job)
    return flow


class Recorder:
    """A fire callback that keeps every request it is given."""

    def __init__(self, check: Callable[[FireRequest], None] | None = None) -> None:
        self.requests: list[FireRequest] = []
        self.check = check

    async def __call__(self, request: FireRequest) -> None:
        if self.check is not None:
            self.check(request)
        self.requests.append(request)

    @property
    def instants(self) -> list[datetime | None]:
        return [r.scheduled_at for r in self.requests]

    @property
    def fired(self) -> list[tuple[datetime | None, str]]:
        return [(r.scheduled_at, r.job) for r in self.requests]


async def started(scheduler: Scheduler, clock: VirtualClock) -> asyncio.Task[None]:
    task = scheduler.start()
    await clock.wait_for_sleepers()
    return task


# --- firing ------------------------------------------------------------------------------


async def test_each_instant_is_recorded_before_it_fires(store: Store) -> None:
    flow = flow_of(
        every(60, params={"region": "eu"}),  # applied by the executor, not here
        JobNode("nightly", schedule=Schedule("cron", "UTC", cron="*/2 * * * *")),
        JobNode("manual_only"),
    )
    clock = VirtualClock(T0)

    def recorded_first(request: FireRequest) -> None:
        assert store.last_fired("orders")[request.job] == request.scheduled_at

    fire = Recorder(recorded_first)
    async with Scheduler(flow, store, clock, fire):
        await clock.wait_for_sleepers()
        await clock.advance(4 * 60 + 30)

    assert fire.fired == [
        (at(1), "tick"),
        (at(2), "nightly"),
        (at(2), "tick"),
        (at(3), "tick"),
        (at(4), "nightly"),
        (at(4), "tick"),
    ]
    first = fire.requests[0]
    assert first.flow == "orders" and first.trigger is TriggerKind.SCHEDULE
    assert first.params == {} and first.lateness == 0.0  # the executor adds the job's


async def test_next_fires_shows_each_jobs_next_instant(store: Store) -> None:
    flow = flow_of(every(60), every(3600, name="hourly"))
    clock = VirtualClock(at(0, 30))
    async with Scheduler(flow, store, clock, Recorder()) as scheduler:
        await clock.wait_for_sleepers()
        assert scheduler.next_fires() == {"tick": at(1), "hourly": at(60)}
        await clock.advance(60)
        assert scheduler.next_fires() == {"tick": at(2), "hourly": at(60)}


# --- restarts and catch-up ---------------------------------------------------------------


async def _life(
    store_url: str, flow: FlowIR, start: datetime, end: datetime, *, kill: bool
) -> list[FireRequest]:
    """One life of an orchestrator: a scheduler from `start` to `end`, then killed
    (its task cancelled, nothing cleaned up) or closed."""
    store = Store.open(store_url)
    clock = VirtualClock(start)
    fire = Recorder()
    scheduler = Scheduler(flow, store, clock, fire)
    task = await started(scheduler, clock)
    await clock.advance_to(end)
    if kill:
        task.cancel()
        await asyncio.wait({task})
    else:
        await scheduler.aclose()
    store.close()
    return fire.requests


async def test_a_killed_scheduler_restarted_never_fires_an_instant_twice(store_url: str) -> None:
    flow = flow_of(every(60, catch_up="all"))
    first = await _life(store_url, flow, T0, at(3), kill=True)
    # restarted at the very instant it last fired, then again a little later
    second = await _life(store_url, flow, at(3), at(5), kill=True)
    third = await _life(store_url, flow, at(5, 20), at(7), kill=False)
    assert [r.scheduled_at for r in first] == [at(1), at(2), at(3)]
    assert [r.scheduled_at for r in second] == [at(4), at(5)]
    assert [r.scheduled_at for r in third] == [at(6), at(7)]


async def test_an_instant_recorded_before_a_crash_is_not_started_again(store: Store) -> None:
    # the process recorded 12:02 and died before the run started: at most once
    store.record_fire("orders", "tick", at(1))
    store.record_fire("orders", "tick", at(2))
    clock = VirtualClock(at(1, 30))
    fire = Recorder()
    async with Scheduler(flow_of(every(60, catch_up="all")), store, clock, fire):
        await clock.wait_for_sleepers()
        await clock.advance_to(at(3))
    assert fire.instants == [at(3)]


@pytest.mark.parametrize(
    ("policy", "caught_up"),
    [
        ("skip", []),
        ("latest", [at(7)]),
        ("all", [at(3), at(4), at(5), at(6), at(7)]),
    ],
)
async def test_instants_missed_while_down_follow_the_catch_up_policy(
    store_url: str, policy: str, caught_up: list[datetime]
) -> None:
    flow = flow_of(every(60, catch_up=policy))
    first = await _life(store_url, flow, T0, at(2, 10), kill=True)
    assert [r.scheduled_at for r in first] == [at(1), at(2)]
    # down from 12:02:10 to 12:07:30
    second = await _life(store_url, flow, at(7, 30), at(8), kill=False)
    assert [r.scheduled_at for r in second] == [*caught_up, at(8)]
    assert [r.lateness for r in second] == [
        *((at(7, 30) - t).total_seconds() for t in caught_up),
        0.0,
    ]
    with Store.open(store_url) as store:
        assert store.last_fired("orders") == {"tick": at(8)}


async def test_catch_up_fires_in_order_of_instant_across_jobs(store: Store) -> None:
    for job, instant in (("a", at(0)), ("b", at(0))):
        store.record_fire("orders", job, instant)
    flow = flow_of(every(60, "all", name="a"), every(90, "all", name="b"))
    clock = VirtualClock(at(3, 10))
    fire = Recorder()
    async with Scheduler(flow, store, clock, fire):
        await clock.wait_for_sleepers()
    assert fire.fired == [
        (at(1), "a"),
        (at(1, 30), "b"),
        (at(2), "a"),
        (at(3), "a"),
        (at(3), "b"),
    ]


async def test_a_job_that_never_fired_starts_with_its_next_instant(store: Store) -> None:
    clock = VirtualClock(at(5, 30))
    fire = Recorder()
    async with Scheduler(flow_of(every(60, catch_up="all")), store, clock, fire):
        await clock.wait_for_sleepers()
        await clock.advance_to(at(6))
    assert fire.instants == [at(6)]


async def test_two_schedulers_on_one_store_fire_each_instant_once(store: Store) -> None:
    flow = flow_of(every(60), every(120, name="other"))
    clock = VirtualClock(T0)
    left, right = Recorder(), Recorder()
    async with Scheduler(flow, store, clock, left), Scheduler(flow, store, clock, right):
        await clock.wait_for_sleepers(2)
        await clock.advance_to(at(4))
    fired = left.fired + right.fired
    assert sorted(fired, key=lambda pair: (pair[0] or T0, pair[1])) == [
        (at(1), "tick"),
        (at(2), "other"),
        (at(2), "tick"),
        (at(3), "tick"),
        (at(4), "other"),
        (at(4), "tick"),
    ]


# --- running late: a suspended machine, a stepped clock -------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("skip", []),
        ("latest", [at(10)]),
        ("all", [at(0, s) for s in range(20, 601, 10)]),
    ],
)
async def test_waking_past_the_grace_follows_the_catch_up_policy(
    store: Store, policy: str, expected: list[datetime]
) -> None:
    clock = VirtualClock(T0)
    fire = Recorder()
    async with Scheduler(flow_of(every(10, catch_up=policy)), store, clock, fire):
        await clock.wait_for_sleepers()
        await clock.advance(10)
        assert fire.instants == [at(0, 10)]
        await clock.jump_to(at(10, 5))  # suspended for almost ten minutes
        assert fire.instants[1:] == expected
        await clock.advance_to(at(10, 10))
    assert fire.instants[-1] == at(10, 10) and len(fire.instants) == len(expected) + 2


async def test_waking_late_within_the_grace_fires_every_instant(store: Store) -> None:
    clock = VirtualClock(T0)
    fire = Recorder()
    async with Scheduler(flow_of(every(10, catch_up="skip")), store, clock, fire):
        await clock.wait_for_sleepers()
        await clock.jump_to(at(0, 35))
    assert fire.instants == [at(0, 10), at(0, 20), at(0, 30)]
    assert [r.lateness for r in fire.requests] == [25.0, 15.0, 5.0]


# --- triggers ----------------------------------------------------------------------------


async def test_manual_and_flow_triggers_go_through_the_fire_callback(store: Store) -> None:
    flow = flow_of(every(60), JobNode("report"))
    clock = VirtualClock(T0)
    fire = Recorder()
    scheduler = Scheduler(flow, store, clock, fire)
    manual = await scheduler.trigger("tick", {"day": "tue"})
    chained = await scheduler.trigger("report", kind=TriggerKind.FLOW)
    assert fire.requests == [manual, chained]
    assert manual == FireRequest("orders", "tick", TriggerKind.MANUAL, None, {"day": "tue"}, None)
    assert chained.trigger is TriggerKind.FLOW and chained.params == {}
    assert store.last_fired("orders") == {}  # a trigger is not a schedule instant


async def test_a_trigger_for_an_unknown_job_says_which(store: Store) -> None:
    scheduler = Scheduler(flow_of(every(60, name="extract")), store, VirtualClock(T0), Recorder())
    with pytest.raises(ValueError, match=r"unknown job `extrct` .*did you mean `extract`\?"):
        await scheduler.trigger("extrct")
    with pytest.raises(ValueError, match="schedule fires come from the schedule"):
        await scheduler.trigger("extract", kind=TriggerKind.SCHEDULE)


async def test_a_failing_callback_fails_a_trigger_but_not_the_schedule(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    clock = VirtualClock(T0)
    seen: list[datetime | None] = []

    async def failing(request: FireRequest) -> None:
        seen.append(request.scheduled_at)
        raise RuntimeError("executor is full")

    async with Scheduler(flow_of(every(60)), store, clock, failing) as scheduler:
        await clock.wait_for_sleepers()
        with pytest.raises(RuntimeError, match="executor is full"):
            await scheduler.trigger("tick")
        with caplog.at_level(logging.ERROR, logger="tideflow.runtime.scheduler"):
            await clock.advance(120)
    assert seen == [None, at(1), at(2)]
    assert "the fire callback failed for job `tick`" in caplog.text


# --- the store failing ---------------------------------------------------------------------


class FlakyLedger:
    """A store whose record_fire fails `failures` times before working."""

    def __init__(self, store: Store, failures: int) -> None:
        self.store = store
        self.failures = failures

    def last_fired(self, flow: str) -> dict[str, datetime]:
        return self.store.last_fired(flow)

    def record_fire(self, flow: str, job: str, instant: datetime) -> bool:
        if self.failures:
            self.failures -= 1
            raise StoreError("(sqlite3.OperationalError) db is down")
        return self.store.record_fire(flow, job, instant)

    def record_fires(self, flow: str, fires: Sequence[tuple[str, datetime]]) -> list[bool]:
        if self.failures:
            self.failures -= 1
            raise StoreError("(sqlite3.OperationalError) db is down")
        return self.store.record_fires(flow, fires)


async def test_an_instant_the_store_cannot_record_is_retried_not_fired(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    clock = VirtualClock(T0)
    fire = Recorder()
    ledger = FlakyLedger(store, failures=2)
    with caplog.at_level(logging.WARNING, logger="tideflow.runtime.scheduler"):
        async with Scheduler(flow_of(every(60)), ledger, clock, fire, store_retry=1.0):
            await clock.wait_for_sleepers()
            await clock.advance_to(at(1, 1))
            assert fire.requests == []  # tried at 12:01:00 and 12:01:01
            await clock.advance(1)
    assert fire.instants == [at(1)]
    assert fire.requests[0].lateness == 2.0
    assert caplog.text.count("cannot record 1 due fire(s), not firing them") == 2


# --- heartbeat and stopping ------------------------------------------------------------------


async def test_on_tick_is_a_heartbeat_even_with_nothing_scheduled(store: Store) -> None:
    clock = VirtualClock(T0)
    ticks: list[datetime] = []
    flow = flow_of(JobNode("manual_only"))
    async with Scheduler(flow, store, clock, Recorder(), on_tick=ticks.append, max_sleep=30):
        await clock.wait_for_sleepers()
        await clock.advance(95)
    assert ticks == [at(0), at(0, 30), at(1), at(1, 30)]


async def test_on_tick_follows_each_wake(store: Store) -> None:
    clock = VirtualClock(T0)
    ticks: list[datetime] = []

    async def tick(now: datetime) -> None:
        ticks.append(now)

    flow = flow_of(every(45))
    async with Scheduler(flow, store, clock, Recorder(), on_tick=tick, max_sleep=30):
        await clock.wait_for_sleepers()
        await clock.advance(95)
    # the start, then each wake: for the heartbeat (30 s at most asleep) or an instant
    assert ticks == [at(0), at(0, 30), at(0, 45), at(1, 15), at(1, 30)]


async def test_closing_lets_a_fire_in_progress_finish(store: Store) -> None:
    clock = VirtualClock(T0)
    release = asyncio.Event()
    finished: list[datetime | None] = []

    async def slow(request: FireRequest) -> None:
        await release.wait()
        finished.append(request.scheduled_at)

    scheduler = Scheduler(flow_of(every(60)), store, clock, slow)
    task = await started(scheduler, clock)
    await clock.advance(60)  # the fire of 12:01 now waits for `release`
    closing = asyncio.create_task(scheduler.aclose())
    await asyncio.sleep(0)
    assert not closing.done()
    release.set()
    await closing
    assert finished == [at(1)] and task.done() and not task.cancelled()
    assert clock.sleepers == 0
    with pytest.raises(RuntimeError, match="closed"):
        await scheduler.trigger("tick")


async def test_closing_a_sleeping_scheduler_stops_it_at_once(store: Store) -> None:
    clock = VirtualClock(T0)
    scheduler = Scheduler(flow_of(every(3600)), store, clock, Recorder())
    task = await started(scheduler, clock)
    await scheduler.aclose()
    await scheduler.aclose()  # idempotent
    assert task.cancelled() and clock.sleepers == 0


async def test_run_returns_once_closed_and_stops_when_cancelled(store: Store) -> None:
    clock = VirtualClock(T0)
    fire = Recorder()
    scheduler = Scheduler(flow_of(every(60)), store, clock, fire)
    running = asyncio.create_task(scheduler.run())
    await clock.wait_for_sleepers()
    await clock.advance(60)
    await scheduler.aclose()
    await running  # returned, not cancelled
    assert fire.instants == [at(1)]

    other = Scheduler(flow_of(every(60)), store, clock, Recorder())
    running = asyncio.create_task(other.run())
    await clock.wait_for_sleepers()
    running.cancel()
    await asyncio.wait({running})
    assert running.cancelled()
    assert clock.sleepers == 0  # the scheduler's own task stopped as well


def test_a_job_with_an_unknown_catch_up_policy_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match='job "tick" has an unknown catch_up `sometimes`'):
        Scheduler(flow_of(every(60, catch_up="sometimes")), store, VirtualClock(T0), Recorder())


# --- clocks --------------------------------------------------------------------------------


async def test_the_virtual_clock_wakes_sleepers_in_order_at_their_instants() -> None:
    clock = VirtualClock(T0)
    woke: list[tuple[str, datetime]] = []

    async def sleeper(name: str, *instants: datetime) -> None:
        for instant in instants:
            await clock.sleep_until(instant)
            woke.append((name, clock.now()))

    tasks = [
        asyncio.create_task(sleeper("c", at(3))),
        asyncio.create_task(sleeper("a", at(1), at(2, 30), at(9))),
        asyncio.create_task(sleeper("b", at(2))),
        asyncio.create_task(sleeper("d", at(2))),
    ]
    await clock.wait_for_sleepers(4)
    await clock.advance_to(at(5))
    assert woke == [
        ("a", at(1)),
        ("b", at(2)),
        ("d", at(2)),
        ("a", at(2, 30)),  # slept again inside the advance: woken in order
        ("c", at(3)),
    ]
    assert clock.now() == at(5) and clock.next_wake() == at(9)
    await clock.jump_to(at(20))
    assert woke[-1] == ("a", at(20))  # woken late, at the time jumped to
    await asyncio.gather(*tasks)


async def test_the_virtual_clock_drops_a_cancelled_sleeper() -> None:
    clock = VirtualClock(T0)
    task = asyncio.create_task(clock.sleep_until(at(1)))
    await clock.wait_for_sleepers()
    task.cancel()
    await asyncio.wait({task})
    assert clock.sleepers == 0 and clock.next_wake() is None
    await clock.advance(120)
    assert clock.now() == at(2)


async def test_the_virtual_clock_refuses_to_go_back_or_naive_times() -> None:
    clock = VirtualClock(T0)
    with pytest.raises(ValueError, match="cannot move a clock back"):
        await clock.advance_to(T0 - timedelta(seconds=1))
    with pytest.raises(ValueError, match="timezone-aware"):
        await clock.sleep_until(datetime(2026, 6, 1, 13))


async def test_the_system_clock_never_wakes_before_the_instant() -> None:
    clock = SystemClock(max_timer=0.02)  # several timers for one sleep
    target = clock.now() + timedelta(seconds=0.15)
    await clock.sleep_until(target)
    assert clock.now() >= target
    past = clock.now() - timedelta(hours=1)
    await clock.sleep_until(past)  # returns at once
    assert clock.now().tzinfo is UTC


# --- a real process, killed -------------------------------------------------------------------

_PROCESS = textwrap.dedent(
    """
    import asyncio
    import sys

    from tideflow.compiler.ir import FlowInfo, FlowIR, JobNode, Schedule
    from tideflow.runtime.clock import SystemClock
    from tideflow.runtime.scheduler import Scheduler
    from tideflow.runtime.store import Store


    async def main(url: str) -> None:
        store = Store.open(url)
        flow = FlowIR(FlowInfo("proc", "proc.flow"))
        schedule = Schedule("every", "UTC", interval=1.0)
        flow.add(JobNode("tick", schedule=schedule, catch_up="all"))

        async def fire(request):
            run = store.create_flow_run(
                request.flow, request.job, request.trigger, scheduled_at=request.scheduled_at
            )
            store.create_job_runs(
                run, request.flow, [request.job], request.trigger,
                scheduled_at=request.scheduled_at,
            )

        await Scheduler(flow, store, SystemClock(), fire).run()


    asyncio.run(main(sys.argv[1]))
    """
)


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def _half_past_a_second() -> bool:
    # fires happen just after whole seconds: half-way between, a kill lands in a sleep
    return 0.45 < time.time() % 1 < 0.6


@pytest.fixture
def process_store(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    script = tmp_path / "scheduler_process.py"
    script.write_text(_PROCESS)
    yield f"sqlite:///{tmp_path / 'state.db'}", script


@pytest.mark.slow
@pytest.mark.integration
def test_a_process_killed_and_restarted_neither_skips_nor_doubles_an_instant(
    process_store: tuple[str, Path],
) -> None:
    url, script = process_store
    with Store.open(url) as store:  # migrated once, before either process

        def fired() -> list[datetime]:
            runs = store.job_runs(flow="proc", limit=None)
            return sorted(r.scheduled_at for r in runs if r.scheduled_at is not None)

        def life(until_fired: int) -> float:
            process = subprocess.Popen(
                [sys.executable, str(script), url],
                env=os.environ.copy(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                _wait_for(lambda: len(fired()) >= until_fired, what=f"{until_fired} fires")
                _wait_for(_half_past_a_second)
            finally:
                process.send_signal(signal.SIGKILL)
                _, stderr = process.communicate(timeout=30)
            assert process.returncode == -signal.SIGKILL, stderr.decode()
            return time.time()

        killed_at = life(until_fired=2)
        first = fired()
        # down across at least one instant
        _wait_for(lambda: time.time() > int(killed_at) + 1.1, what="an instant to pass")
        life(until_fired=len(first) + 3)
        instants = fired()
        assert store.last_fired("proc") == {"tick": instants[-1]}

    assert len(instants) == len(set(instants)), "an instant fired twice"
    steps = {b - a for a, b in itertools.pairwise(instants)}
    assert steps == {timedelta(seconds=1)}, "an instant was skipped"
    missed_while_down = datetime.fromtimestamp(int(killed_at) + 1, UTC)
    assert first[-1] < missed_while_down < instants[-1]
    assert missed_while_down in instants  # caught up (catch_up = all)
