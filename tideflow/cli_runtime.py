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
from tideflow.dsl.durations import parse_duration
from tideflow.runtime.model import AttemptRow, ErrorInfo, FlowRunRow, JobRunRow, RunStatus
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


PIPED_WIDTH = 10_000  # wider than any row: tables take only the width they need


def make_console(*, stderr: bool = False) -> Console:
    """A console for tables: the terminal's width, or an unbounded page when piped (so
    that `tideflow runs | grep failed` sees whole rows, never cut or folded).

    Markup and emoji codes are off: what it prints (names, notes, log lines, output)
    is user and job text, shown as it is (`[/tmp/x]`, `[secret]`, `:x:`); styles come
    only from `Text` objects."""
    console = Console(stderr=stderr, highlight=False, markup=False, emoji=False)
    if not console.is_terminal:
        console = Console(
            stderr=stderr, highlight=False, markup=False, emoji=False, width=PIPED_WIDTH
        )
    return console


def job_run_reason(row: JobRunRow, errors: Mapping[int, ErrorInfo]) -> str:
    """Why a job run ended as it did: its note (skipped, upstream failed, ...), else the
    error of its last failed attempt; empty when there is nothing to say."""
    if row.note:
        return row.note
    error = errors.get(row.id)
    if error is None or row.status is RunStatus.SUCCESS:
        return ""
    first = (error.message.strip().splitlines() or [""])[0]
    return f"{error.type}: {first}" if first else error.type


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
        errors = store.last_errors(r.id for r in rows if r.status is not RunStatus.SUCCESS)
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
        table.add_column(
            column, justify="right" if column in {"run", "attempts"} else "left", overflow="fold"
        )  # a cell folds, never cut
    table.add_column("reason", overflow="fold")
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
            job_run_reason(row, errors),
        )
    console.print(table)


@click.command("logs")
@click.argument("run_id", metavar="[RUN]", type=int, required=False)
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
    console.print(header, soft_wrap=True)
    if run.note:
        console.print(Text(f"  {run.note}"), soft_wrap=True)
    if not attempts:
        if run.status.finished:
            console.print("  it ended without an attempt")
        else:
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
        text = Text(f"{line.at.astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')} ")
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
    # soft_wrap: long lines are the terminal's to wrap, never cut or broken by us
    console.print(title, soft_wrap=True)
    if item.error is not None:
        where = f" in {item.error.function}" if item.error.function else ""
        at = f" ({item.error.location})" if item.error.location else ""
        message = f"  {item.error.type}: {item.error.message}{where}{at}"
        console.print(Text(message, style="red"), soft_wrap=True)
        console.print(Text(item.error.traceback.rstrip(), style="dim"), soft_wrap=True)
    for line in lines:
        stamp = line.at.astimezone().strftime("%H:%M:%S %Z")  # labelled: whose clock
        console.print(Text(f"  {stamp} {line.level:<7} {line.message}"), soft_wrap=True)
    for name, text in (("stdout", item.stdout), ("stderr", item.stderr)):
        if text:
            console.print(Text(f"  --- {name} ---", style="bold"))
            console.print(Text(text.rstrip("\n")), soft_wrap=True)


