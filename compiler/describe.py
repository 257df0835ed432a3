"""How a compiled schedule is told to people: the one home of `describe_schedule`.

`tideflow run`'s table, the dashboard and the flow graph each say it in their own
words (`every 90s` / `every 1m30s`, `cron 0 2 * * * Europe/Paris` / `... (UTC)` /
`... · UTC`); they share this function and pass what differs.
"""

from __future__ import annotations

from collections.abc import Callable

from tideflow.dsl.durations import format_duration

from .ir import Schedule

__all__ = ["describe_schedule"]


def describe_schedule(
    schedule: Schedule,
    *,
    interval: Callable[[float], str] = format_duration,
    zone: str = " ({})",
    show_utc: bool = True,
) -> str:
    """`every <interval>` or `cron <expression><zone>`.

    `interval` writes an `every` schedule's seconds; `zone` is the format of the
    cron schedule's time zone after the expression, left out for UTC unless
    `show_utc`.
    """
    if schedule.kind == "every" and schedule.interval is not None:
        return f"every {interval(schedule.interval)}"
    shown = show_utc or schedule.timezone != "UTC"
    return f"cron {schedule.cron}{zone.format(schedule.timezone) if shown else ''}"
