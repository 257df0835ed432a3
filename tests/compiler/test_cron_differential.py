"""The cron evaluator against an independent one: cronsim, which follows Debian's cron.

Thousands of random expressions (lists, ranges, steps, names, `L`, `#`, both day
fields, seconds) are evaluated in zones with and without daylight saving, in both
hemispheres, on Lord Howe Island (a 30-minute shift) and on the Chatham Islands
(+12:45), from a point shortly before one of the zone's clock changes. Every
instant must be the same.

The reference is cronsim's reading of each expression (its parser, its day rule,
its choice of fixed-time jobs) with Debian's daylight-saving rule:

- a fixed-time job is iterated by cronsim itself, on the wall clock;
- a job with a wildcard minute or hour runs whenever the wall clock shows one of
  its times. cronsim iterates such jobs by stepping hours in UTC, which misses
  times when the clocks move by less than an hour (Lord Howe, Chatham) or at
  midnight (Santiago), and can answer a midnight that does not exist; so the
  reference walks the clock minute by minute instead, asking cronsim's fields and
  `match_day` whether the job runs (see `test_cronsim_steps_hours_in_utc`).

Documented exceptions, each with a test of its own below:
- a 6-field expression whose minute and hour are fixed is a fixed-time job in
  tideflow (the seconds field does not make a job a wildcard one), while cronsim
  applies Debian's rule to 5-field expressions only: such expressions are
  compared only in zones without clock changes;
- cronsim, started inside the second pass of a repeated hour, can answer the
  first pass of a fixed time later on the wall clock, an instant before its
  start: instants before the start are left out of its answer;
- a range of weekdays that ends at `sun` ends at 7 in tideflow, so `sat-sun` is
  the weekend, and a range may wrap (`fri-mon`); cronsim and Debian's cron
  refuse both, so neither is generated;
- syntax only one of the two has (`W`, `?`; croniter's `L5` is cronsim's `5L`)
  is not generated, or is translated.
"""

from __future__ import annotations

import itertools
import random
import zoneinfo
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import cronsim
import pytest
from tideflow.compiler.cron import check_cron, instants_after, parse_cron, transitions

