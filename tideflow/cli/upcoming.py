"""`tideflow upcoming FILE --until ...`: every instant the flow's schedules fire in a
window, on each job's own wall clock. It reads only the flow, never the state store."""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time

import click
from rich.table import Table

from tideflow.cli.common import emit_json, format_option, load_flow, make_console
from tideflow.dsl.durations import parse_duration
from tideflow.runtime.schedule import upcoming

__all__ = ["upcoming_command"]


@click.command("upcoming")
@click.argument("file", metavar="FILE")
@click.option(
    "--until",
    "until_text",
    required=True,
    help="Last day (or time) to list, or how far ahead (7d, 12h).",
)
@click.option(
    "--from", "from_text", help="First day (or time) to list, or a delay (1d) (default: now)."
)
@click.option("--job", "jobs", multiple=True, help="Only this job (repeatable).")
@format_option
def upcoming_command(
    file: str,
    until_text: str,
    from_text: str | None,
    jobs: Sequence[str],
    output_format: str,
) -> None:
    """Every scheduled instant of the flow in FILE up to --until, DST-correct.

    A bare date means the whole day in the flow's time zone: `--until 2026-12-31`
    lists up to the last instant of 31 December there. A duration counts from now:
    `--until 7d` lists the next seven days.
    """
    flow = load_flow(file)
    zone = zoneinfo.ZoneInfo(flow.info.timezone)
    now = datetime.now(UTC)
    start = _moment(from_text, zone, now, end_of_day=False) if from_text else now
    until = _moment(until_text, zone, now, end_of_day=True)
    if until < start:
        raise click.BadParameter("--until is before --from", param_hint="--until")
    try:
        instants = upcoming(flow, start, until, jobs or None)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    rows: list[Instant] = []
    for instant, job in instants:
        schedule = flow.jobs[job].schedule
        job_zone = zoneinfo.ZoneInfo(schedule.timezone if schedule else flow.info.timezone)
        rows.append(Instant(instant, instant.astimezone(job_zone), job, job_zone.key))
    if output_format == "json":
        emit_json({"flow": flow.info.name, "from": start, "until": until, "instants": rows})
        return
    if not rows:
        click.echo("nothing is scheduled in that window")
        return
    table = Table(box=None, header_style="bold")
    for column in ("local time", "zone", "UTC", "job"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.local.strftime("%a %Y-%m-%d %H:%M:%S %Z"),
            row.timezone,
            row.at.strftime("%Y-%m-%d %H:%M:%S"),
            row.job,
        )
    make_console().print(table)
    click.echo(f"{len(rows)} instant(s)")


@dataclass(frozen=True, slots=True)
class Instant:
    at: datetime  # UTC
    local: datetime  # in the job's zone
    job: str
    timezone: str


def _moment(text: str, zone: zoneinfo.ZoneInfo, now: datetime, *, end_of_day: bool) -> datetime:
    """A date, a date and time (in `zone` unless it says its own), or a duration from now
    (`7d`, `12h`: the other way round from `runs --since`, which looks back)."""
    seconds = parse_duration(text.strip())
    if seconds is not None:
        return now + timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a date or time (2026-12-31, 2026-12-31T18:00) "
            "nor a duration from now (12h, 7d)"
        ) from None
    if len(text.strip()) <= 10 and end_of_day:  # a bare date: its last instant
        moment = datetime.combine(moment.date(), clock_time.max)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)
