"""`tideflow trigger`, `cancel` and `requests`: asking the orchestrator, through the
state store, to start a job, to cancel a job run, or to forget a trigger not yet taken."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table

from tideflow.cli.common import (
    emit_json,
    format_option,
    load_flow,
    make_console,
    open_store,
    parse_seconds,
    state_option,
    when,
)
from tideflow.dsl.suggest import suggest
from tideflow.dsl.timetext import format_elapsed
from tideflow.runtime.model import RunStatus
from tideflow.runtime.store import Store

__all__ = ["cancel_command", "parse_params", "requests_command", "trigger_command"]


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
                took = format_elapsed(limit)
                click.echo(f"request {request} withdrawn: no orchestrator took it within {took}")
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
    click.echo(f"flow run {flow_run} has not finished within {format_elapsed(limit)}")
    return 1


def wait_for_run(store: Store, request_id: int, timeout: float) -> int | None:
    """Poll until the orchestrator has started the requested run; its flow run id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _claimed, flow_run_id = store.trigger_request_run(request_id)
        if flow_run_id is not None:
            return flow_run_id
        time.sleep(0.2)
    return None


# --- cancel and requests --------------------------------------------------------------------


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
