"""When schedules fire: pure functions from a `Schedule` and a window to UTC instants.

`cron(...)` schedules are evaluated by `tideflow.compiler.cron`, the one
evaluator that the linter, `upcoming`, the dashboard and this scheduler share.
It reads the expression on the LOCAL wall clock of the schedule's time zone
and follows Debian's cron:

- when both day fields are restricted (neither begins with `*`), a day matching
  either will do; otherwise both must match (crontab(5));
- a fixed-time job (minute and hour fields that do not begin with `*`) runs
  once, right after a spring-forward gap, for a wall time the gap skips (several
  such wall times collapse into that one firing), and once, at its first
  occurrence (`fold=0`), for a wall time a fall-back overlap repeats;
- any other job follows the wall clock: no run for a wall time in a gap, a run
  in each pass of an overlap.

Expressions have 5 fields, or 6 with the sixth being seconds (croniter's
convention); the aliases `@hourly`, `@daily`, `@midnight`, `@weekly`,
`@monthly`, `@yearly`, `@annually` stand for their usual 5-field expressions.

`every(D)` schedules fire at the instants `k * D` after the Unix epoch (UTC), so
they are unaffected by daylight saving and the same on every machine.

How many times a schedule fires in each local day of a window (the dashboard's
calendar) is counted here too, without walking every instant where arithmetic will do.

Every datetime given or returned is timezone-aware; returned ones are in UTC.
"""

from __future__ import annotations

import itertools
import logging
import zoneinfo
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Final

from tideflow.compiler.cron import ALIASES, instants_after, instants_until, wall_to_instant
from tideflow.compiler.ir import FlowIR, Schedule

__all__ = [
    "ALIASES",
    "CATCH_UP_POLICIES",
    "DAY_CAP",
    "FULL_DAY_CAP",
    "MAX_CATCH_UP",
    "count_fires",
    "count_fires_by_day",
    "day_windows",
    "due_on_start",
    "end_of_month",
    "fire_times",
    "last_fire",
    "next_fire",
    "upcoming",
    "wall_to_instant",
]

logger = logging.getLogger(__name__)

CATCH_UP_POLICIES: Final = ("skip", "latest", "all")
# With catch_up = "all", at most this many missed instants are fired after a
# restart (the latest ones): a flow that was down for a month with a per-second
# schedule must not start millions of runs.
MAX_CATCH_UP: Final = 1000

# a day with more instants than this is counted as "at least" (per-second crons exist)
DAY_CAP: Final = 200
# instants counted in one regular day of a cron that fires the same way every day
FULL_DAY_CAP: Final = 5000

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_DAY: Final = timedelta(days=1)


# --- public API ------------------------------------------------------------------------


def fire_times(
    schedule: Schedule, after: datetime, until: datetime | None = None
) -> Iterator[datetime]:
    """The instants at which `schedule` fires, strictly after `after` and at most `until`
    (without end when `until` is None), ascending, each once."""
    _require_aware(after, "after")
    if until is not None:
        _require_aware(until, "until")
    instants = (
        _every_ascending(schedule, after)
        if _kind(schedule) == "every"
        else _cron_ascending(schedule, after)
    )
    if until is None:
        return instants
    return itertools.takewhile(lambda instant: instant <= until, instants)


def next_fire(schedule: Schedule, after: datetime) -> datetime:
    """The first instant strictly after `after` at which `schedule` fires.

    Raises ValueError for a schedule that never fires again.
    """
    for instant in fire_times(schedule, after):
        return instant
    raise ValueError(f"schedule {_describe(schedule)} never fires after {after.isoformat()}")


