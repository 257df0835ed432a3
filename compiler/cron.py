"""Cron expressions: validation that points at the bad field, and daylight-saving checks.

Expressions have 5 fields (minute hour day-of-month month day-of-week) or 6,
the sixth being **seconds, last**: croniter's convention, which the runtime
uses to fire schedules, so the compiler and the runtime read an expression the
same way. The aliases `@hourly @daily @midnight @weekly @monthly @yearly
@annually` stand for their usual 5-field expressions. Hashed (`H`) and random
(`R`) fields, which croniter would resolve differently on each machine, are
refused.

The daylight-saving checks find, once per time zone, the zone's transitions in
the next two years, and then test each expression only against the local
hours those transitions skip or repeat: no schedule is iterated over two years.
"""

from __future__ import annotations

import calendar
import difflib
import re
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache

from croniter import croniter
from croniter.croniter import CroniterError

__all__ = [
    "ALIASES",
    "CronProblem",
    "DstHit",
    "Transition",
    "check_cron",
    "dst_hits",
    "transitions",
    "zone",
]

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, or L for the last day"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-6 (sunday is 0 or 7) or sun-sat"),
    ("second", "0-59"),
)
_WORD = re.compile(r"\S+")
_HASHED_OR_RANDOM = re.compile(r"(?<![A-Za-z])[HhRr](?![A-Za-z])")


@dataclass(frozen=True, slots=True)
class CronProblem:
    """Why an expression is invalid; `start`/`end` are offsets into the expression."""

    message: str
    start: int
    end: int
    label: str | None = None
    help: str | None = None


@cache
def check_cron(expression: str) -> CronProblem | None:
    """None when croniter accepts `expression` as 5 or 6 fields (or an alias)."""
    words = list(_WORD.finditer(expression))
    whole = (words[0].start(), words[-1].end()) if words else (0, len(expression))
    if not words:
        return CronProblem("empty cron expression", *whole, help='for example "0 2 * * *"')
    if words[0].group().startswith("@"):
        alias = words[0].group()
        if len(words) == 1 and alias in ALIASES:
            return None
        if alias not in ALIASES:
            return CronProblem(
                f"unknown cron alias `{alias}`",
                words[0].start(),
                words[0].end(),
                label="aliases: " + ", ".join(ALIASES),
                help=_did_you_mean(alias, ALIASES),
            )
        return CronProblem(f"cron alias `{alias}` stands alone", words[1].start(), words[-1].end())
    if len(words) not in (5, 6):
        return CronProblem(
            f"cron expression has {len(words)} field{'s' if len(words) != 1 else ''}, "
            "expected 5 or 6",
            *whole,
            label="minute hour day-of-month month day-of-week [second]",
        )
    for index, word in enumerate(words):
        if _HASHED_OR_RANDOM.search(word.group()):
            name, _ = _FIELDS[index]
            return CronProblem(
                f"hashed (H) and random (R) values are not supported in the {name} field",
                word.start(),
                word.end(),
            )
    if _expands(expression):
        return None
    for index, word in enumerate(words):
        probe = ["*"] * len(words)
        probe[index] = word.group()
        if not _expands(" ".join(probe)):
            name, allowed = _FIELDS[index]
            return CronProblem(
                f"invalid {name} field `{word.group()}` in cron expression",
                word.start(),
                word.end(),
                label=f"{name} takes {allowed}",
            )
    # each field is fine alone: the days never occur in the months named
    return CronProblem(
        f"cron expression `{expression.strip()}` never fires: "
        "the days of the month do not occur in the months named",
        words[2].start(),
        words[3].end(),
    )


def _expands(expression: str) -> bool:
    try:
        croniter.expand(expression, strict=True)
    except (CroniterError, ValueError, KeyError, IndexError):
        return False
    return True


def _did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean `{close[0]}`?" if close else None


@cache
def zone(name: str) -> zoneinfo.ZoneInfo | None:
    """The IANA zone `name`, or None when there is no such zone."""
    if not name or name != name.strip() or name.startswith("/") or ".." in name:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


