"""Cron expressions: validation that points at the bad field, the one evaluator, and
daylight-saving checks.

Expressions have 5 fields (minute hour day-of-month month day-of-week) or 6,
the sixth being **seconds, last** (croniter's convention; croniter also parses
each field here). The aliases `@hourly @daily @midnight @weekly @monthly
@yearly @annually` stand for their usual 5-field expressions. Hashed (`H`) and
random (`R`) fields, which would be resolved differently on each machine, are
refused.

`instants_after` and `instants_until` are the only code in tideflow that says
when an expression fires (the runtime's scheduler, `upcoming`, the dashboard
and the linter all come here). They follow Debian's cron:

- crontab(5)'s day rule: when both day fields are restricted (neither begins
  with `*`), a day matching either will do; otherwise both must match, so
  `*/8` in the day of month and `mon` in the day of week means Mondays that are
  the 1st, 9th, 17th or 25th;
- daylight saving: a *fixed-time* job (its minute and hour fields do not begin
  with `*`) runs once right after a gap for a time the gap skips, and once, at
  the first pass, for a repeated time; any other job follows the wall clock: no
  run for a time that does not exist, a run in each pass of a repeated time.

The daylight-saving checks find, once per time zone, the zone's transitions in
the next two years, and then look for wall times of the expression only inside
the local hours those transitions skip or repeat.
"""

from __future__ import annotations

import bisect
import calendar
import heapq
import re
import zoneinfo
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Final

from croniter import croniter
from croniter.croniter import CroniterError
from tideflow.dsl.suggest import suggest

