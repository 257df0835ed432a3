"""Schedules as pure functions: every(), cron fields and aliases, catch-up, upcoming."""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st
from tideflow.compiler import cron as compiler_cron
from tideflow.compiler.ir import FlowInfo, FlowIR, JobNode, Schedule
from tideflow.runtime.schedule import (
    ALIASES,
    MAX_CATCH_UP,
    due_on_start,
    fire_times,
    next_fire,
    upcoming,
)

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def every(seconds: float) -> Schedule:
    return Schedule("every", "UTC", interval=seconds)


def cron(expression: str, zone: str = "UTC") -> Schedule:
    return Schedule("cron", zone, cron=expression)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# --- every() --------------------------------------------------------------------------


def test_every_fires_on_multiples_of_the_interval_since_the_epoch() -> None:
    after = utc(2026, 6, 1, 12, 0, 7)
    got = list(fire_times(every(600), after, utc(2026, 6, 1, 12, 30)))
    assert got == [utc(2026, 6, 1, 12, 10), utc(2026, 6, 1, 12, 20), utc(2026, 6, 1, 12, 30)]
    # 7 h does not divide a day: the phase follows the epoch, not midnight
    seven_hours = list(fire_times(every(7 * 3600), utc(2026, 1, 2), utc(2026, 1, 3)))
    assert [t.hour for t in seven_hours] == [4, 11, 18]
    assert all(int(t.timestamp()) % (7 * 3600) == 0 for t in seven_hours)


def test_every_is_strictly_after_and_at_most_until() -> None:
    got = list(fire_times(every(10), T0, T0 + timedelta(seconds=30)))
    assert got == [T0 + timedelta(seconds=s) for s in (10, 20, 30)]
    assert list(fire_times(every(10), T0, T0 + timedelta(seconds=9))) == []


def test_every_with_a_fraction_of_a_second_is_exact() -> None:
    got = list(fire_times(every(0.25), T0, T0 + timedelta(seconds=1)))
    assert got == [T0 + timedelta(milliseconds=ms) for ms in (250, 500, 750, 1000)]
    assert next_fire(every(1.5), utc(1970, 1, 1, 0, 0, 2)) == utc(1970, 1, 1, 0, 0, 3)


def test_every_ignores_daylight_saving() -> None:
    # the instants are UTC multiples, whatever the job's zone says
    hourly = Schedule("every", "Europe/Lisbon", interval=3600)
    got = list(fire_times(hourly, utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 3, 0)))
    assert got == [utc(2026, 3, 29, h) for h in (1, 2, 3)]


def test_every_rejects_an_interval_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="positive interval"):
        next_fire(every(0), T0)


# --- cron ----------------------------------------------------------------------------


def test_five_field_cron_in_utc() -> None:
    got = list(fire_times(cron("15 */6 * * *"), utc(2026, 6, 1), utc(2026, 6, 2)))
    assert got == [utc(2026, 6, 1, h, 15) for h in (0, 6, 12, 18)]


def test_the_sixth_field_is_seconds() -> None:
    # croniter's convention, the one compiler/cron.py accepts: seconds come last
    got = list(fire_times(cron("0 12 * * * 30"), utc(2026, 6, 1), utc(2026, 6, 2)))
    assert got == [utc(2026, 6, 1, 12, 0, 30)]
    every_ten = list(fire_times(cron("* * * * * */10"), T0, T0 + timedelta(seconds=30)))
    assert every_ten == [T0 + timedelta(seconds=s) for s in (10, 20, 30)]


def test_cron_is_read_on_the_zones_wall_clock() -> None:
    got = next_fire(cron("0 9 * * 1-5", "Asia/Kolkata"), utc(2026, 6, 5, 12))  # a friday
    assert got == utc(2026, 6, 8, 3, 30)  # monday 09:00 IST (+05:30)


