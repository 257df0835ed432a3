"""CLI commands that run flows: run, trigger, status, upcoming."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
import zoneinfo
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import time as clock_time
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tideflow.cli import load_flow
from tideflow.cli_runtime import (
    count_by_status,
    duration,
    emit_json,
    flow_run_reason,
    format_option,
    human_delta,
    make_console,
    open_store,
    parse_since,
    state_option,
    status_text,
    wait_for_run,
    when,
)
from tideflow.compiler.describe import describe_schedule
from tideflow.compiler.ir import FlowIR, JobNode
from tideflow.dsl.durations import parse_duration
from tideflow.dsl.suggest import suggest
from tideflow.runtime import redaction
from tideflow.runtime.model import FlowRunRow, JobRunRow, RunStatus
from tideflow.runtime.orchestrator import Orchestrator, OrchestratorError
from tideflow.runtime.schedule import next_fire, upcoming
from tideflow.runtime.secrets import flow_secret_values
from tideflow.runtime.store import LiveOrchestrator, Store


def parse_seconds(text: str) -> float:
    """A duration as the language writes it (`30s`, `2m`, `500ms`, `1h30m`), or a plain
    number of seconds."""
    seconds = parse_duration(text, bare_seconds=True)
    if seconds is not None:
        return seconds
    if text.strip().startswith("-"):
        raise click.BadParameter("a duration cannot be negative")
    raise click.BadParameter(f"{text!r} is not a duration such as 30s, 2m or 500ms")


def _job_schedule(job: JobNode) -> str:
    """What starts `job`, as the status tables say it (`every 90s`, `cron 0 2 * * * Europe/Paris`,
    `after extract`, `manual`)."""
    if job.schedule is None:
        return f"after {', '.join(job.after)}" if job.after else "manual"
    return describe_schedule(job.schedule, interval=_interval, zone=" {}", show_utc=False)


def _interval(seconds: float) -> str:
    return f"{seconds:g}s" if seconds < 120 else duration(seconds)


# --- run ---------------------------------------------------------------------------------


@click.command("run")
@click.argument("files", metavar="FILE...", nargs=-1, required=True)
@state_option
@click.option(
    "--grace",
    default="30s",
    show_default=True,
    help="On stop, how long running attempts may finish before they are killed.",
)
@click.option("--duration", "run_for", help="Stop by itself after this long (e.g. 60s).")
@click.option(
    "--check-imports/--no-check-imports",
    default=True,
    show_default=True,
    help="Before anything fires, import each job's and consumer's `run` function and "
    "check how it is called (as `lint --check-imports` does).",
)
@click.option("--live/--no-live", default=None, help="Live view (default: on a terminal).")
@click.option("--ui", is_flag=True, help="Serve the dashboard beside the orchestrator.")
@click.option("--ui-host", default="127.0.0.1", show_default=True, help="Dashboard address.")
@click.option("--ui-port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option(
    "--ui-token",
    envvar="TIDEFLOW_UI_TOKEN",
    help="Token the dashboard asks for (required to listen beyond 127.0.0.1).",
)
def run_command(
    files: Sequence[str],
    state_url: str | None,
    grace: str,
    run_for: str | None,
    check_imports: bool,
    live: bool | None,
    ui: bool,
    ui_host: str,
    ui_port: int,
    ui_token: str | None,
) -> None:
    """Run the flows in FILE...: fire schedules, run jobs, take triggers, until Ctrl-C.

    SIGINT or SIGTERM stops gracefully: nothing new starts; running attempts get
    --grace to finish, then are killed and recorded as interrupted. A second
    signal stops at once.
    """
    flows = [load_flow(file, warnings=True, check_imports=check_imports) for file in files]
    flow_secret_values(flows)  # remembered: from now on, no log line shows one
    grace_seconds = parse_seconds(grace)
    stop_after = parse_seconds(run_for) if run_for else None
    console = Console(stderr=True, markup=False, emoji=False)  # flow and job names as they are
    use_live = console.is_terminal if live is None else live
    _configure_logging(console, use_live)
    dashboard = _Dashboard(ui_host, ui_port, ui_token) if ui else None
    if dashboard is not None:
        dashboard.check()
    with open_store(state_url, create=True) as store:
        console.print(f"state store: {store.location}", soft_wrap=True)
        orchestrator = Orchestrator(flows, store, grace=grace_seconds)
        try:
            asyncio.run(_run(orchestrator, console, use_live, stop_after, dashboard))
        except OrchestratorError as exc:
            raise click.ClickException(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class _Dashboard:
    host: str
    port: int
    token: str | None

    def check(self) -> None:
        from tideflow.web import UnsafeBindError, check_bind

        try:
            check_bind(self.host, self.token)
        except UnsafeBindError as exc:
            raise click.UsageError(str(exc)) from exc

    async def serve(self, store: Store, console: Console) -> None:
        from tideflow.web import create_app, serve

        app = create_app(None, token=self.token, store=store)
        console.print(f"dashboard on http://{self.host}:{self.port}/")
        await serve(app, self.host, self.port)


def _configure_logging(console: Console, live: bool) -> None:
    if live:  # through the live view's console, so lines print above the view
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=console, show_path=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S %Z")
        )
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # the live view, or the line per finished job run, says what these would;
    # consumer instances' own chatter stays with them unless it is a warning
    for name in ("tideflow.executor", "tideflow.worker"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if live:
        logging.getLogger("tideflow").setLevel(logging.WARNING)
    # after the levels above, so that TIDEFLOW_LOG may lift them
    redaction.configure()


async def _run(
    orchestrator: Orchestrator,
    console: Console,
    live: bool,
    stop_after: float | None,
    dashboard: _Dashboard | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            console.print("stopping: running attempts may finish (signal again to stop now)")
            stop.set()
        elif main is not None:
            main.cancel()

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, on_signal)
    if stop_after is not None:
        loop.call_later(stop_after, stop.set)
    stopped = asyncio.Event()  # set once the orchestrator has wound down
    watcher = asyncio.create_task(_watch(orchestrator, console, live, stopped))
    ui = (
        None
        if dashboard is None
        else asyncio.create_task(dashboard.serve(orchestrator.store, console))
    )
    try:
        await orchestrator.run(stop)
    finally:
        stopped.set()
        if ui is not None:
            ui.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ui
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _watch(
    orchestrator: Orchestrator, console: Console, live: bool, stop: asyncio.Event
) -> None:
    """The live view on a terminal; elsewhere one line per finished job run."""
    store = orchestrator.store
    started = time.monotonic()
    seen = max((r.id for r in store.job_runs(limit=1)), default=0)
    if live:
        with Live(console=console, refresh_per_second=2, transient=False) as view:
            while not stop.is_set():
                view.update(_live_view(orchestrator, time.monotonic() - started, console.width))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
            view.update(_live_view(orchestrator, time.monotonic() - started, console.width))
        return
    while True:
        stopping = stop.is_set()
        finished = [
            r for r in reversed(store.job_runs(limit=200)) if r.id > seen and r.status.finished
        ]
        for row in finished:
            seen = max(seen, row.id)
            took = f" in {duration(row.duration)}" if row.duration is not None else ""
            note = f" ({row.note})" if row.note else ""
            stamp = datetime.now().astimezone().strftime("%H:%M:%S %Z")
            click.echo(
                f"{stamp} {row.flow}.{row.job} run {row.id} {row.status.value}{took}{note}",
                err=True,
            )
        if stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def _live_view(orchestrator: Orchestrator, uptime: float, width: int) -> Group:
    store = orchestrator.store
    now = datetime.now(UTC)
    fires = orchestrator.next_fires()
    since = now - timedelta(hours=1)
    counts = store.status_counts(since=since)
    header = Text.assemble(
        ("tideflow ", "bold"),
        f"orchestrator {orchestrator.id}  up {duration(uptime)}  ",
        ("Ctrl-C to stop", "dim"),
    )
    parts: list[Any] = [header]
    for flow in orchestrator.flows:
        name = flow.info.name
        last = store.last_job_runs(name)
        per_job = count_by_status(counts, name)
        table = Table(title=f"flow {name}", title_justify="left", box=None, header_style="bold")
        rows: list[tuple[str, str, str, Text, str, str]] = []
        for job in sorted(flow.jobs.values(), key=lambda j: (j.schedule is None, j.name)):
            row = last.get(job.name)
            last_cell = Text("-")
            if row is not None:
                last_cell = status_text(row.status.value)
                last_cell.append(
                    f" {when(row.finished_at or row.started_at or row.created_at, now)}"
                )
            fire = fires.get((name, job.name))
            tally = per_job.get(job.name)
            rows.append(
                (
                    job.name,
                    _job_schedule(job),
                    human_delta((now - fire).total_seconds()) if fire else "-",
                    last_cell,
                    duration(row.duration) if row else "-",
                    " ".join(f"{n} {s}" for s, n in sorted(tally.items())) if tally else "-",
                )
            )
        # in a narrow terminal a cell wraps between words and is never cut with "…": each
        # column is as wide as its longest word when they all fit (else a word folds)
        columns = ("job", "when", "next", "last run", "took", "last hour")
        widest = [
            max(len(word) for word in (column, *(w for r in rows for w in str(r[i]).split())))
            for i, column in enumerate(columns)
        ]
        fits = sum(widest) + 2 * len(columns) <= width
        for column, least in zip(columns, widest, strict=True):
            table.add_column(column, overflow="fold", min_width=least if fits else None)
        for cells in rows:
            table.add_row(*cells)
        parts.append(table)
    return Group(*parts)


# --- trigger -----------------------------------------------------------------------------


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """`k=v` pairs; a value that reads as JSON (numbers, true, lists) is taken as such."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--param")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


