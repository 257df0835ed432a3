"""CLI commands that read and steer run history: runs, logs, status, trigger, cancel.

Each takes `--state URL` (default: $TIDEFLOW_STATE, else `state.db` in the user's state
folder, whatever the current folder) and `--format json` for scripts; the default is a
readable table. Commands that only read never create a store: without one they say
where they looked and exit 2.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tideflow.cli import UsageProblem
from tideflow.dsl.parser import parse_duration
from tideflow.runtime.model import AttemptRow, JobRunRow, RunStatus
from tideflow.runtime.store import STATE_ENV, Store, StoreError, StoreNotFound

F = TypeVar("F", bound=Callable[..., Any])

STATUS_STYLES: Mapping[str, str] = {
    "success": "green",
    "failed": "bold red",
    "running": "cyan",
    "retrying": "yellow",
    "queued": "blue",
    "pending": "dim",
    "skipped": "dim",
    "cancelled": "magenta",
    "timeout": "red",
    "crashed": "bold red",
    "lost": "red",
    "interrupted": "magenta",
}


def state_option(func: F) -> F:
    return click.option(
        "--state",
        "state_url",
        metavar="URL",
        default=None,
        help="State store: a SQLite path or a postgresql:// URL "
        "(default: $TIDEFLOW_STATE, else state.db in the user's state folder, "
        "~/.local/state/tideflow on Linux).",
    )(func)


def format_option(func: F) -> F:
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="Output format.",
    )(func)


@contextmanager
def open_store(
    url: str | None, *, create: bool = False, empty_if_missing: bool = False
) -> Iterator[Store]:
    """The store `url` names (see `resolve_url`). Only commands that write (`run`,
    `trigger`) pass `create`: a reading command without a store says so (exit 2), or,
    with `empty_if_missing` (it has a flow file to say something about), notes it on
    stderr and reads an empty history."""
    try:
        store = Store.open(url, create=create)
    except StoreNotFound as exc:
        if not empty_if_missing:
            raise UsageProblem(_not_found(str(exc), url)) from exc
        store = empty_store(exc, url)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        yield store
    finally:
        store.close()


def empty_store(missing: StoreNotFound, url: str | None) -> Store:
    """For a command given a flow file but no store: a note on stderr, and an empty
    history in memory (nothing is written anywhere)."""
    click.echo(f"note: {_not_found(str(missing), url)}", err=True)
    return Store.open("sqlite://")


def _not_found(message: str, url: str | None) -> str:
    text = (
        f"{message}: nothing has run with it yet (`tideflow run FILE` creates it); "
        f"--state or ${STATE_ENV} name another"
    )
    legacy = Path(".tideflow", "state.db")
    if url is None and not os.environ.get(STATE_ENV) and legacy.exists():
        # tideflow kept the store in the current folder before it had a per-user default
        text += f"; this folder has an older one: --state {legacy}"
    return text


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`5m`, `2h`, `1d` ago, or an ISO date/time (UTC when no zone is given)."""
    now = now or datetime.now(UTC)
    seconds = parse_duration(text)
    if seconds is not None:
        return now - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration (5m, 2h, 1d) nor a date (2026-11-22T10:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def when(moment: datetime | None, now: datetime | None = None, zone: tzinfo | None = None) -> str:
    """A time as people read it in a table: the clock time in `zone` (default: this
    machine's), labelled with the zone, and how long ago: `00:30:00 EST (in 5h)`."""
    if moment is None:
        return "-"
    now = now or datetime.now(UTC)
    local = moment.astimezone(zone)
    delta = (now - moment).total_seconds()
    shape = "%H:%M:%S %Z" if abs(delta) < 86400 else "%Y-%m-%d %H:%M %Z"
    return f"{local.strftime(shape)} ({human_delta(delta)})"


def human_delta(seconds: float) -> str:
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 1:
        text = "now"
    elif seconds < 90:
        text = f"{seconds:.0f}s"
    elif seconds < 5400:
        text = f"{seconds / 60:.0f}m"
    elif seconds < 129600:
        text = f"{seconds / 3600:.0f}h"
    else:
        text = f"{seconds / 86400:.0f}d"
    if text == "now":
        return text
    return f"in {text}" if future else f"{text} ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def make_console(*, stderr: bool = False) -> Console:
    """A console for tables: the terminal's width, or a wide page when piped (so
    that `tideflow runs | grep failed` sees whole rows)."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=160)
    return console


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def to_jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    click.echo(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False))


# --- commands --------------------------------------------------------------------------


@click.command("runs")
@click.option("--flow", help="Only this flow.")
@click.option("--job", help="Only this job.")
@click.option(
    "--status",
    type=click.Choice([s.value for s in RunStatus]),
    multiple=True,
    help="Only runs in this state (repeatable).",
)
@click.option("--since", help="Only runs created since: 5m, 2h, 1d, or a date.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@state_option
@format_option
def runs_command(
    flow: str | None,
    job: str | None,
    status: Sequence[str],
    since: str | None,
    limit: int,
    state_url: str | None,
    output_format: str,
) -> None:
    """List job runs, newest first."""
    since_at = parse_since(since) if since else None
    with open_store(state_url) as store:
        rows = store.job_runs(
            flow=flow,
            job=job,
            status=[RunStatus(s) for s in status] or None,
            since=since_at,
            limit=limit,
        )
        location = store.location
    if output_format == "json":
        emit_json({"runs": rows})
        return
    console = make_console()
    if not rows:
        window = f" (since {since})" if since else ""
        console.print(Text(f"no runs match{window} in the state store at {location}"))
        return
    table = Table(box=None, header_style="bold")
    for column in ("run", "flow", "job", "status", "trigger", "attempts", "started", "took"):
        table.add_column(column, justify="right" if column in {"run", "attempts"} else "left")
    now = datetime.now(UTC)
    for row in rows:
        table.add_row(
            str(row.id),
            row.flow,
            row.job,
            status_text(row.status.value),
            row.trigger.value,
            str(row.attempts),
            when(row.started_at or row.created_at, now),
            duration(row.duration),
        )
    console.print(table)


@click.command("logs")
@click.argument("run_id", metavar="RUN", type=int)
@click.option("--attempt", type=click.IntRange(1), help="Only this attempt (default: all).")
@click.option(
    "--consumer",
    "consumer",
    metavar="NAME",
    help="Show what this consumer's instances logged instead of a job run's output.",
)
@click.option("--flow", "flow", metavar="NAME", help="With --consumer: only this flow's.")
@click.option("--instance", metavar="ID", help="With --consumer: only this instance's lines.")
@click.option(
    "--lines",
    "line_count",
    type=click.IntRange(1),
    default=200,
    show_default=True,
    help="With --consumer: the newest this many lines.",
)
@state_option
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
def logs_command(
    run_id: int | None,
    attempt: int | None,
    consumer: str | None,
    flow: str | None,
    instance: str | None,
    line_count: int,
    state_url: str | None,
    output_format: str,
) -> None:
    """Show a job run's attempts: output, log lines and, for failures, the traceback;
    or, with --consumer, the lines a consumer's instances logged (its handler's
    `ctx.logger` and the instances' own: started, dead-lettered, stopped)."""
    if consumer is not None:
        if run_id is not None or attempt is not None:
            raise click.UsageError("give a RUN or --consumer, not both")
        _consumer_logs(consumer, flow, instance, line_count, state_url, output_format)
        return
    if run_id is None:
        raise click.UsageError("give a job run's number (see `tideflow runs`) or --consumer NAME")
    with open_store(state_url) as store:
        run = store.job_run(run_id)
        if run is None:
            raise click.ClickException(f"no run {run_id} (see `tideflow runs`)")
        attempts = store.attempts(run_id)
        if attempt is not None:
            attempts = [a for a in attempts if a.number == attempt]
            if not attempts:
                raise click.ClickException(f"run {run_id} has no attempt {attempt}")
        lines = {a.id: store.logs(a.id) for a in attempts}
    if output_format == "json":
        emit_json(
            {
                "run": run,
                "attempts": [{**to_jsonable(a), "logs": lines[a.id]} for a in attempts],
            }
        )
        return
    console = make_console()
    header = Text(f"run {run.id}  {run.flow}.{run.job}  ")
    header.append_text(status_text(run.status.value))
    header.append(f"  trigger {run.trigger.value}")
    if run.scheduled_at:
        header.append(f"  scheduled {run.scheduled_at.isoformat()}")
    console.print(header)
    if not attempts:
        console.print("  no attempt has started yet")
    for item in attempts:
        _print_attempt(console, item, lines[item.id])


def _consumer_logs(
    consumer: str,
    flow: str | None,
    instance: str | None,
    count: int,
    state_url: str | None,
    output_format: str,
) -> None:
    with open_store(state_url) as store:
        lines = store.consumer_logs(flow, consumer, instance_id=instance, limit=count)
    if output_format == "json":
        emit_json({"consumer": consumer, "flow": flow, "lines": lines})
        return
    console = make_console()
    if not lines:
        where = f' of flow "{flow}"' if flow else ""
        console.print(Text(f'consumer "{consumer}"{where} has logged nothing yet'))
        return
    for line in lines:
        text = Text(f"{line.at.astimezone().strftime('%Y-%m-%d %H:%M:%S')} ")
        text.append(f"{line.level:<7} ", style=LEVEL_STYLES.get(line.level, ""))
        text.append(f"[{line.instance_id}] ", style="dim")
        text.append(line.message)
        console.print(text, soft_wrap=True)


LEVEL_STYLES: Mapping[str, str] = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}


