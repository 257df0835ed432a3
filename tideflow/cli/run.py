"""`tideflow run FILE...`: the orchestrator in the foreground, with its live view and,
with `--ui`, the dashboard beside it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from tideflow.cli.common import (
    count_by_status,
    job_schedule,
    load_flow,
    open_store,
    parse_seconds,
    state_option,
    status_text,
    when,
)
from tideflow.dsl.timetext import format_elapsed, human_delta
from tideflow.runtime import redaction
from tideflow.runtime.orchestrator import Orchestrator, OrchestratorError, Role
from tideflow.runtime.secrets import flow_secret_values
from tideflow.runtime.store import Store, StoreError

__all__ = ["run_command"]


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
    "--lease",
    default="10s",
    show_default=True,
    envvar="TIDEFLOW_LEASE",
    show_envvar=True,
    help="With several orchestrators on the same flows and store: how long the leader's "
    "lease lasts unrenewed; a standby takes over within about this long after the "
    "leader dies.",
)
@click.option(
    "--renew",
    default="2s",
    show_default=True,
    envvar="TIDEFLOW_RENEW",
    show_envvar=True,
    help="How often the leader renews its lease (shorter than --lease); a standby looks "
    "at the lease four times as often.",
)
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
    lease: str,
    renew: str,
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

    Started several times on the same FILEs and the same --state (on one host with
    SQLite, on several with PostgreSQL), one orchestrator leads and the others stand
    by; a standby takes over when the leader dies (after --lease) or stops (at once).
    """
    flows = [load_flow(file, warnings=True, check_imports=check_imports) for file in files]
    flow_secret_values(flows)  # remembered: from now on, no log line shows one
    grace_seconds = parse_seconds(grace)
    lease_seconds, renew_seconds = parse_seconds(lease), parse_seconds(renew)
    if not 0 < renew_seconds < lease_seconds:
        raise click.BadParameter(
            f"--renew ({renew}) must be above zero and shorter than --lease ({lease})",
            param_hint="'--renew'",
        )
    stop_after = parse_seconds(run_for) if run_for else None
    console = Console(stderr=True, markup=False, emoji=False)  # flow and job names as they are
    use_live = console.is_terminal if live is None else live
    _configure_logging(console, use_live)
    dashboard = _Dashboard(ui_host, ui_port, ui_token) if ui else None
    if dashboard is not None:
        dashboard.check()
    with open_store(state_url, create=True) as store:
        console.print(f"state store: {store.location}", soft_wrap=True)
        orchestrator = Orchestrator(
            flows,
            store,
            grace=grace_seconds,
            lease=lease_seconds,
            renew=renew_seconds,
            on_role=lambda o: _say_role(o, console),
        )
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
        # lazy: the dashboard is the optional `ui` extra (fastapi), heavy
        from tideflow.web import UnsafeBindError, check_bind

        try:
            check_bind(self.host, self.token)
        except UnsafeBindError as exc:
            raise click.UsageError(str(exc)) from exc

    async def serve(self, store: Store, console: Console) -> None:
        from tideflow.web import create_app, serve  # lazy: the optional `ui` extra

        app = create_app(None, token=self.token, store=store)
        console.print(f"dashboard on http://{self.host}:{self.port}/")
        await serve(app, self.host, self.port)


def _say_role(orchestrator: Orchestrator, console: Console) -> None:
    """One line at each change of role: leader, standby, stopped."""
    stamp = datetime.now().astimezone().strftime("%H:%M:%S %Z")
    term = orchestrator.term
    if orchestrator.role == Role.LEADER and term is not None:
        line = f"orchestrator {orchestrator.id}: leader (fencing token {term.token})"
    elif orchestrator.role == Role.STANDBY:
        line = (
            f"orchestrator {orchestrator.id}: standby (another orchestrator leads "
            f"{', '.join(orchestrator.names)}; taking over if it stops)"
        )
    else:
        return
    # the exact instant too, which scripts (and tests) compare with the lease's times
    since = datetime.now(UTC).isoformat(timespec="milliseconds")
    console.print(f"{stamp} {line}, since {since}", soft_wrap=True, highlight=False)


def _configure_logging(console: Console, live: bool) -> None:
    if live:  # through the live view's console, so lines print above the view
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
    """The live view on a terminal; elsewhere one line per finished job run. A store
    that cannot be read leaves the view as it was (the orchestrator says why)."""
    store = orchestrator.store
    started = time.monotonic()
    try:
        seen = max((r.id for r in store.job_runs(limit=1)), default=0)
    except StoreError:
        seen = 0
    if live:
        with Live(console=console, refresh_per_second=2, transient=False) as view:
            while True:
                stopping = stop.is_set()
                with contextlib.suppress(StoreError):
                    uptime = time.monotonic() - started
                    view.update(_live_view(orchestrator, uptime, console.width))
                if stopping:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
    while True:
        stopping = stop.is_set()
        try:
            recent = store.job_runs(limit=200)
        except StoreError:
            recent = []
        finished = [r for r in reversed(recent) if r.id > seen and r.status.finished]
        for row in finished:
            seen = max(seen, row.id)
            took = f" in {format_elapsed(row.duration)}" if row.duration is not None else ""
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
        f"orchestrator {orchestrator.id} ({orchestrator.role})  up {format_elapsed(uptime)}  ",
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
                    job_schedule(job),
                    human_delta((now - fire).total_seconds()) if fire else "-",
                    last_cell,
                    format_elapsed(row.duration) if row else "-",
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
