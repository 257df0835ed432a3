"""The autoscaler's live loop on a virtual clock: a real store on SQLite, a scaler that
keeps its count in memory (a complete implementation of the `Scaler` interface) and a
backlog the test sets."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tideflow.compiler.ir import ConsumerNode, ScaleRule
from tideflow.plugins.api import BackendError, BacklogFailure, BacklogReading, Scaler
from tideflow.runtime.autoscaler import Autoscaler, rule_as_dict
from tideflow.runtime.clock import VirtualClock
from tideflow.runtime.model import ScaleDecisionRow
from tideflow.runtime.store import Store

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
FLOW = "orders"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class MemoryScaler(Scaler):
    """Runs instances nowhere: it keeps the count it is told, and can be made to fail."""

    name = "memory"

    def __init__(self, consumer: ConsumerNode, count: int = 0) -> None:
        super().__init__({}, consumer)
        self.count = count
        self.told: list[int] = []
        self.failing: str | None = None
        self.blind = False  # current() fails

    async def current(self) -> int:
        if self.blind:
            raise BackendError("cannot list the instances")
        return self.count

    async def scale(self, instances: int) -> None:
        if instances < 0:
            raise ValueError(f"cannot run {instances} instances")
        if self.failing is not None:
            raise BackendError(self.failing)
        self.told.append(instances)
        self.count = instances

    async def aclose(self) -> None:
        pass


class Backlog:
    """The backlog the test sets, read as a broker's `read_backlog` would answer."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.total = 0
        self.partitions = 1
        self.age = 0.0  # seconds: how old the reading is when it is taken
        self.error: Exception | None = None
        self.hang = False
        self.reads = 0

    async def __call__(self) -> BacklogReading | BacklogFailure:
        self.reads += 1
        if self.hang:
            await asyncio.Event().wait()  # a broker that never answers
        if self.error is not None:
            raise self.error
        share, extra = divmod(self.total, self.partitions)
        spread = {p: share + (p < extra) for p in range(self.partitions)}
        return BacklogReading(
            "orders",
            "workers",
            self.total,
            {p: n for p, n in spread.items() if n},
            self.partitions,
            self.clock.now() - timedelta(seconds=self.age),
        )


def scale_rule(**settings: Any) -> ScaleRule:
    values: dict[str, Any] = {
        "max": 10,
        "lag_per_instance": 100,
        "poll": 5.0,
        "cooldown": 30.0,
        "scale_down_window": 30.0,
    }
    values.update(settings)
    return ScaleRule(**values)


def consumer_with(rule: ScaleRule) -> ConsumerNode:
    return ConsumerNode("order_workers", "orders", "workers", "shop.workers:handle", scale=rule)


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Yield to the event loop until `condition()` holds (real time, as a bound only)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true")
        await asyncio.sleep(0.001)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as opened:
        yield opened


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


class Rig:
    """An autoscaler with its scaler, backlog, store and clock, as one test uses them."""

    def __init__(
        self, rule: ScaleRule, store: Store | None, clock: VirtualClock, **options: Any
    ) -> None:
        self.rule = rule
        self.clock = clock
        self.store = store
        self.consumer = consumer_with(rule)
        self.scaler = MemoryScaler(self.consumer, options.pop("count", 0))
        self.backlog = Backlog(clock)
        self.seen: list[ScaleDecisionRow] = []
        self.autoscaler = Autoscaler(
            FLOW,
            self.consumer,
            rule,
            self.backlog,
            self.scaler,
            store,
            clock,
            options.pop("on_decision", self.seen.append),
            **options,
        )

    def stored(self) -> list[ScaleDecisionRow]:
        assert self.store is not None
        return self.store.decisions(flow=FLOW, consumer="order_workers", limit=None)

    async def at(self, seconds: float) -> None:
        """Move the clock to T0 + `seconds`, letting every poll on the way happen."""
        await self.clock.advance_to(T0 + timedelta(seconds=seconds))


@pytest.fixture
async def make_rig(store: Store, clock: VirtualClock) -> AsyncIterator[Callable[..., Any]]:
    rigs: list[Rig] = []

    async def make(
        rule: ScaleRule | None = None, *, with_store: bool = True, **options: Any
    ) -> Rig:
        rig = Rig(rule or scale_rule(), store if with_store else None, clock, **options)
        rigs.append(rig)
        rig.autoscaler.start()
        await clock.wait_for_sleepers()
        return rig

    yield make
    for rig in rigs:
        await rig.autoscaler.aclose()


# --- the cycle ------------------------------------------------------------------------------


