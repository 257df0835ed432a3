"""Daylight saving: the exact UTC instants around gaps and overlaps.

The policy (compiler/cron.py, Debian's cron): a fixed-time job (minute and hour
fields that do not begin with `*`) fires once, at the first instant after a
spring-forward gap, for a wall time in the gap, and once, at its first
occurrence, for a wall time a fall-back overlap repeats. A job whose minute or
hour is a wildcard follows the wall clock: nothing in a gap, a run in each pass
of an overlap.

2026 transitions used here:
- Europe/Lisbon: 03-29 01:00 WET -> 02:00 WEST (01:00 UTC);
  10-25 02:00 WEST -> 01:00 WET (01:00 UTC).
- America/New_York: 03-08 02:00 EST -> 03:00 EDT (07:00 UTC);
  11-01 02:00 EDT -> 01:00 EST (06:00 UTC).
- Australia/Lord_Howe (+10:30 / +11): 10-04 02:00 -> 02:30 (10-03 15:30 UTC);
  04-05 02:00 -> 01:30 (04-04 15:00 UTC).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from tideflow.compiler.ir import FlowInfo, FlowIR, JobNode, Schedule
from tideflow.runtime.clock import VirtualClock
from tideflow.runtime.schedule import fire_times, upcoming, wall_to_instant
from tideflow.runtime.scheduler import FireRequest, Scheduler
from tideflow.runtime.store import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def utc(month: int, day: int, hour: int, minute: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def fires(expression: str, zone: str, after: datetime, until: datetime) -> list[datetime]:
    return list(fire_times(Schedule("cron", zone, cron=expression), after, until))


# --- Europe/Lisbon --------------------------------------------------------------------


def test_lisbon_spring_forward_fires_right_after_the_gap() -> None:
    got = fires("30 1 * * *", "Europe/Lisbon", utc(3, 27, 12), utc(3, 31, 0))
    assert got == [
        utc(3, 28, 1, 30),  # 01:30 WET
        utc(3, 29, 1, 0),  # 01:30 does not exist: 02:00 WEST, right after the gap
        utc(3, 30, 0, 30),  # 01:30 WEST
    ]


def test_lisbon_fall_back_fires_once_at_the_first_occurrence() -> None:
    got = fires("30 1 * * *", "Europe/Lisbon", utc(10, 23, 12), utc(10, 27, 0))
    assert got == [
        utc(10, 24, 0, 30),  # 01:30 WEST
        utc(10, 25, 0, 30),  # 01:30 happens at 00:30 and 01:30 UTC: the first only
        utc(10, 26, 1, 30),  # 01:30 WET
    ]


def test_lisbon_fixed_wall_times_in_the_gap_collapse_into_one_firing() -> None:
    # 01:00 and 01:30 are in the gap, 02:00 is its end: all three are 01:00 UTC
    got = fires("0,30 0,1,2 * * *", "Europe/Lisbon", utc(3, 28, 23, 59), utc(3, 29, 3))
    assert got == [utc(3, 29, 0, 0), utc(3, 29, 0, 30), utc(3, 29, 1, 0), utc(3, 29, 1, 30)]


def test_lisbon_wildcard_wall_times_in_the_gap_do_not_fire() -> None:
    # 01:00 and 01:30 do not exist; 02:00 WEST is 01:00 UTC, as on any day
    got = fires("*/30 0-2 * * *", "Europe/Lisbon", utc(3, 28, 23, 59), utc(3, 29, 3))
    assert got == [utc(3, 29, 0, 0), utc(3, 29, 0, 30), utc(3, 29, 1, 0), utc(3, 29, 1, 30)]
    # the example: no run at all for the whole missing hour
    assert fires("* 1 * * *", "Europe/Lisbon", utc(3, 28, 12), utc(3, 29, 12)) == []


def test_lisbon_every_minute_through_the_overlap_fires_in_each_pass() -> None:
    got = fires("* 1 * * *", "Europe/Lisbon", utc(10, 24, 23), utc(10, 25, 3))
    # 01:00..01:59 WEST (00:00..00:59 UTC), and again at 01:00..01:59 WET
    assert got == [utc(10, 25, h, m) for h in (0, 1) for m in range(60)]


def test_lisbon_every_twenty_minutes_in_the_repeated_hour_fires_six_times() -> None:
    got = fires("*/20 1 * * *", "Europe/Lisbon", utc(10, 24, 23), utc(10, 25, 3))
    assert got == [utc(10, 25, h, m) for h in (0, 1) for m in (0, 20, 40)]


# --- America/New_York -------------------------------------------------------------------


def test_new_york_spring_forward() -> None:
    got = fires("30 2 * * *", "America/New_York", utc(3, 6, 12), utc(3, 10, 0))
    assert got == [
        utc(3, 7, 7, 30),  # 02:30 EST
        utc(3, 8, 7, 0),  # 02:30 does not exist: 03:00 EDT
        utc(3, 9, 6, 30),  # 02:30 EDT
    ]


def test_new_york_hourly_job_skips_the_missing_hour_instead_of_firing_twice() -> None:
    got = fires("14 * * * *", "America/New_York", utc(3, 8, 5), utc(3, 8, 9))
    # 00:14 EST, 01:14 EST, (02:14 does not exist), 03:14 EDT, 04:14 EDT
    assert got == [utc(3, 8, 5, 14), utc(3, 8, 6, 14), utc(3, 8, 7, 14), utc(3, 8, 8, 14)]


def test_new_york_fall_back() -> None:
    got = fires("30 1 * * *", "America/New_York", utc(10, 30, 12), utc(11, 3, 0))
    assert got == [
        utc(10, 31, 5, 30),  # 01:30 EDT
        utc(11, 1, 5, 30),  # 01:30 EDT, the first of the two
        utc(11, 2, 6, 30),  # 01:30 EST
    ]


# --- Australia/Lord_Howe: a 30-minute shift --------------------------------------------


def test_lord_howe_gap_of_thirty_minutes() -> None:
    got = fires("15 2 * * *", "Australia/Lord_Howe", utc(10, 2, 0), utc(10, 5, 0))
    assert got == [
        utc(10, 2, 15, 45),  # 02:15 +10:30
        utc(10, 3, 15, 30),  # 02:15 is in the gap: 02:30 +11, right after it
        utc(10, 4, 15, 15),  # 02:15 +11
    ]
    got = fires("*/15 1-2 * * *", "Australia/Lord_Howe", utc(10, 3, 12), utc(10, 3, 18))
    assert got == [
        utc(10, 3, 14, 30),  # 01:00 +10:30
        utc(10, 3, 14, 45),
        utc(10, 3, 15, 0),
        utc(10, 3, 15, 15),  # 01:45 +10:30
        utc(10, 3, 15, 30),  # 02:00 and 02:15 (in the gap) and 02:30 +11: one firing
        utc(10, 3, 15, 45),  # 02:45 +11
    ]


def test_lord_howe_overlap_of_thirty_minutes() -> None:
    got = fires("15 2 * * *", "Australia/Lord_Howe", utc(4, 3, 0), utc(4, 6, 0))
    assert got == [
        utc(4, 3, 15, 15),  # 02:15 +11
        utc(4, 4, 15, 45),  # 02:15 comes after the overlap (01:30-02:00): +10:30
        utc(4, 5, 15, 45),
    ]
    got = fires("0,15,30,45 1,2 * * *", "Australia/Lord_Howe", utc(4, 4, 12), utc(4, 4, 18))
    assert got == [
        utc(4, 4, 14, 0),  # 01:00 +11
        utc(4, 4, 14, 15),
        utc(4, 4, 14, 30),  # 01:30 +11: the first of the two
        utc(4, 4, 14, 45),  # 01:45 +11, not again at 15:15 UTC
        utc(4, 4, 15, 30),  # 02:00 +10:30
        utc(4, 4, 15, 45),
        utc(4, 4, 16, 0),
        utc(4, 4, 16, 15),
    ]
    # a wildcard job fires in both passes of 01:30..01:59
    got = fires("*/15 1-2 * * *", "Australia/Lord_Howe", utc(4, 4, 12), utc(4, 4, 18))
    assert got == [
        utc(4, 4, 14, 0),  # 01:00 +11
        utc(4, 4, 14, 15),
        utc(4, 4, 14, 30),  # 01:30 +11
        utc(4, 4, 14, 45),  # 01:45 +11
        utc(4, 4, 15, 0),  # 01:30 +10:30
        utc(4, 4, 15, 15),  # 01:45 +10:30
        utc(4, 4, 15, 30),  # 02:00 +10:30
        utc(4, 4, 15, 45),
        utc(4, 4, 16, 0),
        utc(4, 4, 16, 15),
    ]


@pytest.mark.parametrize(
    ("zone", "wall", "expected"),
    [
        ("Europe/Lisbon", datetime(2026, 3, 29, 1, 0), utc(3, 29, 1, 0)),  # gap start
        ("Europe/Lisbon", datetime(2026, 3, 29, 1, 59, 59), utc(3, 29, 1, 0)),
        ("Europe/Lisbon", datetime(2026, 10, 25, 1, 0), utc(10, 25, 0, 0)),
        ("Australia/Lord_Howe", datetime(2026, 10, 4, 2, 29), utc(10, 3, 15, 30)),
        ("Australia/Lord_Howe", datetime(2026, 10, 4, 1, 59), utc(10, 3, 15, 29)),
        ("America/New_York", datetime(2026, 11, 1, 1, 59), utc(11, 1, 5, 59)),
        ("America/New_York", datetime(2026, 11, 1, 2, 0), utc(11, 1, 7, 0)),
    ],
)
def test_wall_to_instant(zone: str, wall: datetime, expected: datetime) -> None:
    assert wall_to_instant(wall, ZoneInfo(zone)) == expected


def test_upcoming_until_the_end_of_the_year_is_dst_correct() -> None:
    flow = FlowIR(FlowInfo("nightly", "nightly.flow"))
    flow.add(JobNode("lisbon", schedule=Schedule("cron", "Europe/Lisbon", cron="30 1 * * *")))
    flow.add(JobNode("york", schedule=Schedule("cron", "America/New_York", cron="30 2 * * *")))
    listed = upcoming(flow, utc(1, 1, 0), utc(12, 31, 23, 59))
    lisbon = [t for t, job in listed if job == "lisbon"]
    york = [t for t, job in listed if job == "york"]
    assert len(lisbon) == len(york) == 365  # one a day: the gap day fires too, once
    assert utc(3, 29, 1, 0) in lisbon and utc(10, 25, 0, 30) in lisbon
    assert utc(10, 25, 1, 30) not in lisbon
    assert utc(3, 8, 7, 0) in york
    assert listed == sorted(listed)


# --- the scheduler across the transitions, on a virtual clock -----------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        yield store


async def _run_scheduler(
    store: Store, zone: str, expression: str, start: datetime, end: datetime
) -> list[datetime]:
    flow = FlowIR(FlowInfo("dst", "dst.flow"))
    flow.add(JobNode("nightly", schedule=Schedule("cron", zone, cron=expression)))
    clock = VirtualClock(start)
    fired: list[datetime] = []

    async def fire(request: FireRequest) -> None:
        assert request.scheduled_at is not None
        assert clock.now() == request.scheduled_at  # woken exactly on the instant
        fired.append(request.scheduled_at)

    async with Scheduler(flow, store, clock, fire, max_sleep=None):
        await clock.wait_for_sleepers()
        await clock.advance_to(end)
    return fired


@pytest.mark.parametrize(
    ("zone", "expression", "start", "end", "expected"),
    [
        (
            "Europe/Lisbon",
            "30 1 * * *",
            utc(3, 28, 0),
            utc(3, 30, 12),
            [utc(3, 28, 1, 30), utc(3, 29, 1, 0), utc(3, 30, 0, 30)],
        ),
        (
            "Europe/Lisbon",
            "30 1 * * *",
            utc(10, 24, 0),
            utc(10, 26, 12),
            [utc(10, 24, 0, 30), utc(10, 25, 0, 30), utc(10, 26, 1, 30)],
        ),
        (
            "America/New_York",
            "30 2 * * *",
            utc(3, 7, 0),
            utc(3, 9, 12),
            [utc(3, 7, 7, 30), utc(3, 8, 7, 0), utc(3, 9, 6, 30)],
        ),
        (
            "America/New_York",
            "30 1 * * *",
            utc(10, 31, 0),
            utc(11, 2, 12),
            [utc(10, 31, 5, 30), utc(11, 1, 5, 30), utc(11, 2, 6, 30)],
        ),
        (
            "Australia/Lord_Howe",
            "*/15 1-2 * * *",
            utc(10, 3, 14, 40),
            utc(10, 3, 16),
            [
                utc(10, 3, 14, 45),
                utc(10, 3, 15, 0),
                utc(10, 3, 15, 15),
                utc(10, 3, 15, 30),
                utc(10, 3, 15, 45),
            ],
        ),
        (
            "Australia/Lord_Howe",
            "*/15 1-2 * * *",
            utc(4, 4, 14, 20),
            utc(4, 4, 15, 50),
            [
                utc(4, 4, 14, 30),
                utc(4, 4, 14, 45),
                utc(4, 4, 15, 0),  # 01:30 and 01:45 again, in the second pass
                utc(4, 4, 15, 15),
                utc(4, 4, 15, 30),
                utc(4, 4, 15, 45),
            ],
        ),
        (
            "Europe/Lisbon",
            "*/20 1 * * *",
            utc(10, 24, 23),
            utc(10, 25, 3),
            [utc(10, 25, h, m) for h in (0, 1) for m in (0, 20, 40)],
        ),
        (
            "America/New_York",
            "14 * * * *",  # issue 16: not 03:00 and 03:14 EDT, fourteen minutes apart
            utc(3, 8, 5, 20),
            utc(3, 8, 8, 20),
            [utc(3, 8, 6, 14), utc(3, 8, 7, 14), utc(3, 8, 8, 14)],
        ),
    ],
)
async def test_the_scheduler_fires_exactly_these_instants(
    sqlite_store: Store,
    zone: str,
    expression: str,
    start: datetime,
    end: datetime,
    expected: list[datetime],
) -> None:
    assert await _run_scheduler(sqlite_store, zone, expression, start, end) == expected
    assert sqlite_store.last_fired("dst") == {"nightly": expected[-1]}


async def test_a_restart_inside_the_overlap_does_not_fire_the_repeated_time_again(
    sqlite_store: Store,
) -> None:
    # fired at 01:30 WEST (00:30 UTC); restarted at 01:40 WET, after the wall clock
    # has shown 01:30 a second time: nothing is missed, nothing fires twice
    first = await _run_scheduler(
        sqlite_store, "Europe/Lisbon", "30 1 * * *", utc(10, 25, 0), utc(10, 25, 0, 45)
    )
    assert first == [utc(10, 25, 0, 30)]
    again = await _run_scheduler(
        sqlite_store, "Europe/Lisbon", "30 1 * * *", utc(10, 25, 1, 40), utc(10, 26, 12)
    )
    assert again == [utc(10, 26, 1, 30)]
