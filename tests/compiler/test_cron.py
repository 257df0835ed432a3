"""Cron expressions: field-level validation, the evaluator's day rule and syntax, and
daylight-saving transitions.

The daylight-saving search is checked against a brute-force oracle that asks
zoneinfo about every time the expression fires on every day of the two years.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Collection
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tideflow.compiler.cron import (
    check_cron,
    dst_hits,
    either_day,
    instants_after,
    instants_until,
    parse_cron,
    transitions,
)


@pytest.mark.parametrize(
    ("expression", "bad", "message"),
    [
        ("61 * * * *", "61", "invalid minute field `61` in cron expression"),
        ("0 0 32 * *", "32", "invalid day-of-month field `32` in cron expression"),
        ("0 0 * 13 *", "13", "invalid month field `13` in cron expression"),
        ("0 0 * * 8", "8", "invalid day-of-week field `8` in cron expression"),
        ("0  0 * * mon-fry", "mon-fry", "invalid day-of-week field `mon-fry` in cron expression"),
        ("*/0 * * * *", "*/0", "invalid minute field `*/0` in cron expression"),
        ("0 0 * * * 60", "60", "invalid second field `60` in cron expression"),
        (
            "H 0 * * *",
            "H",
            "hashed (H) and random (R) values are not supported in the minute field",
        ),
        ("0 R * * *", "R", "hashed (H) and random (R) values are not supported in the hour field"),
    ],
)
def test_the_problem_points_at_the_bad_field(expression: str, bad: str, message: str) -> None:
    problem = check_cron(expression)
    assert problem is not None
    assert expression[problem.start : problem.end] == bad
    assert problem.message == message


@pytest.mark.parametrize(
    "expression",
    [
        "0 2 * * *",
        "*/15 9-17 * * mon-fri",
        "0 0 L * *",
        "0 0 * * 5#2",
        "0 0 1 jan *",
        "0 12 * * * 30",
        *("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"),
    ],
)
def test_valid_expressions(expression: str) -> None:
    assert check_cron(expression) is None


def test_seven_fields_are_refused_although_croniter_takes_a_year_field() -> None:
    problem = check_cron("0 0 * * * 0 2030")
    assert problem is not None
    assert problem.message == "cron expression has 7 fields, expected 5 or 6"


def test_an_alias_stands_alone() -> None:
    problem = check_cron("@daily 5")
    assert problem is not None
    assert (problem.message, problem.start, problem.end) == (
        "cron alias `@daily` stands alone",
        7,
        8,
    )


def test_transitions_of_a_zone() -> None:
    found = transitions("America/New_York", date(2026, 1, 1))
    assert [(t.start, t.end, t.gap) for t in found[:2]] == [
        (datetime(2026, 3, 8, 2, 0), datetime(2026, 3, 8, 3, 0), True),
        (datetime(2026, 11, 1, 1, 0), datetime(2026, 11, 1, 2, 0), False),
    ]
    assert len(found) == 4  # two years
    assert transitions("UTC", date(2026, 1, 1)) == ()
    assert transitions("Not/AZone", date(2026, 1, 1)) == ()


def test_half_hour_transitions() -> None:
    # Lord Howe Island moves its clocks by 30 minutes
    gap = next(t for t in transitions("Australia/Lord_Howe", date(2026, 1, 1)) if t.gap)
    assert gap.end - gap.start == timedelta(minutes=30)
    hit, _ = dst_hits("15 2 * * *", "Australia/Lord_Howe", date(2026, 1, 1))
    assert hit is not None and hit.fires_at == datetime(2026, 10, 4, 2, 15)
    miss, _ = dst_hits("45 2 * * *", "Australia/Lord_Howe", date(2026, 1, 1))
    assert miss is None


def test_nth_weekday_is_matched_like_croniter() -> None:
    # Lisbon's clocks go back on the last Sunday of October: the 5th in 2027
    _, overlap = dst_hits("0 1 * * sun#5", "Europe/Lisbon", date(2026, 11, 22))
    assert overlap is not None and overlap.fires_at == datetime(2027, 10, 31, 1, 0)
    gap, _ = dst_hits("0 1 * * sun#5", "Europe/Lisbon", date(2026, 11, 22))
    assert gap is None  # 2027-03-28 is the 4th Sunday, 2028-03-26 too


def test_last_day_of_month() -> None:
    # Santiago's gap: the first Sunday of September, never a month's last day
    gap, _ = dst_hits("30 0 L * *", "America/Santiago", date(2026, 1, 1))
    assert gap is None
    gap, _ = dst_hits("30 0 * * *", "America/Santiago", date(2026, 1, 1))
    assert gap is not None


# --- the oracle -----------------------------------------------------------------------------

ZONES = [
    "America/New_York",
    "Europe/Lisbon",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Africa/Casablanca",
    "Pacific/Chatham",
    "Asia/Tokyo",
]


def _classify(moment: datetime, tz: zoneinfo.ZoneInfo) -> str | None:
    aware = moment.replace(tzinfo=tz)
    if aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != moment:
        return "gap"
    if aware.replace(fold=0).utcoffset() != aware.replace(fold=1).utcoffset():
        return "overlap"
    return None


def _oracle(
    minutes: list[int], hours: list[int], weekdays: Collection[int] | None, zone: str, today: date
) -> dict[str, datetime]:
    tz = zoneinfo.ZoneInfo(zone)
    first: dict[str, datetime] = {}
    for offset in range(731):
        day = today + timedelta(days=offset)
        if weekdays is not None and (day.weekday() + 1) % 7 not in weekdays:
            continue
        for hour in sorted(hours):
            for minute in sorted(minutes):
                moment = datetime(day.year, day.month, day.day, hour, minute)
                kind = _classify(moment, tz)
                if kind is not None and kind not in first:
                    first[kind] = moment
    return first


@settings(max_examples=60, deadline=None)
@given(
    minutes=st.lists(st.sampled_from([0, 1, 15, 29, 30, 44, 45, 59]), min_size=1, max_size=3),
    hours=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    weekdays=st.none() | st.lists(st.integers(0, 6), min_size=1, max_size=3),
    zone=st.sampled_from(ZONES),
    today=st.dates(date(2024, 1, 1), date(2030, 12, 31)),
)
def test_dst_hits_match_a_brute_force_oracle(
    minutes: list[int],
    hours: list[int],
    weekdays: list[int] | None,
    zone: str,
    today: date,
) -> None:
    expression = " ".join(
        [
            ",".join(map(str, sorted(set(minutes)))),
            ",".join(map(str, sorted(set(hours)))),
            "*",
            "*",
            "*" if weekdays is None else ",".join(map(str, sorted(set(weekdays)))),
        ]
    )
    expected = _oracle(minutes, hours, None if weekdays is None else set(weekdays), zone, today)
    # the search starts at midnight UTC and the oracle at local midnight: leave out
    # the days at both ends where the two can disagree
    for moment in expected.values():
        assume(today + timedelta(days=1) < moment.date() < today + timedelta(days=729))
    gap, overlap = dst_hits(expression, zone, today)
    assert (gap.fires_at if gap else None) == expected.get("gap")
    assert (overlap.fires_at if overlap else None) == expected.get("overlap")


# --- the evaluator: crontab(5)'s day rule, L, W and nth weekdays ------------------------------


def _fires(expression: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    found = []
    for instant in instants_after(expression, zone, start):
        if instant > end:
            break
        found.append(instant)
    return found


MARCH = datetime(2026, 3, 1, tzinfo=UTC)
MID_APRIL = datetime(2026, 4, 15, tzinfo=UTC)


def test_a_day_field_that_begins_with_a_star_is_not_restricted() -> None:
    # `*/8` is not restricted: Mondays that are the 1st, 9th, 17th or 25th (issue 16)
    got = _fires("* * */8 * mon", "UTC", MARCH, MID_APRIL)
    assert len(got) == 1440
    assert {t.date() for t in got} == {date(2026, 3, 9)}
    assert _fires("*/25 */8 25 * */2", "UTC", MARCH, MID_APRIL) == []
    # both restricted: either one will do
    days = {t.day for t in _fires("0 0 13 * fri", "UTC", MARCH, datetime(2026, 4, 1, tzinfo=UTC))}
    assert days == {6, 13, 20, 27}
    # `?` is a star too
    assert parse_cron("0 0 ? * mon").either_day is False


def test_last_day_of_the_month_and_last_weekday() -> None:
    year = datetime(2026, 1, 1, tzinfo=UTC)
    end = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert [t.day for t in _fires("0 0 L * *", "UTC", year, end)][:3] == [31, 28, 31]
    assert [t.day for t in _fires("0 0 1,L * *", "UTC", year, end)][:4] == [31, 1, 28, 1]
    # `L5`: the last Friday of the month
    assert [t.date() for t in _fires("0 0 * * L5", "UTC", year, end)][:3] == [
        date(2026, 1, 30),
        date(2026, 2, 27),
        date(2026, 3, 27),
    ]
    # `fri#2`: the second Friday; with a restricted day of month, either will do
    assert [t.day for t in _fires("0 0 * * fri#2", "UTC", year, end)][:2] == [9, 13]
    assert [t.day for t in _fires("0 0 1 * 5#2", "UTC", year, end)][:4] == [9, 1, 13, 1]


def test_the_weekday_nearest_a_day_of_the_month() -> None:
    got = _fires("0 0 15W * *", "UTC", datetime(2026, 1, 1, tzinfo=UTC), MID_APRIL)
    # 2026-02-15 is a Sunday (the Monday after), 2026-03-15 a Sunday too
    assert [t.date() for t in got] == [
        date(2026, 1, 15),
        date(2026, 2, 16),
        date(2026, 3, 16),
        date(2026, 4, 15),
    ]
    # the 1st on a Saturday: the Monday after, not the Friday of the month before
    assert _fires("0 0 1W 8 *", "UTC", MARCH, datetime(2026, 12, 1, tzinfo=UTC))[0].day == 3


def test_an_expression_whose_day_fields_never_agree_never_fires() -> None:
    problem = check_cron("0 0 */31 * 5#5")  # the 1st is never a fifth Friday
    assert problem is not None
    assert problem.message.startswith("cron expression `0 0 */31 * 5#5` never fires")
    assert list(instants_after("0 0 */31 * 5#5", "UTC", MARCH)) == []


def test_instants_until_walks_back_over_the_same_instants() -> None:
    start = datetime(2026, 10, 24, 22, tzinfo=UTC)
    end = datetime(2026, 10, 25, 3, tzinfo=UTC)
    for expression in ("*/20 1 * * *", "30 1 * * *", "* 1 * * * */20"):
        forwards = _fires(expression, "Europe/Lisbon", start, end)
        backwards = []
        for instant in instants_until(expression, "Europe/Lisbon", end):
            if instant <= start:
                break
            backwards.append(instant)
        assert backwards[::-1] == forwards and forwards


def test_fixed_time_is_decided_by_the_minute_and_hour_fields() -> None:
    assert parse_cron("30 2 * * *").fixed_time
    assert parse_cron("0,30 1-3 * * *").fixed_time  # a list or range is still fixed
    assert parse_cron("@daily").fixed_time
    assert not parse_cron("@hourly").fixed_time
    assert not parse_cron("*/20 1 * * *").fixed_time
    assert not parse_cron("0 */2 * * *").fixed_time


# --- what the linter is told ------------------------------------------------------------------


def test_a_wildcard_job_is_dropped_in_a_gap_and_repeated_in_an_overlap() -> None:
    gap, overlap = dst_hits("*/20 1 * * *", "Europe/Lisbon", date(2026, 1, 1))
    assert gap is not None and not gap.moved and gap.fires_at == datetime(2026, 3, 29, 1, 0)
    assert overlap is None  # it runs in each pass: nothing moves, nothing is dropped
    gap, overlap = dst_hits("20 1 * * *", "Europe/Lisbon", date(2026, 1, 1))
    assert gap is not None and gap.moved
    assert overlap is not None and overlap.moved


def test_day_fields_in_words() -> None:
    assert either_day("0 0 13 * fri") == ("on day 13 of the month", "on every Friday")
    assert either_day("0 0 1-7 * 1") == ("on days 1-7 of the month", "on every Monday")
    assert either_day("0 0 L * sat-sun") == (
        "on the last day of the month",
        "on every Saturday to Sunday",
    )
    assert either_day("0 0 1,15 * 3#2") == (
        "on days 1,15 of the month",
        "on the second Wednesday of the month",
    )
    assert either_day("0 0 1 * L5")[1] == "on the last Friday of the month"  # type: ignore[index]
    assert either_day("0 0 */8 * mon") is None
    assert either_day("0 0 1 * *") is None