async def test_each_poll_reads_decides_scales_and_records(make_rig: Any) -> None:
    rig: Rig = await make_rig()
    first = rig.stored()
    assert [(d.backlog, d.current, d.desired, d.reason) for d in first] == [(0, 0, 0, "steady")]

    rig.backlog.total = 350
    await rig.at(5)
    assert rig.scaler.told == [4]
    newest = rig.stored()[0]
    assert newest.taken_at == T0 + timedelta(seconds=5)
    assert (newest.backlog, newest.per_partition, newest.partitions) == (350, {0: 350}, 1)
    assert (newest.current, newest.desired, newest.applied) == (0, 4, True)
    assert newest.reason == "activate"
    assert newest.explanation == "backlog 350 / 100 per instance = 4 -> 4"
    assert newest.reading_error is None
    assert newest.rule == rule_as_dict(rig.rule)
    assert newest.rule["lag_per_instance"] == 100 and "options" not in newest.rule
    assert [row.id for row in rig.seen] == [row.id for row in reversed(rig.stored())]


async def test_the_count_follows_the_backlog_down_after_window_and_cooldown(
    make_rig: Any,
) -> None:
    rig: Rig = await make_rig(scale_rule(min=1), count=1)
    rig.backlog.total = 800
    await rig.at(5)
    assert rig.scaler.count == 8
    rig.backlog.total = 150
    await rig.at(30)  # the 8 recommended at 5s is in the 30s window until 35s
    assert rig.scaler.count == 8
    await rig.at(35)
    assert rig.scaler.count == 2
    reasons = [d.reason for d in reversed(rig.stored())]
    assert reasons == ["steady", "scale_up", *["hold_window"] * 5, "scale_down"]


async def test_polls_keep_a_fixed_cadence(make_rig: Any) -> None:
    rig: Rig = await make_rig(scale_rule(poll=2.0))
    await rig.at(11)
    times = [(d.taken_at - T0).total_seconds() for d in reversed(rig.stored())]
    assert times == [0, 2, 4, 6, 8, 10]


# --- nudges ---------------------------------------------------------------------------------


async def test_a_nudge_decides_at_once_and_keeps_the_schedule(make_rig: Any) -> None:
    rig: Rig = await make_rig(scale_rule(poll=60.0))
    await rig.at(10)
    rig.backlog.total = 1_000
    rig.autoscaler.nudge()
    await until(lambda: rig.scaler.count == 10)
    assert rig.clock.now() == T0 + timedelta(seconds=10)  # no time had to pass
    assert [(d.taken_at - T0).total_seconds() for d in rig.seen] == [0, 10]
    await rig.clock.wait_for_sleepers()
    assert rig.clock.next_wake() == T0 + timedelta(seconds=60)  # the next poll as planned


async def test_several_nudges_while_asleep_make_one_cycle(
    make_rig: Any, clock: VirtualClock
) -> None:
    rig: Rig = await make_rig(scale_rule(poll=60.0))
    reads = rig.backlog.reads
    for _ in range(3):
        rig.autoscaler.nudge()
    await until(lambda: rig.backlog.reads == reads + 1)
    await clock.wait_for_sleepers()
    assert rig.backlog.reads == reads + 1


async def test_a_nudge_during_a_cycle_causes_one_more(store: Store, clock: VirtualClock) -> None:
    rigs: list[Rig] = []

    def nudge_once(row: ScaleDecisionRow) -> None:
        seen.append(row)
        if len(seen) == 1:
            rigs[0].autoscaler.nudge()  # a burst published while the first cycle runs

    seen: list[ScaleDecisionRow] = []
    rigs.append(Rig(scale_rule(poll=60.0), store, clock, on_decision=nudge_once))
    async with rigs[0].autoscaler:
        await clock.wait_for_sleepers()
        assert [row.taken_at for row in seen] == [T0, T0]
        assert clock.next_wake() == T0 + timedelta(seconds=60)


# --- failures ------------------------------------------------------------------------------


async def test_a_broker_that_does_not_answer_holds_the_count(make_rig: Any) -> None:
    rig: Rig = await make_rig(scale_rule(), count=3, read_timeout=0.01)
    rig.backlog.hang = True
    await rig.clock.advance(5)  # the wake-up starts the read; it times out in real time
    await until(lambda: len(rig.seen) == 2)
    failed = rig.seen[-1]
    assert failed.reading_error == "no answer within 0.01s"
    assert (failed.backlog, failed.current, failed.desired) == (None, 3, 3)
    assert failed.reason == "hold_failed_reading"
    assert rig.scaler.told == []


async def test_a_failed_read_uses_the_fallback(make_rig: Any) -> None:
    rig: Rig = await make_rig(scale_rule(fallback=6), count=2)
    rig.backlog.error = BackendError("broker gone")
    await rig.at(5)
    newest = rig.stored()[0]
    assert newest.reading_error == "BackendError: broker gone"
    assert (newest.desired, newest.reason, newest.applied) == (6, "fallback", True)
    assert rig.scaler.count == 6


async def test_a_stale_reading_is_recorded_but_not_trusted(make_rig: Any) -> None:
    rig: Rig = await make_rig(scale_rule(), count=4)
    assert rig.autoscaler.stale_after == 15.0  # three polls
    rig.backlog.age = 60.0
    await rig.at(5)
    newest = rig.stored()[0]
    assert newest.backlog == 0
    assert newest.reading_error == "reading taken 1m ago, older than 15s"
    assert (newest.desired, newest.reason) == (4, "hold_failed_reading")