def due_on_start(
    schedule: Schedule,
    last_fired: datetime | None,
    now: datetime,
    catch_up: str,
    *,
    job: str | None = None,
) -> list[datetime]:
    """The missed instants in (`last_fired`, `now`] to fire now, ascending.

    `skip`: none. `latest`: the last missed instant only. `all`: every missed
    instant, at most `MAX_CATCH_UP` of them (the latest; a warning is logged
    when older ones are dropped). A schedule that never fired (`last_fired` None)
    missed nothing. `job` only names the job in the warning.
    """
    _require_aware(now, "now")
    if catch_up not in CATCH_UP_POLICIES:
        raise ValueError(
            f"unknown catch-up policy `{catch_up}`; expected one of {', '.join(CATCH_UP_POLICIES)}"
        )
    if last_fired is None or catch_up == "skip":
        return []
    _require_aware(last_fired, "last_fired")
    if last_fired >= now:
        return []
    newest_first = _descending(schedule, now, last_fired)
    if catch_up == "latest":
        return list(itertools.islice(newest_first, 1))
    kept = list(itertools.islice(newest_first, MAX_CATCH_UP + 1))
    if len(kept) > MAX_CATCH_UP:
        kept = kept[:MAX_CATCH_UP]
        logger.warning(
            "%s missed more than %d instants since %s; firing the latest %d (from %s)",
            f"job `{job}`" if job else f"schedule {_describe(schedule)}",
            MAX_CATCH_UP,
            last_fired.isoformat(),
            MAX_CATCH_UP,
            kept[-1].isoformat(),
        )
    kept.reverse()
    return kept


def upcoming(
    flow: FlowIR, start: datetime, until: datetime, jobs: Iterable[str] | None = None
) -> list[tuple[datetime, str]]:
    """Every scheduled instant in [`start`, `until`] as (UTC instant, job name), sorted.

    `jobs` limits the listing to those jobs; a name that is not a job of the flow
    raises ValueError. Jobs without a schedule have no instants.
    """
    _require_aware(start, "start")
    _require_aware(until, "until")
    known = flow.jobs
    if jobs is None:
        names = sorted(known)
    else:
        names = sorted(set(jobs))
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(
                f'unknown job `{unknown[0]}` in flow "{flow.info.name}"'
                + (f"; jobs: {', '.join(sorted(known))}" if known else "")
            )
    listed: list[tuple[datetime, str]] = []
    for name in names:
        schedule = known[name].schedule
        if schedule is not None:
            # strictly after start - 1µs: start itself is in the window
            listed.extend((t, name) for t in fire_times(schedule, start - _MICROSECOND, until))
    listed.sort()
    return listed


# --- counting, day by day ----------------------------------------------------------------


def end_of_month(moment: datetime, zone: tzinfo) -> datetime:
    """The last microsecond of `moment`'s month on the wall clock of `zone`, in UTC."""
    local = moment.astimezone(zone)
    first_next = (local.replace(day=28) + timedelta(days=4)).replace(day=1)
    start_next = datetime.combine(first_next.date(), time.min, tzinfo=zone)
    return start_next.astimezone(UTC) - _MICROSECOND


def day_windows(
    start: datetime, until: datetime, zone: tzinfo
) -> list[tuple[date, datetime, datetime]]:
    """(day, first instant, last instant) of each local day that [start, until] touches."""
    windows = []
    day = start.astimezone(zone).date()
    while True:
        day_start = datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)
        next_start = datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone).astimezone(
            UTC
        )
        lo, hi = max(start, day_start), min(until, next_start - _MICROSECOND)
        if lo > until:
            break
        if lo <= hi:
            windows.append((day, lo, hi))
        day += timedelta(days=1)
    return windows