@click.command("flow-runs")
@click.argument("flow_run_id", metavar="[FLOW_RUN]", type=int, required=False)
@click.option("--flow", help="Only this flow.")
@click.option(
    "--status",
    type=click.Choice([s.value for s in RunStatus]),
    multiple=True,
    help="Only flow runs in this state (repeatable).",
)
@click.option("--since", help="Only flow runs created since: 5m, 2h, 1d, or a date.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@state_option
@format_option
def flow_runs_command(
    flow_run_id: int | None,
    flow: str | None,
    status: Sequence[str],
    since: str | None,
    limit: int,
    state_url: str | None,
    output_format: str,
) -> None:
    """List whole-flow runs, newest first; with FLOW_RUN, that one and its job runs."""
    if flow_run_id is not None:
        _show_flow_run(flow_run_id, state_url, output_format)
        return
    since_at = parse_since(since) if since else None
    with open_store(state_url) as store:
        rows = store.flow_runs(
            flow=flow,
            status=[RunStatus(s) for s in status] or None,
            since=since_at,
            limit=limit,
        )
        counts = store.job_run_counts(r.id for r in rows)
    if output_format == "json":
        emit_json(
            {
                "flow_runs": [
                    {**to_jsonable(r), "jobs": to_jsonable(counts.get(r.id, {}))} for r in rows
                ]
            }
        )
        return
    console = make_console()
    if not rows:
        console.print("no flow runs match" + (f" (since {since})" if since else ""))
        return
    table = Table(box=None, header_style="bold")
    for column in ("flow run", "flow", "root job", "status", "trigger", "started", "took"):
        table.add_column(
            column, justify="right" if column == "flow run" else "left", overflow="fold"
        )
    table.add_column("jobs", overflow="fold")
    now = datetime.now(UTC)
    for row in rows:
        tally = counts.get(row.id, {})
        table.add_row(
            str(row.id),
            row.flow,
            row.root_job,
            status_text(row.status.value),
            row.trigger.value,
            when(row.started_at or row.created_at, now),
            duration(flow_run_seconds(row)),
            ", ".join(f"{n} {s.value}" for s, n in sorted(tally.items())) or "-",
        )
    console.print(table)


def flow_run_seconds(row: FlowRunRow) -> float | None:
    if row.started_at is None or row.finished_at is None:
        return None
    return (row.finished_at - row.started_at).total_seconds()


def flow_run_reason(jobs: Sequence[JobRunRow], errors: Mapping[int, ErrorInfo]) -> str:
    """Which of a flow run's jobs failed, and why: `transform failed (KeyError: 'sku')`."""
    parts = []
    for job in sorted(jobs, key=lambda r: r.id):
        if job.status in {RunStatus.FAILED, RunStatus.CANCELLED}:
            reason = job_run_reason(job, errors)
            parts.append(f"{job.job} {job.status.value}" + (f" ({reason})" if reason else ""))
    return "; ".join(parts)


def _show_flow_run(flow_run_id: int, state_url: str | None, output_format: str) -> None:
    with open_store(state_url) as store:
        run = store.flow_run(flow_run_id)
        if run is None:
            raise click.ClickException(f"no flow run {flow_run_id} (see `tideflow flow-runs`)")
        jobs = sorted(store.job_runs(flow_run_id=flow_run_id, limit=None), key=lambda r: r.id)
        errors = store.last_errors(r.id for r in jobs if r.status is not RunStatus.SUCCESS)
    if output_format == "json":
        emit_json(
            {
                "flow_run": run,
                "reason": flow_run_reason(jobs, errors) or None,
                "job_runs": [
                    {**to_jsonable(j), "reason": job_run_reason(j, errors) or None} for j in jobs
                ],
            }
        )
        return
    console = make_console()
    now = datetime.now(UTC)
    header = Text(f"flow run {run.id}  {run.flow} (from {run.root_job})  ")
    header.append_text(status_text(run.status.value))
    header.append(f"  trigger {run.trigger.value}")
    if run.scheduled_at:
        header.append(f"  scheduled {run.scheduled_at.isoformat()}")
    header.append(f"  started {when(run.started_at or run.created_at, now)}")
    header.append(f"  took {duration(flow_run_seconds(run))}")
    console.print(header, soft_wrap=True)
    if run.params:
        params = json.dumps(run.params, ensure_ascii=False, sort_keys=True)
        console.print(Text(f"params {params}"), soft_wrap=True)
    reason = flow_run_reason(jobs, errors)
    if reason:
        console.print(Text(reason, style="red"), soft_wrap=True)
    table = Table(box=None, header_style="bold")
    for column in ("run", "job", "status", "attempts", "started", "took"):
        table.add_column(
            column, justify="right" if column in {"run", "attempts"} else "left", overflow="fold"
        )  # a cell folds, never cut
    table.add_column("reason", overflow="fold")
    for job in jobs:
        table.add_row(
            str(job.id),
            job.job,
            status_text(job.status.value),
            str(job.attempts),
            when(job.started_at, now) if job.started_at else "-",
            duration(job.duration),
            job_run_reason(job, errors),
        )
    console.print(table)
    console.print(Text("`tideflow logs RUN` shows a job run's attempts and output", style="dim"))


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


@click.group("requests")
def requests_command() -> None:
    """Trigger requests that no orchestrator has taken yet.

    `tideflow trigger` leaves a request in the state store; the orchestrator running
    the flow takes it within a second. One given while none runs waits, and fires
    when `tideflow run` starts: list those here, and withdraw the ones not wanted.
    """


@requests_command.command("list")
@click.option("--flow", help="Only this flow.")
@state_option
@format_option
def requests_list_command(flow: str | None, state_url: str | None, output_format: str) -> None:
    """Pending trigger requests, oldest first."""
    with open_store(state_url) as store:
        pending = store.pending_trigger_requests(flow)
    if output_format == "json":
        emit_json({"requests": pending})
        return
    console = make_console()
    if not pending:
        console.print("no trigger request is waiting" + (f" for flow {flow}" if flow else ""))
        return
    table = Table(box=None, header_style="bold")
    for column in ("request", "flow", "job", "trigger", "requested", "by"):
        table.add_column(
            column, justify="right" if column == "request" else "left", overflow="fold"
        )
    table.add_column("params", overflow="fold")
    now = datetime.now(UTC)
    for request in pending:
        table.add_row(
            str(request.id),
            request.flow,
            request.job,
            request.trigger.value,
            when(request.requested_at, now),
            request.requested_by,
            json.dumps(request.params, ensure_ascii=False, sort_keys=True)
            if request.params
            else "",
        )
    console.print(table)


@requests_command.command("cancel")
@click.argument("request_ids", metavar="REQUEST...", type=int, nargs=-1, required=True)
@state_option
def requests_cancel_command(request_ids: Sequence[int], state_url: str | None) -> None:
    """Withdraw pending trigger requests so that they never fire."""
    refused: list[int] = []
    with open_store(state_url) as store:
        for request_id in request_ids:
            if store.withdraw_trigger_request(request_id):
                click.echo(f"request {request_id} withdrawn")
            else:
                refused.append(request_id)
    if refused:
        listed = ", ".join(str(n) for n in refused)
        raise click.ClickException(
            f"no pending request {listed}: taken by an orchestrator already, or unknown "
            "(see `tideflow requests list`)"
        )


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