@click.command("trigger")
@click.argument("file", metavar="FILE")
@click.argument("job", metavar="JOB")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--wait", is_flag=True, help="Wait for the run to finish; exit 1 if it failed.")
@click.option("--timeout", default="10m", show_default=True, help="How long --wait waits.")
@state_option
def trigger_command(
    file: str,
    job: str,
    params: Sequence[str],
    wait: bool,
    timeout: str,
    state_url: str | None,
) -> None:
    """Start JOB of the flow in FILE now (and what is downstream of it).

    The request goes through the state store to the orchestrator running the
    flow (`tideflow run FILE`), the same path as the schedules.
    """
    flow = load_flow(file)
    name = flow.info.name
    if job not in flow.jobs:
        close = suggest(job, flow.jobs)
        hint = f"; {close}" if close else ""
        raise click.ClickException(f'flow "{name}" has no job `{job}`{hint}')
    values = parse_params(params)
    limit = parse_seconds(timeout)
    # a request may wait for an orchestrator that has not started yet: it creates the store
    with open_store(state_url, create=True) as store:
        request = store.request_trigger(name, job, params=values)
        running = store.live_orchestrators([name], 30.0)
        if not running:
            click.echo(
                f"requested (request {request}); no orchestrator is running flow {name!r} now: "
                f"the run starts when `tideflow run {file}` does"
            )
            if not wait:
                click.echo(
                    f"(`tideflow requests list` shows waiting requests; "
                    f"`tideflow requests cancel {request}` withdraws this one)"
                )
                return
        flow_run = wait_for_run(store, request, limit if wait else 5.0)
        if flow_run is None:
            if wait and store.withdraw_trigger_request(request):
                # the caller was told it failed: it must not fire later by surprise
                click.echo(
                    f"request {request} withdrawn: no orchestrator took it within {duration(limit)}"
                )
                sys.exit(1)
            click.echo(f"requested (request {request}); not started yet")
            sys.exit(1 if wait else 0)
        click.echo(f"flow run {flow_run} started: {name}.{job}")
        if wait:
            sys.exit(_wait_for_flow_run(store, flow_run, limit))


