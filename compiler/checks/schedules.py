"""Time zones and cron schedules: E210 for an unknown zone, and the warnings about when a
cron fires (W401/W402 across daylight-saving changes, W410 on either day field)."""

from __future__ import annotations

import zoneinfo
from functools import cache
from typing import Any

from tideflow.compiler import cron as cronlib
from tideflow.dsl import ast
from tideflow.dsl.diagnostics import Diagnostic
from tideflow.dsl.suggest import suggest

from .common import clock
from .context import CheckContext
from .model import ScheduleSpec

__all__ = ["check_timezone", "warn_dst", "warn_either_day"]


def check_timezone(ctx: CheckContext, expr: ast.String) -> Any:
    """The zone name `expr` holds, or INVALID (reported)."""
    text = expr.value
    if cronlib.zone(text) is not None:
        return text
    help = _zone_suggestion(text)
    return ctx.error(
        "E210",
        f'unknown time zone "{text}"',
        expr.span,
        label="expected an IANA zone such as Europe/Lisbon or UTC",
        help=help,
    )


@cache
def _zone_suggestion(text: str) -> str | None:
    # cached: a flow may repeat one misspelt zone in many jobs
    zones = zoneinfo.available_timezones()
    folded = {name.lower(): name for name in zones}.get(text.lower())
    return f'did you mean "{folded}"?' if folded else suggest(text, zones, '"{}"', fold_case=True)


def warn_dst(ctx: CheckContext, schedule: ScheduleSpec, zone_name: str) -> None:
    assert schedule.cron is not None
    gap, overlap = cronlib.dst_hits(schedule.cron, zone_name, ctx.today)
    shown = schedule.cron
    if gap is not None and gap.moved:
        start, end = gap.transition.start, gap.transition.end
        ctx.found.append(
            Diagnostic(
                "W401",
                f'cron "{shown}" fires at {clock(gap.fires_at)}, which does not exist '
                f"in {zone_name} on {gap.fires_at.date().isoformat()} (clocks go forward)",
                schedule.span,
                label=f"it runs once at {clock(end)} instead",
                help=f"local times from {clock(start)} to {clock(end)} are skipped that "
                'day: schedule it outside them, or in timezone = "UTC"',
            )
        )
    elif gap is not None:
        start, end = gap.transition.start, gap.transition.end
        ctx.found.append(
            Diagnostic(
                "W401",
                f'cron "{shown}" does not fire at {clock(gap.fires_at)}, which does not '
                f"exist in {zone_name} on {gap.fires_at.date().isoformat()} "
                "(clocks go forward)",
                schedule.span,
                label=f"a wildcard minute or hour follows the wall clock: no runs from "
                f"{clock(start)} to {clock(end)} that day",
                help='schedule it outside those times, or in timezone = "UTC"',
            )
        )
    if overlap is not None:
        start, end = overlap.transition.start, overlap.transition.end
        ctx.found.append(
            Diagnostic(
                "W402",
                f'cron "{shown}" fires at {clock(overlap.fires_at)}, which happens twice '
                f"in {zone_name} on {overlap.fires_at.date().isoformat()} (clocks go back)",
                schedule.span,
                label="it runs once, the first time",
                help=f"local times from {clock(start)} to {clock(end)} repeat that day: "
                'schedule it outside them, or in timezone = "UTC"',
            )
        )


def warn_either_day(ctx: CheckContext, schedule: ScheduleSpec) -> None:
    assert schedule.cron is not None
    either = cronlib.either_day(schedule.cron)
    if either is None:
        return
    days_of_month, days_of_week = either
    ctx.found.append(
        Diagnostic(
            "W410",
            f'cron "{schedule.cron}" runs {days_of_month} and also {days_of_week} '
            "(not only on days that are both)",
            schedule.span,
            label="both day fields are restricted, so a day matching either one will do",
            notes=(
                "crontab(5): a day field that begins with `*` (such as `*/2`) is not "
                "restricted, and then both fields must match",
            ),
        )
    )