def count_fires(
    schedule: Schedule, lo: datetime, hi: datetime, cap: int = DAY_CAP
) -> tuple[int, bool, datetime | None]:
    """(instants in [lo, hi], whether that count is exact, the first of them); more
    than `cap` instants count as `cap`, not exact."""
    if schedule.kind == "every" and schedule.interval:
        step = round(schedule.interval * 1_000_000)
        lo_us = (lo - _EPOCH) // _MICROSECOND
        hi_us = (hi - _EPOCH) // _MICROSECOND
        first_k = -(-lo_us // step)
        count = max(0, hi_us // step - first_k + 1)
        first = _EPOCH + timedelta(microseconds=first_k * step) if count else None
        return count, True, first
    found = list(itertools.islice(fire_times(schedule, lo - _MICROSECOND, hi), cap + 1))
    return min(len(found), cap), len(found) <= cap, found[0] if found else None


def count_fires_by_day(
    schedule: Schedule, days: Sequence[tuple[date, datetime, datetime]]
) -> list[tuple[int, bool, datetime | None]]:
    """`count_fires` for each day window (see `day_windows`), without walking every
    instant of every day.

    A cron that names no day, month or weekday fires the same wall times every day,
    so any window of exactly 24 hours in which its zone's offset does not change
    holds the same number of instants: that number is counted once (up to
    `FULL_DAY_CAP`, as are the few other days), and each such day only looks up its
    first instant. Other crons are counted day by day up to `DAY_CAP`.
    """
    if schedule.kind == "every" or not _same_every_day(schedule):
        return [count_fires(schedule, lo, hi) for _, lo, hi in days]
    zone = zoneinfo.ZoneInfo(schedule.timezone)
    reference: tuple[int, bool] | None = None
    counted: list[tuple[int, bool, datetime | None]] = []
    for _, lo, hi in days:
        regular = hi - lo == _DAY - _MICROSECOND and lo.astimezone(zone).utcoffset() == (
            hi.astimezone(zone).utcoffset()
        )
        if not regular:  # a day of a clock change, or the window's first or last
            counted.append(count_fires(schedule, lo, hi, FULL_DAY_CAP))
            continue
        if reference is None:
            count, exact, first = count_fires(schedule, lo, hi, FULL_DAY_CAP)
            reference = (count, exact)
        else:
            first = next(iter(fire_times(schedule, lo - _MICROSECOND, hi)), None)
        counted.append((*reference, first))
    return counted


def last_fire(schedule: Schedule, until: datetime, first: datetime) -> datetime:
    """The last instant in [first, until], where `first` is known to be one (the
    schedule walked backwards from `until`)."""
    latest = due_on_start(schedule, first - _MICROSECOND, until, "latest")
    return latest[0] if latest else first


def _same_every_day(schedule: Schedule) -> bool:
    """Whether a cron schedule's day-of-month, month and weekday fields are all `*`."""
    text = (schedule.cron or "").strip()
    fields = ALIASES.get(text, text).split()
    return len(fields) in (5, 6) and all(field in ("*", "?") for field in fields[2:5])


# --- every(D) --------------------------------------------------------------------------


def _interval_us(schedule: Schedule) -> int:
    if schedule.interval is None or schedule.interval <= 0:
        raise ValueError(f"every() schedule needs a positive interval, got {schedule.interval}")
    step = round(schedule.interval * 1_000_000)
    if step < 1:
        raise ValueError(f"every() interval {schedule.interval}s is below a microsecond")
    return step


def _every_ascending(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    step = _interval_us(schedule)
    k = (after - _EPOCH) // _MICROSECOND // step + 1
    while True:
        yield _EPOCH + timedelta(microseconds=k * step)
        k += 1


def _every_descending(schedule: Schedule, before: datetime, after: datetime) -> Iterator[datetime]:
    step = _interval_us(schedule)
    k = (before - _EPOCH) // _MICROSECOND // step
    while True:
        instant = _EPOCH + timedelta(microseconds=k * step)
        if instant <= after:
            return
        yield instant
        k -= 1


# --- cron ------------------------------------------------------------------------------


def _expression(schedule: Schedule) -> str:
    if schedule.cron is None:
        raise ValueError("cron schedule without an expression")
    return schedule.cron.strip()


def _cron_ascending(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    return instants_after(_expression(schedule), schedule.timezone, after)


def _cron_descending(schedule: Schedule, before: datetime, after: datetime) -> Iterator[datetime]:
    return itertools.takewhile(
        lambda instant: instant > after,
        instants_until(_expression(schedule), schedule.timezone, before),
    )


def _descending(schedule: Schedule, before: datetime, after: datetime) -> Iterator[datetime]:
    """The instants in (`after`, `before`], newest first."""
    if _kind(schedule) == "every":
        return _every_descending(schedule, before, after)
    return _cron_descending(schedule, before, after)


# --- helpers ---------------------------------------------------------------------------


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"`{name}` must be a timezone-aware datetime, got {moment!r}")


def _kind(schedule: Schedule) -> str:
    if schedule.kind not in ("cron", "every"):
        raise ValueError(f"unknown schedule kind `{schedule.kind}`; expected cron or every")
    return schedule.kind


def _describe(schedule: Schedule) -> str:
    if schedule.kind == "every":
        return f"every({schedule.interval}s)"
    return f'cron("{schedule.cron}") in {schedule.timezone}'