def _wait_for_flow_run(store: Store, flow_run: int, limit: float) -> int:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        row = store.flow_run(flow_run)
        if row is not None and row.status.finished:
            for job_run in reversed(store.job_runs(flow_run_id=flow_run, limit=None)):
                click.echo(f"  run {job_run.id} {job_run.job}: {job_run.status.value}")
            click.echo(f"flow run {flow_run} {row.status.value}")
            return 0 if row.status is RunStatus.SUCCESS else 1
        time.sleep(0.2)
    click.echo(f"flow run {flow_run} has not finished within {duration(limit)}")
    return 1


# --- status ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobStatus:
    job: str
    schedule: str
    next_run: datetime | None
    last_run: JobRunRow | None
    counts: dict[str, int]
    timezone: str | None = None  # the schedule's: where its next run is shown


@dataclass(frozen=True, slots=True)
class ConsumerStatus:
    consumer: str
    instances: int  # alive now
    dead_letter: str | None  # its dead-letter topic (None: failed messages are dropped)
    dead_lettered: int  # messages given up on, in the window
    dead_lettered_total: int


@dataclass(frozen=True, slots=True)
class FlowStatus:
    flow: str
    orchestrator: LiveOrchestrator | None  # the live orchestrator running it, if any
    jobs: list[JobStatus]
    last_flow_run: FlowRunRow | None = None
    last_flow_run_reason: str | None = None  # which jobs failed, and why
    consumers: list[ConsumerStatus] = field(default_factory=list)


def consumer_statuses(store: Store, flow: FlowIR, since: datetime) -> list[ConsumerStatus]:
    """Each consumer's live instances and dead letters (in the window, and in all)."""
    name = flow.info.name
    total = store.dead_letter_counts(flow=name)
    recent = store.dead_letter_counts(flow=name, since=since)
    alive = Counter(row.consumer for row in store.instances(flow=name, alive_within=30.0))
    return [
        ConsumerStatus(
            consumer.name,
            alive[consumer.name],
            consumer.dead_letter,
            recent.get((name, consumer.name), 0),
            total.get((name, consumer.name), 0),
        )
        for consumer in sorted(flow.consumers.values(), key=lambda c: c.name)
    ]