ZONES_WITH_CHANGES = (
    "America/New_York",
    "Europe/Lisbon",
    "Europe/Berlin",
    "Australia/Sydney",  # southern hemisphere: forward in October, back in April
    "America/Santiago",  # southern, changes at midnight (24:00 -> 01:00)
    "Australia/Lord_Howe",  # 30-minute shift
    "Pacific/Chatham",  # +12:45 / +13:45
)
ZONES_WITHOUT_CHANGES = ("UTC", "Asia/Tokyo", "Asia/Kolkata")
EXPRESSIONS = 3000
INSTANTS = 60  # compared per expression
WINDOW = timedelta(days=3)

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def _term(rng: random.Random, low: int, high: int, name: Callable[[int], str]) -> str:
    kind = rng.choice(("value", "value", "range", "range-step", "start-step", "star-step"))
    a, b = sorted(rng.sample(range(low, high + 1), 2))
    step = rng.randint(2, max(2, (high - low) // 2))
    if kind == "value":
        return name(a)
    if kind == "range":
        return f"{name(a)}-{name(b)}"
    if kind == "range-step":
        return f"{a}-{b}/{step}"
    if kind == "start-step":
        return f"{a}/{step}"
    return f"*/{step}"


def _field(
    rng: random.Random, low: int, high: int, name: Callable[[int], str] = str, star: float = 0.35
) -> str:
    if rng.random() < star:
        return "*"
    return ",".join(_term(rng, low, high, name) for _ in range(rng.choice((1, 1, 1, 2, 3))))


def _day_of_week(rng: random.Random) -> tuple[str, str]:
    """The field as tideflow reads it, and as cronsim does."""
    roll = rng.random()
    day = rng.randint(0, 6)
    if roll < 0.08:
        which = rng.randint(1, 5)
        spelled = rng.choice((str(day), _DAY_NAMES[day]))
        return f"{spelled}#{which}", f"{spelled}#{which}"
    if roll < 0.14:
        return f"L{day}", f"{day}L"  # the last such weekday of the month
    # `sun` is 0 to cronsim and Debian, but ends a range at 7 in tideflow (`sat-sun`)
    field = _field(
        rng, 0, 7, lambda v: rng.choice((str(v), _DAY_NAMES[v]) if v < 7 else "7"), star=0.4
    )
    return field, field


def _day_of_month(rng: random.Random) -> str:
    if rng.random() < 0.07:
        return rng.choice(("L", f"{rng.randint(1, 28)},L"))
    return _field(rng, 1, 31, star=0.4)


def random_expression(rng: random.Random) -> tuple[str, str]:
    """An expression in tideflow's syntax, and the same one in cronsim's."""
    minute = _field(rng, 0, 59, star=0.15)
    hour = _field(rng, 0, 23, star=0.3)
    if rng.random() < 0.4:  # the hours where the clocks change, often
        hour = rng.choice(("1", "2", "0-3", "1,2", "*/2", "2-4/1", "0"))
    dom = _day_of_month(rng)
    month = _field(rng, 1, 12, lambda v: rng.choice((str(v), _MONTH_NAMES[v - 1])), star=0.6)
    dow, dow_cronsim = _day_of_week(rng)
    five = [minute, hour, dom, month, dow]
    ours = " ".join(five)
    theirs = " ".join([minute, hour, dom, month, dow_cronsim])
    if rng.random() < 0.15:
        second = _field(rng, 0, 59, star=0.3)
        return f"{ours} {second}", f"{second} {theirs}"
    return ours, theirs


def _start(rng: random.Random, zone: str) -> datetime:
    """An instant shortly before one of the zone's clock changes (or any day's)."""
    tz = zoneinfo.ZoneInfo(zone)
    changes = transitions(zone, date(2026, 1, 1))
    if changes:
        at = rng.choice(changes).start.replace(tzinfo=tz)
    else:
        at = datetime(2026, 1, 1, tzinfo=tz) + timedelta(days=rng.randint(0, 700))
    before = timedelta(minutes=rng.randint(0, 180) if rng.random() < 0.7 else rng.randint(0, 2880))
    return (at.astimezone(UTC) - before).replace(second=rng.choice((0, 0, 17)))


def ours(expression: str, zone: str, start: datetime) -> list[datetime]:
    until = start + WINDOW
    instants = itertools.takewhile(lambda t: t <= until, instants_after(expression, zone, start))
    return list(itertools.islice(instants, INSTANTS))


def theirs(expression: str, zone: str, start: datetime) -> list[datetime]:
    tz = zoneinfo.ZoneInfo(zone)
    until = start + WINDOW
    sim = cronsim.CronSim(expression, start.astimezone(tz))
    if sim.fixup_tz is None and transitions(zone, date(2026, 1, 1)):
        return wall_clock(sim, tz, start, until)
    found = (t.astimezone(UTC) for t in sim)
    after_start = (t for t in found if t > start)
    return list(itertools.islice(itertools.takewhile(lambda t: t <= until, after_start), INSTANTS))


def wall_clock(sim: Any, tz: zoneinfo.ZoneInfo, start: datetime, until: datetime) -> list[datetime]:
    """Every instant in (start, until] at which the local wall clock shows a time of
    `sim`: minute by minute, skipping hours and days that cannot match."""
    found: list[datetime] = []
    moment = start.replace(second=0, microsecond=0)
    while moment <= until and len(found) < INSTANTS:
        local = moment.astimezone(tz)
        if local.month not in sim.months or not sim.match_day(local.date()):
            skip = 24 * 60 - local.hour * 60 - local.minute
        elif local.hour not in sim.hours:
            skip = 60 - local.minute
        elif local.minute not in sim.minutes:
            skip = 1
        else:
            for second in sorted(sim.seconds):
                instant = moment + timedelta(seconds=second)
                if start < instant <= until:
                    found.append(instant)
            skip = 1
        ahead = moment + timedelta(minutes=skip)
        if skip > 1 and ahead.astimezone(tz).utcoffset() != local.utcoffset():
            ahead = moment + timedelta(minutes=1)  # the clocks change in between: step
        moment = ahead
    return found[:INSTANTS]


def test_thousands_of_random_expressions_fire_as_in_debians_cron() -> None:
    rng = random.Random(16)
    compared = 0
    fired = 0
    differences: list[str] = []
    while compared < EXPRESSIONS:
        expression, reference = random_expression(rng)
        if check_cron(expression) is not None:
            continue
        six_field_fixed = len(expression.split()) == 6 and parse_cron(expression).fixed_time
        zones = (
            ZONES_WITHOUT_CHANGES
            if six_field_fixed
            else ZONES_WITH_CHANGES * 3 + ZONES_WITHOUT_CHANGES
        )
        zone = rng.choice(zones)
        start = _start(rng, zone)
        try:
            expected = theirs(reference, zone, start)
        except cronsim.CronSimError:
            continue
        got = ours(expression, zone, start)
        compared += 1
        fired += len(got)
        if got != expected:
            first = next(
                (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                min(len(got), len(expected)),
            )
            differences.append(
                f"cron({expression!r}) in {zone} after {start.isoformat()}: at #{first} "
                f"tideflow {got[first : first + 2]} cronsim {expected[first : first + 2]}"
            )
    assert not differences, f"{len(differences)} of {compared} differ:\n" + "\n".join(
        differences[:10]
    )
    assert fired > EXPRESSIONS * 10  # the windows are not empty


# --- the documented exceptions ------------------------------------------------------------


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type, misc]


def test_a_six_field_job_at_a_fixed_time_is_moved_out_of_a_gap() -> None:
    # 02:30:15 does not exist in New York on 2026-03-08: tideflow runs it once right
    # after the gap, like the 5-field "30 2 * * *"; cronsim drops it for 6 fields
    start = _utc(2026, 3, 7, 12)
    assert ours("30 2 * * * 15", "America/New_York", start)[:2] == [
        _utc(2026, 3, 8, 7, 0, 0),
        _utc(2026, 3, 9, 6, 30, 15),
    ]
    assert theirs("15 30 2 * * *", "America/New_York", start)[:1] == [_utc(2026, 3, 9, 6, 30, 15)]
    assert ours("30 2 * * *", "America/New_York", start)[:1] == [_utc(2026, 3, 8, 7, 0)]


def test_cronsim_can_answer_before_its_start_in_a_repeated_hour() -> None:
    # started at 01:40 WET, the second pass of Lisbon's repeated hour, cronsim
    # answers 01:50 WEST, the first pass, twenty minutes before its start
    start = _utc(2026, 10, 25, 1, 40)
    raw = next(
        iter(cronsim.CronSim("50 1 * * *", start.astimezone(zoneinfo.ZoneInfo("Europe/Lisbon"))))
    )
    assert raw.astimezone(UTC) == _utc(2026, 10, 25, 0, 50)
    assert ours("50 1 * * *", "Europe/Lisbon", start)[:1] == [_utc(2026, 10, 26, 1, 50)]


def test_cronsim_steps_hours_in_utc() -> None:
    # Lord Howe goes back from +11 to +10:30 at 02:00 on 2026-04-05: 02:00 +10:30
    # (15:30 UTC) is a time of "*/10 2 * * *"; cronsim's hour step lands on 02:30
    start = _utc(2026, 4, 4, 14, 27)
    tz = zoneinfo.ZoneInfo("Australia/Lord_Howe")
    raw = next(iter(cronsim.CronSim("*/10 2 * * *", start.astimezone(tz))))
    assert raw.astimezone(UTC) == _utc(2026, 4, 4, 16, 0)
    assert ours("*/10 2 * * *", "Australia/Lord_Howe", start)[:2] == [
        _utc(2026, 4, 4, 15, 30),
        _utc(2026, 4, 4, 15, 40),
    ]
    assert theirs("*/10 2 * * *", "Australia/Lord_Howe", start)[:2] == [
        _utc(2026, 4, 4, 15, 30),
        _utc(2026, 4, 4, 15, 40),
    ]
    # Santiago skips from 24:00 to 01:00: there is no midnight on Sunday 2026-09-06,
    # and cronsim answers one (04:00 UTC, the instant of the change)
    start = _utc(2026, 9, 5, 12)
    tz = zoneinfo.ZoneInfo("America/Santiago")
    raw = next(iter(cronsim.CronSim("* */10 * * sun", start.astimezone(tz))))
    assert raw.astimezone(UTC) == _utc(2026, 9, 6, 4, 0)
    assert ours("* */10 * * sun", "America/Santiago", start)[:1] == [_utc(2026, 9, 6, 13, 0)]
    assert theirs("* */10 * * sun", "America/Santiago", start)[:1] == [_utc(2026, 9, 6, 13, 0)]


def test_weekday_ranges_may_end_at_sunday_as_7_and_may_wrap() -> None:
    for field, weekdays in (("sat-sun", {0, 6}), ("fri-mon", {0, 1, 5, 6}), ("5-7", {0, 5, 6})):
        assert parse_cron(f"0 0 * * {field}").weekdays == weekdays
    with pytest.raises(cronsim.CronSimError):
        cronsim.CronSim("0 0 * * SAT-SUN", datetime(2026, 1, 1))