async def test_a_failed_scale_is_recorded_and_retried(make_rig: Any) -> None:
    rig: Rig = await make_rig()
    rig.scaler.failing = "the api server said no"
    rig.backlog.total = 500
    await rig.at(5)
    newest = rig.stored()[0]
    assert (newest.current, newest.desired, newest.applied) == (0, 5, False)
    rig.scaler.failing = None
    await rig.at(10)
    assert rig.scaler.told == [5]
    assert rig.stored()[0].applied


async def test_a_scaler_that_cannot_count_uses_the_last_count(
    make_rig: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rig: Rig = await make_rig(count=2)
    rig.scaler.blind = True
    rig.backlog.total = 700
    with caplog.at_level(logging.WARNING, logger="tideflow.autoscaler"):
        await rig.at(5)
    newest = rig.stored()[0]
    assert (newest.current, newest.desired) == (2, 7)  # 2: what it said at 0s
    assert "cannot say how many instances run" in caplog.text


async def test_a_scaler_that_never_counted_skips_the_cycle(
    store: Store, clock: VirtualClock
) -> None:
    rig = Rig(scale_rule(), store, clock)
    rig.scaler.blind = True
    assert await rig.autoscaler.poll_once() is None
    assert rig.stored() == [] and rig.scaler.told == []


async def test_a_store_that_fails_does_not_stop_the_loop(
    make_rig: Any, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    rig: Rig = await make_rig()
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE scale_decisions"))
    rig.backlog.total = 200
    with caplog.at_level(logging.WARNING, logger="tideflow.autoscaler"):
        await rig.at(5)
    assert rig.scaler.count == 2
    assert rig.seen[-1].id is None and rig.seen[-1].desired == 2
    assert "the decision was not stored" in caplog.text


async def test_a_failing_callback_does_not_stop_the_loop(
    make_rig: Any, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    async def broken(row: ScaleDecisionRow) -> None:
        calls.append(row.desired)
        raise RuntimeError("listener bug")

    rig: Rig = await make_rig(on_decision=broken)
    rig.backlog.total = 300
    with caplog.at_level(logging.ERROR, logger="tideflow.autoscaler"):
        await rig.at(10)
    assert calls == [0, 3, 3]
    assert "the decision callback failed" in caplog.text


# --- partitions, lifecycle ------------------------------------------------------------------


@pytest.mark.parametrize(("partitioned", "desired"), [(True, 3), (False, 10)])
async def test_a_partitioned_broker_caps_at_the_partitions_read(
    make_rig: Any, partitioned: bool, desired: int
) -> None:
    rig: Rig = await make_rig(partitioned=partitioned)
    rig.backlog.total, rig.backlog.partitions = 5_000, 3
    await rig.at(5)
    newest = rig.stored()[0]
    assert newest.desired == desired
    assert newest.per_partition == {0: 1_667, 1: 1_667, 2: 1_666}
    assert ("capped by 3 partitions" in newest.explanation) is partitioned


async def test_without_a_store_decisions_still_reach_the_callback(make_rig: Any) -> None:
    rig: Rig = await make_rig(with_store=False)
    rig.backlog.total = 100
    await rig.at(5)
    assert [row.desired for row in rig.seen] == [0, 1]
    assert rig.autoscaler.last_decision == rig.seen[-1]


async def test_closing_stops_the_loop(store: Store, clock: VirtualClock) -> None:
    rig = Rig(scale_rule(), store, clock)
    async with rig.autoscaler:
        await clock.wait_for_sleepers()
        with pytest.raises(RuntimeError, match="started already"):
            rig.autoscaler.start()
    assert clock.sleepers == 0
    await rig.autoscaler.aclose()  # idempotent
    reads = rig.backlog.reads
    await clock.advance(60)
    assert rig.backlog.reads == reads


async def test_run_returns_when_closed(store: Store, clock: VirtualClock) -> None:
    rig = Rig(scale_rule(), store, clock)
    running = asyncio.create_task(rig.autoscaler.run())
    await clock.wait_for_sleepers()
    await rig.autoscaler.aclose()
    await running
    assert len(rig.seen) == 1


async def test_an_orchestrator_that_may_not_act_scales_nothing(make_rig: Any) -> None:
    """A deposed leader (`may_act` False) neither scales nor records a decision; once it
    may act again (it leads again), the next poll does both."""
    leading = [True]
    rig: Rig = await make_rig(may_act=lambda: leading[0])
    assert len(rig.stored()) == 1
    leading[0] = False
    rig.backlog.total = 350
    await rig.at(10)
    assert rig.scaler.told == [] and len(rig.stored()) == 1
    leading[0] = True
    await rig.at(15)
    assert rig.scaler.told == [4] and len(rig.stored()) == 2