def flow_status(store: Store, flow: FlowIR, since: datetime, now: datetime) -> FlowStatus:
    name = flow.info.name
    last = store.last_job_runs(name)
    per_job = count_by_status(store.status_counts(flow=name, since=since), name)
    live = store.live_orchestrators([name], 30.0)
    jobs = [
        JobStatus(
            job=job.name,
            schedule=_job_schedule(job),
            next_run=next_fire(job.schedule, now) if job.schedule else None,
            last_run=last.get(job.name),
            counts=dict(per_job.get(job.name, {})),
            timezone=job.schedule.timezone if job.schedule else None,
        )
        for job in sorted(flow.jobs.values(), key=lambda j: j.name)
    ]
    last_flow_run = next(iter(store.flow_runs(flow=name, limit=1)), None)
    reason = None
    if last_flow_run is not None and last_flow_run.status is not RunStatus.SUCCESS:
        job_runs = store.job_runs(flow_run_id=last_flow_run.id, limit=None)
        errors = store.last_errors(r.id for r in job_runs if r.status is not RunStatus.SUCCESS)
        reason = flow_run_reason(job_runs, errors) or None
    consumers = consumer_statuses(store, flow, since)
    return FlowStatus(name, live[0] if live else None, jobs, last_flow_run, reason, consumers)


@click.command("status")
@click.argument("file", metavar="[FILE]", required=False)
@click.option("--since", default="24h", show_default=True, help="Window for the counts.")
@state_option
@format_option
def status_command(file: str | None, since: str, state_url: str | None, output_format: str) -> None:
    """Last and next run of each job, and runs by status over a window.

    With FILE, the flow in it; without, every flow in the state store.
    """
    since_at = parse_since(since)
    now = datetime.now(UTC)
    with open_store(state_url, empty_if_missing=file is not None) as store:
        flows = [load_flow(file)] if file else _stored_flows(store)
        if not flows:
            raise click.ClickException(
                f"the state store at {store.location} holds no flow yet; give a FILE"
            )
        report = [flow_status(store, flow, since_at, now) for flow in flows]
    if output_format == "json":
        emit_json({"since": since_at, "flows": report})
        return
    console = make_console()
    for item in report:
        running = item.orchestrator
        state = (
            Text(
                f"running (orchestrator {running.id}, pid {running.pid} on {running.host})",
                style="green",
            )
            if running
            else Text("not running", style="yellow")
        )
        console.print(Text.assemble((f"flow {item.flow}  ", "bold"), state), soft_wrap=True)
        if item.last_flow_run is not None:
            console.print(_last_flow_run_line(item.last_flow_run, item.last_flow_run_reason, now))
        table = Table(box=None, header_style="bold")
        for column in ("job", "when", "last run", "took", "next run", f"since {since}"):
            table.add_column(column, overflow="fold")  # a narrow terminal folds, never cuts
        for job in item.jobs:
            row = job.last_run
            last_cell = Text("-")
            if row is not None:
                last_cell = status_text(row.status.value)
                moment = row.finished_at or row.started_at or row.created_at
                last_cell.append(f" {when(moment, now)}")
            table.add_row(
                job.job,
                job.schedule,
                last_cell,
                duration(row.duration) if row else "-",
                when(job.next_run, now, _zone(job.timezone)) if job.next_run else "-",
                " ".join(f"{n} {s}" for s, n in sorted(job.counts.items())) or "-",
            )
        console.print(table)
        if item.consumers:
            console.print(_consumers_table(item.consumers, since))


def _consumers_table(consumers: Sequence[ConsumerStatus], since: str) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("consumer", "instances", f"dead-lettered since {since}", "in all", "to"):
        table.add_column(column, justify="right" if column in {"instances", "in all"} else "left")
    for item in consumers:
        recent = Text(str(item.dead_lettered), style="red" if item.dead_lettered else "")
        if item.dead_lettered and item.dead_letter is not None:
            recent.append("  (see tideflow dlq list)", style="dim")
        table.add_row(
            Text(item.consumer),
            str(item.instances),
            recent,
            str(item.dead_lettered_total),
            Text(item.dead_letter or "(dropped)"),
        )
    return table


def _last_flow_run_line(run: FlowRunRow, reason: str | None, now: datetime) -> Text:
    line = Text(f"last flow run {run.id} (from {run.root_job}): ")
    line.append_text(status_text(run.status.value))
    line.append(f" {when(run.finished_at or run.started_at or run.created_at, now)}")
    if reason:
        line.append(f": {reason}", style="red")
    line.append(f"  (tideflow flow-runs {run.id})", style="dim")
    return line


def _zone(name: str | None) -> tzinfo | None:
    """A schedule's zone (its next run is shown on its own wall clock)."""
    return zoneinfo.ZoneInfo(name) if name else None


def _stored_flows(store: Store) -> list[FlowIR]:
    from tideflow.compiler.irjson import from_json

    return [from_json(record.ir) for record in store.flows()]


# --- upcoming ----------------------------------------------------------------------------


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