# --- daylight saving -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of a zone's UTC offset, as the local wall clock sees it.

    Local times in [`start`, `end`) do not exist (a gap: clocks go forward) or
    happen twice (an overlap: clocks go back). Both are naive local times.
    """

    start: datetime
    end: datetime
    gap: bool


@dataclass(frozen=True, slots=True)
class DstHit:
    """The first local time at which a schedule fires inside a transition."""

    fires_at: datetime  # naive local time
    transition: Transition


_DAY = 86400


@cache
def transitions(zone_name: str, first_day: date, days: int = 731) -> tuple[Transition, ...]:
    """The offset changes of `zone_name` from `first_day` (UTC) on, for `days` days.

    The offset is sampled once a day and each change is then located to the
    second by bisection: about 750 offset look-ups per zone.
    """
    tz = zone(zone_name)
    if tz is None:
        return ()
    begin = int(datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC).timestamp())

    def offset(ts: int) -> timedelta:
        return datetime.fromtimestamp(ts, tz).utcoffset() or timedelta(0)

    found: list[Transition] = []
    previous = offset(begin)
    for day in range(1, days + 1):
        ts = begin + day * _DAY
        current = offset(ts)
        if current == previous:
            continue
        low, high = ts - _DAY, ts  # offset(low) == previous, offset(high) == current
        while high - low > 1:
            middle = (low + high) // 2
            if offset(middle) == previous:
                low = middle
            else:
                high = middle
        instant = datetime.fromtimestamp(high, UTC).replace(tzinfo=None)
        before, after = instant + previous, instant + current
        found.append(Transition(min(before, after), max(before, after), gap=current > previous))
        previous = current
    return tuple(found)


@dataclass(frozen=True, slots=True)
class _Expanded:
    minutes: tuple[int, ...]  # sorted
    hours: frozenset[int]
    months: frozenset[int] | None  # None: every month
    days: frozenset[int] | None  # None: any day of the month ('*')
    last_day: bool  # `L` in the day-of-month field
    weekdays: frozenset[int] | None  # cron numbering, 0 is sunday; None: any ('*')
    second: int  # the first second it fires at in a minute
    special: bool  # nth weekday of the month or the like: left to croniter


@cache
def _expand(expression: str) -> _Expanded | None:
    text = ALIASES.get(expression.strip(), expression)
    try:
        fields, nth = croniter.expand(text, strict=True)
    except (CroniterError, ValueError, KeyError, IndexError):
        return None

    def ints(values: Sequence[object]) -> frozenset[int] | None:
        # croniter writes a field that covers its whole range as "*"
        return None if values == ["*"] else frozenset(v for v in values if isinstance(v, int))

    hours = ints(fields[1])
    seconds = ints(fields[5]) if len(fields) > 5 else frozenset({0})
    return _Expanded(
        minutes=tuple(range(60)) if fields[0] == ["*"] else tuple(sorted(ints(fields[0]) or ())),
        hours=frozenset(range(24)) if hours is None else hours,
        months=ints(fields[3]),
        days=ints(fields[2]),
        last_day="l" in fields[2],
        weekdays=ints(fields[4]),
        second=min(seconds) if seconds else 0,
        special=bool(nth),
    )


def dst_hits(expression: str, zone_name: str, today: date) -> tuple[DstHit | None, DstHit | None]:
    """The first firing in a gap and the first in an overlap of `zone_name`, from `today`.

    Both None for an invalid expression or a zone without transitions. Results
    are cached: many jobs share an expression and a zone.
    """
    return _dst_hits(expression, zone_name, today)


@cache
def _dst_hits(expression: str, zone_name: str, today: date) -> tuple[DstHit | None, DstHit | None]:
    changes = transitions(zone_name, today)
    if not changes:
        return None, None
    fields = _expand(expression)
    if fields is None:
        return None, None
    gap: DstHit | None = None
    overlap: DstHit | None = None
    for change in changes:
        if (gap if change.gap else overlap) is not None:
            continue
        fires = _first_firing(expression, fields, change.start, change.end)
        if fires is None:
            continue
        if change.gap:
            gap = DstHit(fires, change)
        else:
            overlap = DstHit(fires, change)
        if gap is not None and overlap is not None:
            break
    return gap, overlap


_HOUR = timedelta(hours=1)


def _first_firing(
    expression: str, fields: _Expanded, start: datetime, end: datetime
) -> datetime | None:
    """The first minute in [start, end) at which the expression fires (local, naive).

    Walks the window hour by hour (a window is an hour or two long) and looks
    only at the minutes the expression names.
    """
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour < end:
        if hour.hour in fields.hours and _day_matches(expression, fields, hour):
            first = _minutes_ceil(max(start, hour) - hour)
            stop = _minutes_ceil(min(end, hour + _HOUR) - hour)
            for minute in fields.minutes:
                if first <= minute < stop:
                    return hour.replace(minute=minute, second=fields.second)
        hour += _HOUR
    return None


def _minutes_ceil(delta: timedelta) -> int:
    return -(-int(delta.total_seconds()) // 60)


def _day_matches(expression: str, fields: _Expanded, moment: datetime) -> bool:
    if fields.months is not None and moment.month not in fields.months:
        return False
    if fields.special:
        # the nth weekday of a month: croniter knows its own rules best
        text = ALIASES.get(expression.strip(), expression)
        probe = moment.replace(minute=fields.minutes[0], second=fields.second)
        return bool(croniter.match(text, probe))
    day_ok = fields.days is None or moment.day in fields.days
    if fields.last_day:
        day_ok = day_ok or moment.day == calendar.monthrange(moment.year, moment.month)[1]
    week_ok = fields.weekdays is None or (moment.weekday() + 1) % 7 in fields.weekdays
    if fields.days is None or fields.weekdays is None:
        return day_ok and week_ok
    return day_ok or week_ok  # cron: when both are restricted, either one will do