def test_cron_day_of_month_and_day_of_week_mean_either() -> None:
    got = list(fire_times(cron("0 0 13 * 5"), utc(2026, 2, 1), utc(2026, 3, 1)))
    days = [t.day for t in got]
    assert days == [6, 13, 20, 27]  # fridays, and the 13th (a friday too in 2026-02)
    got = list(fire_times(cron("0 0 1 * 1"), utc(2026, 5, 31), utc(2026, 6, 16)))
    assert [t.day for t in got] == [1, 8, 15]


@pytest.mark.parametrize(
    ("alias", "after", "expected"),
    [
        ("@hourly", utc(2026, 6, 1, 12, 5), utc(2026, 6, 1, 13)),
        ("@daily", utc(2026, 6, 1, 12), utc(2026, 6, 2)),
        ("@midnight", utc(2026, 6, 1, 12), utc(2026, 6, 2)),
        ("@weekly", utc(2026, 6, 1, 12), utc(2026, 6, 7)),  # sunday
        ("@monthly", utc(2026, 6, 1, 12), utc(2026, 7, 1)),
        ("@yearly", utc(2026, 6, 1, 12), utc(2027, 1, 1)),
        ("@annually", utc(2026, 6, 1, 12), utc(2027, 1, 1)),
    ],
)
def test_aliases(alias: str, after: datetime, expected: datetime) -> None:
    assert next_fire(cron(alias), after) == expected


def test_aliases_are_the_compilers() -> None:
    assert compiler_cron.ALIASES == ALIASES


def test_an_alias_is_evaluated_in_the_zone() -> None:
    assert next_fire(cron("@daily", "America/New_York"), utc(2026, 6, 1, 12)) == utc(2026, 6, 2, 4)


