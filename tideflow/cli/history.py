"""`tideflow runs`, `logs`, `flow-runs` and `status`: what the run history says.

Each takes `--state URL` (default: $TIDEFLOW_STATE, else `state.db` in the user's state
folder, whatever the current folder) and `--format json` for scripts; the default is a
readable table. These commands only read: without a store they say where they looked
and exit 2 (`status FILE` reads an empty history instead).
"""

from __future__ import annotations

import json
import zoneinfo
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tideflow.cli.common import (
    count_by_status,
    emit_json,
    format_option,
    job_schedule,
    load_flow,
    make_console,
    open_store,
    parse_since,
    state_option,
    status_text,
    to_jsonable,
    when,
)
from tideflow.compiler.ir import FlowIR
from tideflow.compiler.irjson import from_json
from tideflow.dsl.timetext import format_elapsed
from tideflow.runtime.model import AttemptRow, ErrorInfo, FlowRunRow, JobRunRow, RunStatus
from tideflow.runtime.schedule import next_fire
from tideflow.runtime.store import LiveOrchestrator, Store

__all__ = [
    "ConsumerStatus",
    "FlowStatus",
    "JobStatus",
    "flow_runs_command",
    "flow_status",
    "logs_command",
    "runs_command",
    "status_command",
]

LEVEL_STYLES: Mapping[str, str] = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}


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
            format_elapsed(row.duration),
            job_run_reason(row, errors),
        )
    console.print(table)


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


def _print_attempt(console: Console, item: AttemptRow, lines: Sequence[Any]) -> None:
    took = (item.finished_at - item.started_at).total_seconds() if item.finished_at else None
    title = Text(f"\nattempt {item.number}  ")
    title.append_text(status_text(item.status.value))
    title.append(f"  started {item.started_at.isoformat()}  took {format_elapsed(took)}")
    if item.exit_code is not None:
        title.append(f"  exit code {item.exit_code}")
    if item.pid:
        title.append(f"  pid {item.pid} on {item.host}")
    if item.executor is not None:
        title.append(f'  on executor "{item.executor}"')
        if item.executor_where:
            title.append(f" ({item.executor_where})")
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


# --- flow-runs ----------------------------------------------------------------------------


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
            format_elapsed(flow_run_seconds(row)),
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
    header.append(f"  took {format_elapsed(flow_run_seconds(run))}")
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
            format_elapsed(job.duration),
            job_run_reason(job, errors),
        )
    console.print(table)
    console.print(Text("`tideflow logs RUN` shows a job run's attempts and output", style="dim"))


# --- status -------------------------------------------------------------------------------


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
    # with several orchestrators on the flow: the one leading (the lease's holder), and
    # the live ones standing by
    leader: int | None = None
    standbys: list[int] = field(default_factory=list)


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
            schedule=job_schedule(job),
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
    leader = next(
        (lease.holder for lease in store.leases() if lease.led and name in lease.key.split(",")),
        None,
    )
    running = next((o for o in live if o.id == leader), live[0] if live else None)
    standbys = sorted(o.id for o in live if leader is not None and o.id != leader)
    return FlowStatus(
        name, running, jobs, last_flow_run, reason, consumers, leader=leader, standbys=standbys
    )


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
        role = "leader: " if item.leader is not None and running is not None else ""
        waiting = (
            f"; standing by: orchestrator {', '.join(str(i) for i in item.standbys)}"
            if item.standbys
            else ""
        )
        state = (
            Text(
                f"running ({role}orchestrator {running.id}, pid {running.pid} on "
                f"{running.host}{waiting})",
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
                format_elapsed(row.duration) if row else "-",
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
    return [from_json(record.ir) for record in store.flows()]