def _print_attempt(console: Console, item: AttemptRow, lines: Sequence[Any]) -> None:
    took = (item.finished_at - item.started_at).total_seconds() if item.finished_at else None
    title = Text(f"\nattempt {item.number}  ")
    title.append_text(status_text(item.status.value))
    title.append(f"  started {item.started_at.isoformat()}  took {duration(took)}")
    if item.exit_code is not None:
        title.append(f"  exit code {item.exit_code}")
    if item.pid:
        title.append(f"  pid {item.pid} on {item.host}")
    console.print(title)
    if item.error is not None:
        where = f" in {item.error.function}" if item.error.function else ""
        at = f" ({item.error.location})" if item.error.location else ""
        console.print(Text(f"  {item.error.type}: {item.error.message}{where}{at}", style="red"))
        console.print(Text(item.error.traceback.rstrip(), style="dim"))
    for line in lines:
        console.print(
            f"  {line.at.astimezone().strftime('%H:%M:%S')} {line.level:<7} {line.message}"
        )
    for name, text in (("stdout", item.stdout), ("stderr", item.stderr)):
        if text:
            console.print(Text(f"  --- {name} ---", style="bold"))
            console.print(Text(text.rstrip("\n")))


@click.command("cancel")
@click.argument("run_id", metavar="RUN", type=int)
@state_option
def cancel_command(run_id: int, state_url: str | None) -> None:
    """Ask the orchestrator to cancel a running or waiting job run."""
    with open_store(state_url) as store:
        run = store.job_run(run_id)
        if run is None:
            raise click.ClickException(f"no run {run_id} (see `tideflow runs`)")
        if not store.request_cancel(run_id):
            raise click.ClickException(f"run {run_id} has already finished ({run.status.value})")
    click.echo(f"cancellation of run {run_id} ({run.flow}.{run.job}) requested")


def count_by_status(
    counts: Mapping[tuple[str, str, RunStatus], int], flow: str
) -> dict[str, Counter[str]]:
    by_job: dict[str, Counter[str]] = {}
    for (count_flow, job, status), n in counts.items():
        if count_flow == flow:
            by_job.setdefault(job, Counter())[status.value] += n
    return by_job


def last_runs_rows(runs: Mapping[str, JobRunRow]) -> dict[str, dict[str, Any]]:
    return {
        job: {
            "run": row.id,
            "status": row.status.value,
            "started_at": row.started_at,
            "finished_at": row.finished_at,
        }
        for job, row in runs.items()
    }


def wait_for_run(store: Store, request_id: int, timeout: float) -> int | None:
    """Poll until the orchestrator has started the requested run; its flow run id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _claimed, flow_run_id = store.trigger_request_run(request_id)
        if flow_run_id is not None:
            return flow_run_id
        time.sleep(0.2)
    return None