__all__ = [
    "ALIASES",
    "CronProblem",
    "CronSpec",
    "DstHit",
    "Transition",
    "check_cron",
    "dst_hits",
    "either_day",
    "instants_after",
    "instants_until",
    "parse_cron",
    "transitions",
    "wall_to_instant",
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
    ("day-of-month", "1-31, L for the last day, or 15W for the weekday nearest the 15th"),
    ("month", "1-12 or jan-dec"),
    (
        "day-of-week",
        "0-7 (sunday is 0 or 7) or sun-sat, mon#1 for the first monday, L5 for the last friday",
    ),
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
                help=suggest(alias, ALIASES),
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
        if _days_never_match(*(word.group() for word in words[2:5])):
            return CronProblem(
                f"cron expression `{expression.strip()}` never fires: no day is both "
                "one of its days of the month and one of its days of the week",
                words[2].start(),
                words[4].end(),
                label="a day field that begins with `*` must match too",
            )
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


# --- evaluation: the one place that says when an expression fires ----------------------

# A calendar repeats its weekdays and leap days every 28 years between 1901 and
# 2099: an expression that matches no day in that many years never fires.
_SEARCH_DAYS: Final = 28 * 366
_NEAREST_WEEKDAY = re.compile(r"(\d+)W", re.IGNORECASE)
_START_STEP = re.compile(r"^(\w+)/(?=\d+$)")


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A parsed expression: the values each field allows, and how the fields combine.

    `either_day`: both day fields are restricted (neither begins with `*` or `?`),
    so a day matching either one will do (crontab(5)); otherwise both must match.
    `fixed_time`: neither the minute nor the hour field begins with `*`, so the
    job runs at set times of the day (Debian's cron: such jobs are moved out of a
    daylight-saving gap and run once in an overlap; the others follow the wall clock).
    """

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: frozenset[int]
    days: frozenset[int] | None  # None: any day of the month
    last_day: bool  # `L`
    nearest_weekdays: frozenset[int]  # `15W`: the weekday nearest the 15th
    weekdays: frozenset[int] | None  # cron numbering, 0 is sunday; None: any
    nth_weekdays: tuple[tuple[int, frozenset[int | str]], ...]  # `5#2`, `L5` (str "l")
    either_day: bool
    fixed_time: bool

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        if self.either_day:
            return self._day_of_month(day) or self._day_of_week(day)
        return self._day_of_month(day) and self._day_of_week(day)

    def _day_of_month(self, day: date) -> bool:
        if self.days is None:
            return True
        if day.day in self.days:
            return True
        last = calendar.monthrange(day.year, day.month)[1]
        if self.last_day and day.day == last:
            return True
        return any(
            _nearest_weekday(day.year, day.month, n, last) == day.day for n in self.nearest_weekdays
        )

    def _day_of_week(self, day: date) -> bool:
        if self.weekdays is None:
            return True
        weekday = (day.weekday() + 1) % 7
        if weekday in self.weekdays:
            return True
        for nth_weekday, which in self.nth_weekdays:
            if nth_weekday != weekday:
                continue
            if (day.day - 1) // 7 + 1 in which:
                return True
            if "l" in which and day.day + 7 > calendar.monthrange(day.year, day.month)[1]:
                return True
        return False

    def walls_after(self, start: datetime, stop: datetime | None = None) -> Iterator[datetime]:
        """The naive wall times the expression names, strictly after `start`, ascending,
        before `stop` when given; ends when no day matches in 28 years."""
        day = start.date()
        moment: time | None = start.time()
        misses = 0
        while misses < _SEARCH_DAYS:
            if stop is not None and datetime.combine(day, time()) >= stop:
                return
            if day.month not in self.months:
                following = _first_of_next_month(day)
                if following <= day:
                    return
                misses += (following - day).days
                day, moment = following, None
                continue
            if self.matches_day(day):
                misses = 0
                for clock in self._times_after(moment):
                    wall = datetime.combine(day, clock)
                    if stop is not None and wall >= stop:
                        return
                    yield wall
            else:
                misses += 1
            if day >= date.max - _ONE_DAY:
                return
            day, moment = day + _ONE_DAY, None

    def walls_before(self, start: datetime) -> Iterator[datetime]:
        """The naive wall times strictly before `start`, descending; ends when no day
        matches in 28 years."""
        day = start.date()
        moment: time | None = start.time()
        misses = 0
        while misses < _SEARCH_DAYS:
            if self.matches_day(day):
                misses = 0
                for clock in self._times_before(moment):
                    yield datetime.combine(day, clock)
            else:
                misses += 1
            if day <= date.min:
                return
            day, moment = day - _ONE_DAY, None

    def _times_after(self, moment: time | None) -> Iterator[time]:
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        if moment is None:
            for h in hours:
                for m in minutes:
                    for s in seconds:
                        yield time(h, m, s)
            return
        after = (moment.hour, moment.minute, moment.second)
        for h in hours[bisect.bisect_left(hours, after[0]) :]:
            for m in minutes if h > after[0] else minutes[bisect.bisect_left(minutes, after[1]) :]:
                if (h, m) == after[:2]:
                    # strictly after `moment`, whatever its fraction of a second
                    for s in seconds[bisect.bisect_right(seconds, after[2]) :]:
                        yield time(h, m, s)
                else:
                    for s in seconds:
                        yield time(h, m, s)

    def _times_before(self, moment: time | None) -> Iterator[time]:
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        bound = (24, 0, 0) if moment is None else (moment.hour, moment.minute, moment.second)
        exact = moment is None or moment.microsecond == 0  # a second equal to it is not before
        for h in reversed(hours[: bisect.bisect_right(hours, bound[0])]):
            cut = len(minutes) if h < bound[0] else bisect.bisect_right(minutes, bound[1])
            for m in reversed(minutes[:cut]):
                if (h, m) == bound[:2]:
                    last = (
                        bisect.bisect_left(seconds, bound[2])
                        if exact
                        else bisect.bisect_right(seconds, bound[2])
                    )
                    for s in reversed(seconds[:last]):
                        yield time(h, m, s)
                else:
                    for s in reversed(seconds):
                        yield time(h, m, s)


_ONE_DAY: Final = timedelta(days=1)


def _first_of_next_month(day: date) -> date:
    if day.month == 12:
        return date(day.year + 1, 1, 1) if day.year < 9999 else date.max
    return date(day.year, day.month + 1, 1)


def _nearest_weekday(year: int, month: int, day: int, last: int) -> int:
    """The weekday (monday to friday) nearest `day` within its month."""
    day = min(day, last)
    weekday = calendar.weekday(year, month, day)
    if weekday == 5:  # saturday: the friday before, or the monday after on the 1st
        return day - 1 if day > 1 else day + 2
    if weekday == 6:  # sunday: the monday after, or the friday before on the last day
        return day + 1 if day < last else day - 2
    return day


@cache
def parse_cron(expression: str) -> CronSpec:
    """The `CronSpec` of a valid expression (an alias included); ValueError otherwise."""
    text = ALIASES.get(expression.strip(), expression.strip())
    words = text.split()
    if len(words) >= 5:
        # crontab(5) numbers the days of the week 0-7, so `1/3` is `1-7/3` (and takes
        # in sunday as 7), as `*/3` is `0-7/3`; croniter would stop at 6
        words[4] = ",".join(_START_STEP.sub(r"\1-7/", term) for term in words[4].split(","))
    try:
        fields, nth = croniter.expand(" ".join(words), strict=True)
    except (CroniterError, ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"invalid cron expression `{expression}`") from exc

    def ints(values: Sequence[object], whole: range) -> tuple[int, ...]:
        # croniter writes a field that covers its whole range as "*"
        if list(values) == ["*"]:
            return tuple(whole)
        return tuple(sorted({v for v in values if isinstance(v, int)}))

    nearest = frozenset(
        int(match.group(1))
        for term in words[2].split(",")
        if (match := _NEAREST_WEEKDAY.fullmatch(term))
    )
    plain_days = frozenset(v for v in fields[2] if isinstance(v, int)) - nearest
    unrestricted = ("*", "?")
    nth_weekdays = tuple(sorted((day, frozenset(which)) for day, which in nth.items()))
    plain_weekdays = ints(fields[4], range(7))
    return CronSpec(
        seconds=ints(fields[5], range(60)) if len(fields) > 5 else (0,),
        minutes=ints(fields[0], range(60)),
        hours=ints(fields[1], range(24)),
        months=frozenset(ints(fields[3], range(1, 13))),
        days=None if fields[2] == ["*"] else plain_days,
        last_day="l" in fields[2],
        nearest_weekdays=nearest,
        weekdays=None
        if fields[4] == ["*"]
        else frozenset(plain_weekdays) - {day for day, _ in nth_weekdays},
        nth_weekdays=nth_weekdays,
        either_day=not words[2].startswith(unrestricted) and not words[4].startswith(unrestricted),
        fixed_time=not words[0].startswith("*") and not words[1].startswith("*"),
    )


@cache
def _days_never_match(days_of_month: str, months: str, days_of_week: str) -> bool:
    """Whether no day in 28 years matches the day fields (cached apart from the
    times of day: looking costs some 20 ms when nothing matches)."""
    spec = parse_cron(f"0 0 {days_of_month} {months} {days_of_week}")
    return next(spec.walls_after(datetime(2001, 1, 1)), None) is None


# --- from wall times to instants ------------------------------------------------------------


def _wall(instant: datetime, tz: zoneinfo.ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def wall_to_instant(wall: datetime, tz: zoneinfo.ZoneInfo) -> datetime:
    """The UTC instant at which the naive local `wall` time happens in `tz`.

    In an overlap, its first occurrence; in a gap, the first instant after the gap.
    """
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if _wall(first, tz) == wall:
        return first
    # In a gap, fold=0 applies the offset from before the gap (an instant after the
    # transition) and fold=1 the offset from after it (an instant before): the
    # transition lies between, on a whole second in the tz database.
    late = int(first.timestamp())
    early = int(wall.replace(tzinfo=tz, fold=1).astimezone(UTC).timestamp())
    offset_after = first.astimezone(tz).utcoffset()
    while late - early > 1:
        middle = (early + late) // 2
        if datetime.fromtimestamp(middle, tz).utcoffset() == offset_after:
            late = middle
        else:
            early = middle
    return datetime.fromtimestamp(late, UTC)


def _instants(wall: datetime, tz: zoneinfo.ZoneInfo, fixed_time: bool) -> tuple[datetime, ...]:
    """The instants at which a schedule fires for one of its wall times (Debian's cron).

    A fixed-time job fires once: at the first occurrence of a repeated time, and
    right after a gap for a time that does not exist. A job whose minute or hour is
    a wildcard follows the wall clock: in each pass of a repeated time, never in a gap.
    """
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if _wall(first, tz) != wall:  # in a gap
        return (wall_to_instant(wall, tz),) if fixed_time else ()
    if fixed_time:
        return (first,)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    return (first,) if second == first else (first, second)


def _repeat(wall: datetime, tz: zoneinfo.ZoneInfo) -> timedelta:
    """How long the repeated hour is when `wall` happens twice, else zero."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    return max(second - first, timedelta(0))


def instants_after(expression: str, zone_name: str, after: datetime) -> Iterator[datetime]:
    """The UTC instants at which `expression` fires in `zone_name`, strictly after the
    aware `after`, ascending, each once. ValueError for a bad expression or zone."""
    spec = parse_cron(expression)
    tz = _require_zone(zone_name)
    wall = _wall(after, tz)
    # a time repeated after `after` (its second pass) may be earlier on the wall clock
    start = wall - _repeat(wall.replace(microsecond=0), tz)
    pending: list[datetime] = []
    previous = after
    for candidate in spec.walls_after(start):
        for instant in _instants(candidate, tz, spec.fixed_time):
            heapq.heappush(pending, instant)
        # every later wall time fires at or after this wall time's first instant
        floor = wall_to_instant(candidate, tz)
        while pending and pending[0] <= floor:
            instant = heapq.heappop(pending)
            if instant > previous:  # a gap collapses several wall times into one instant
                previous = instant
                yield instant
    while pending:
        instant = heapq.heappop(pending)
        if instant > previous:
            previous = instant
            yield instant


def instants_until(expression: str, zone_name: str, before: datetime) -> Iterator[datetime]:
    """The UTC instants at which `expression` fires in `zone_name`, at or before the
    aware `before`, newest first, each once (the instants `instants_after` gives)."""
    spec = parse_cron(expression)
    tz = _require_zone(zone_name)
    wall = _wall(before, tz)
    # a time's first pass may come before `before` though it is later on the wall clock
    start = wall + _repeat(wall.replace(microsecond=0), tz) + timedelta(seconds=1)
    pending: list[_Newest] = []
    previous: datetime | None = None
    for candidate in spec.walls_before(start):
        for instant in _instants(candidate, tz, spec.fixed_time):
            heapq.heappush(pending, _Newest(instant))
        # every earlier wall time fires at or before this wall time's last instant
        ceiling = _last_instant(candidate, tz)
        while pending and pending[0].instant >= ceiling:
            instant = heapq.heappop(pending).instant
            if instant <= before and instant != previous:
                previous = instant
                yield instant
    while pending:
        instant = heapq.heappop(pending).instant
        if instant <= before and instant != previous:
            previous = instant
            yield instant


@dataclass(frozen=True, slots=True, order=True)
class _Newest:
    """Orders instants newest first in a heap."""

    key: float
    instant: datetime

    def __init__(self, instant: datetime) -> None:
        object.__setattr__(self, "key", -instant.timestamp())
        object.__setattr__(self, "instant", instant)


def _last_instant(wall: datetime, tz: zoneinfo.ZoneInfo) -> datetime:
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if _wall(second, tz) != wall:  # in a gap
        return wall_to_instant(wall, tz)
    return second


def _require_zone(name: str) -> zoneinfo.ZoneInfo:
    tz = zone(name)
    if tz is None:
        raise ValueError(f"unknown time zone `{name}`")
    return tz


# --- what the linter says about an expression ----------------------------------------------


@dataclass(frozen=True, slots=True)
class DstHit:
    """The first local time at which a schedule fires inside a transition.

    `moved`: a fixed-time job, whose run moves to right after a gap, or is not
    repeated in an overlap; otherwise a wildcard job's runs in a gap are dropped.
    """

    fires_at: datetime  # naive local time
    transition: Transition
    moved: bool


def dst_hits(expression: str, zone_name: str, today: date) -> tuple[DstHit | None, DstHit | None]:
    """Where daylight saving really changes when `expression` runs in `zone_name`, from
    `today`: the first wall time in a gap (moved, or dropped), and the first wall time
    in an overlap that runs only once (fixed-time jobs; a wildcard job runs in each pass).

    Both None for an invalid expression or a zone without transitions. Results
    are cached: many jobs share an expression and a zone.
    """
    return _dst_hits(expression, zone_name, today)


@cache
def _dst_hits(expression: str, zone_name: str, today: date) -> tuple[DstHit | None, DstHit | None]:
    changes = transitions(zone_name, today)
    if not changes:
        return None, None
    try:
        spec = parse_cron(expression)
    except ValueError:
        return None, None
    gap: DstHit | None = None
    overlap: DstHit | None = None
    for change in changes:
        if (gap if change.gap else overlap) is not None:
            continue
        if not change.gap and not spec.fixed_time:
            continue
        start = change.start - timedelta(microseconds=1)
        fires = next(spec.walls_after(start, stop=change.end), None)
        if fires is None:
            continue
        if change.gap:
            gap = DstHit(fires, change, moved=spec.fixed_time)
        else:
            overlap = DstHit(fires, change, moved=True)
        if gap is not None and overlap is not None:
            break
    return gap, overlap


_WEEKDAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_NTH = {"1": "first", "2": "second", "3": "third", "4": "fourth", "5": "fifth"}


def either_day(expression: str) -> tuple[str, str] | None:
    """For an expression whose two day fields are both restricted (so a day matching
    either will do), the two fields in words; None otherwise or when invalid."""
    try:
        spec = parse_cron(expression)
    except ValueError:
        return None
    if not spec.either_day:
        return None
    words = ALIASES.get(expression.strip(), expression.strip()).split()
    return _days_of_month_in_words(words[2]), _weekdays_in_words(words[4])


def _days_of_month_in_words(field: str) -> str:
    terms = field.upper().split(",")
    if terms == ["L"]:
        return "on the last day of the month"
    if len(terms) == 1 and terms[0].isdigit():
        return f"on day {int(terms[0])} of the month"
    return f"on days {field} of the month"


def _weekday_word(term: str) -> str:
    if term.isdigit():
        return _WEEKDAY_NAMES[int(term) % 7]
    names = [name[:3].upper() for name in _WEEKDAY_NAMES]
    return _WEEKDAY_NAMES[names.index(term)] if term in names else term


def _weekdays_in_words(field: str) -> str:
    said: list[str] = []
    for term in field.upper().split(","):
        if (nth := re.fullmatch(r"(\w+)#([1-5])", term)) is not None:
            said.append(f"the {_NTH[nth.group(2)]} {_weekday_word(nth.group(1))} of the month")
        elif (last := re.fullmatch(r"L(\w+)", term)) is not None:
            said.append(f"the last {_weekday_word(last.group(1))} of the month")
        elif (span := re.fullmatch(r"(\w+)-(\w+)", term)) is not None:
            said.append(f"every {_weekday_word(span.group(1))} to {_weekday_word(span.group(2))}")
        elif "/" in term:
            said.append(f"the weekdays `{term.lower()}`")
        else:
            said.append(f"every {_weekday_word(term)}")
    return (
        "on " + " and ".join(said)
        if len(said) < 3
        else "on " + ", ".join(said[:-1]) + " and " + said[-1]
    )