def test_a_schedule_with_an_unknown_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone `Mars/Olympus`"):
        next_fire(cron("* * * * *", "Mars/Olympus"), T0)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire(cron("* * * * *"), datetime(2026, 6, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        list(fire_times(every(1), T0, datetime(2026, 6, 2)))


def test_a_cron_given_in_another_offset_is_the_same_instant() -> None:
    lisbon_noon = datetime(2026, 6, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert next_fire(cron("0 * * * *"), lisbon_noon) == utc(2026, 6, 1, 13)


# --- catch-up -------------------------------------------------------------------------

LAST = utc(2026, 6, 1, 12, 0)
NOW = utc(2026, 6, 1, 12, 5, 30)  # the minutes 12:01 .. 12:05 were missed


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("skip", []),
        ("latest", [utc(2026, 6, 1, 12, 5)]),
        ("all", [utc(2026, 6, 1, 12, m) for m in range(1, 6)]),
    ],
)
def test_catch_up_policies(policy: str, expected: list[datetime]) -> None:
    assert due_on_start(cron("* * * * *"), LAST, NOW, policy) == expected
    assert due_on_start(every(60), LAST, NOW, policy) == expected


def test_catch_up_includes_an_instant_equal_to_now() -> None:
    now = utc(2026, 6, 1, 12, 2)
    assert due_on_start(every(60), LAST, now, "all") == [utc(2026, 6, 1, 12, 1), now]


def test_nothing_is_missed_by_a_schedule_that_never_fired() -> None:
    assert due_on_start(every(60), None, NOW, "all") == []


def test_nothing_is_missed_when_the_last_fire_is_not_in_the_past() -> None:
    assert due_on_start(every(60), NOW, NOW, "all") == []
    assert due_on_start(every(60), NOW + timedelta(hours=1), NOW, "latest") == []


def test_catch_up_all_is_capped_to_the_latest_instants(caplog: pytest.LogCaptureFixture) -> None:
    last = utc(2026, 6, 1)
    now = last + timedelta(seconds=5000)
    with caplog.at_level(logging.WARNING, logger="tideflow.runtime.schedule"):
        got = due_on_start(every(1), last, now, "all", job="tick")
    assert len(got) == MAX_CATCH_UP
    assert got[0] == now - timedelta(seconds=MAX_CATCH_UP - 1)
    assert got[-1] == now
    assert "job `tick` missed more than 1000 instants" in caplog.text
    # the same cap for cron schedules, walked backwards from now
    got = due_on_start(cron("* * * * * *"), last, now, "all")
    assert got[0] == now - timedelta(seconds=MAX_CATCH_UP - 1) and got[-1] == now


def test_exactly_the_cap_is_not_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    last = utc(2026, 6, 1)
    with caplog.at_level(logging.WARNING):
        got = due_on_start(every(1), last, last + timedelta(seconds=MAX_CATCH_UP), "all")
    assert len(got) == MAX_CATCH_UP and got[0] == last + timedelta(seconds=1)
    assert caplog.records == []


def test_an_unknown_catch_up_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown catch-up policy `some`"):
        due_on_start(every(1), LAST, NOW, "some")


# --- upcoming ---------------------------------------------------------------------------


def _flow() -> FlowIR:
    flow = FlowIR(FlowInfo("orders", "orders.flow", timezone="Europe/Lisbon"))
    flow.add(JobNode("extract", schedule=cron("0 2 * * *", "Europe/Lisbon")))
    flow.add(JobNode("poll", schedule=every(6 * 3600)))
    flow.add(JobNode("report", after=("extract",)))  # no schedule
    return flow


def test_upcoming_lists_every_instant_of_every_job_sorted() -> None:
    got = upcoming(_flow(), utc(2026, 7, 1), utc(2026, 7, 2, 1))
    assert got == [
        (utc(2026, 7, 1, 0), "poll"),  # the start of the window is in it
        (utc(2026, 7, 1, 1), "extract"),  # 02:00 WEST
        (utc(2026, 7, 1, 6), "poll"),
        (utc(2026, 7, 1, 12), "poll"),
        (utc(2026, 7, 1, 18), "poll"),
        (utc(2026, 7, 2, 0), "poll"),
        (utc(2026, 7, 2, 1), "extract"),  # the end too
    ]


def test_upcoming_for_chosen_jobs() -> None:
    got = upcoming(_flow(), utc(2026, 12, 1), utc(2026, 12, 31, 23, 59), jobs=["extract"])
    assert [t for t, _ in got] == [utc(2026, 12, d, 2) for d in range(1, 32)]  # WET = UTC
    assert upcoming(_flow(), utc(2026, 12, 1), utc(2026, 12, 2), jobs=["report"]) == []


def test_upcoming_refuses_an_unknown_job() -> None:
    with pytest.raises(ValueError, match='unknown job `extrct` in flow "orders"'):
        upcoming(_flow(), utc(2026, 12, 1), utc(2026, 12, 2), jobs=["extrct"])


# --- properties ------------------------------------------------------------------------

_ZONES = ("UTC", "Europe/Lisbon", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata")
_CRONS = ("*/7 * * * *", "30 1 * * *", "*/20 0-3 * * *", "0 2 * * 0", "15 2 1 * *", "@hourly")


@settings(max_examples=60, deadline=None)
@given(
    expression=st.sampled_from(_CRONS),
    zone=st.sampled_from(_ZONES),
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 20)),
    hours=st.integers(min_value=1, max_value=24 * 7),
)
def test_cron_instants_are_increasing_and_match_the_wall_clock_or_a_gap(
    expression: str, zone: str, start: datetime, hours: int
) -> None:
    schedule = cron(expression, zone)
    after = start.replace(tzinfo=UTC)
    until = after + timedelta(hours=hours)
    forwards = list(fire_times(schedule, after, until))
    assert all(a < b for a, b in itertools.pairwise(forwards))
    assert all(after < t <= until for t in forwards)
    tz = ZoneInfo(zone)
    text = ALIASES.get(expression, expression)
    for instant in forwards:
        wall = instant.astimezone(tz).replace(tzinfo=None)
        just_before = (instant - timedelta(seconds=1)).astimezone(tz).utcoffset()
        after_a_gap = just_before is not None and just_before < (instant.astimezone(tz).utcoffset())
        assert croniter.match(text, wall) or after_a_gap
    # catching up on the same window finds the same instants, walking backwards
    if len(forwards) <= MAX_CATCH_UP:
        assert due_on_start(schedule, after, until, "all") == forwards
