"""The reading commands print stored text as it is, say why a run ended, show whole flow
runs, and list and withdraw trigger requests that no orchestrator has taken."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from tideflow.compiler import compile_flow
from tideflow.compiler.irjson import to_json
from tideflow.runtime.model import AttemptStatus, ErrorInfo, RunStatus, TriggerKind
from tideflow.runtime.store import Store

from tideflow.cli import main
from tideflow.cli.run import _live_view

UPSTREAM_NOTE = "trigger rule all_success: a dependency failed (extract failed)"

FLOW = """\
flow "orders" {
  timezone = "UTC"
}

job "extract" {
  schedule = every(1h)
  run      = "shop.jobs:extract"
}

job "transform" {
  run   = "shop.jobs:transform"
  after = [job.extract]
}
"""


def cli(*args: str) -> Result:
    """Through the `tideflow` group, as a user runs it: an exception there becomes exit 3."""
    return CliRunner().invoke(main, list(args))


@dataclass(frozen=True)
class Failed:
    url: str
    flow_run: int
    extract: int
    transform: int


def record_failed_run(
    store: Store,
    *,
    flow: str = "orders",
    jobs: tuple[str, str] = ("extract", "transform"),
    note: str = UPSTREAM_NOTE,
    message: str = "'sku'",
    log_line: str = "row 7 has no sku",
    stdout: str = "rows: 7\n",
) -> tuple[int, int, int]:
    """A flow run whose first job failed and whose second ended upstream_failed."""
    flow_run = store.create_flow_run(flow, jobs[0], TriggerKind.SCHEDULE)
    ids = store.create_job_runs(flow_run, flow, list(jobs), TriggerKind.SCHEDULE)
    store.set_flow_run_status(flow_run, RunStatus.RUNNING)
    attempt = store.start_attempt(ids[jobs[0]], 1, pid=4242)
    store.finish_attempt(
        attempt,
        AttemptStatus.FAILED,
        exit_code=1,
        stdout=stdout,
        error=ErrorInfo("KeyError", message, "Traceback ...\nKeyError", "shop.jobs.extract"),
        logs=[(datetime.now(UTC), "WARNING", log_line)],
        job_run_status=RunStatus.FAILED,
    )
    store.set_job_run_status(ids[jobs[1]], RunStatus.UPSTREAM_FAILED, note=note)
    store.set_flow_run_status(flow_run, RunStatus.FAILED)
    return flow_run, ids[jobs[0]], ids[jobs[1]]


@pytest.fixture
def failed(tmp_path: Path) -> Failed:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with Store.open(url) as store:
        ok = store.create_flow_run("orders", "extract", TriggerKind.MANUAL)
        store.create_job_runs(ok, "orders", ["extract"], TriggerKind.MANUAL)
        store.set_flow_run_status(ok, RunStatus.SUCCESS)
        flow_run, extract, transform = record_failed_run(store)
    return Failed(url, flow_run, extract, transform)


# --- job text is text, never markup ---------------------------------------------------------


def test_logs_print_brackets_and_the_secret_marker_as_they_are(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with Store.open(url) as store:
        _flow_run, extract, _ = record_failed_run(
            store,
            log_line="wrote [/tmp/x]; using password [secret]; [bold red]alarm[/] :thumbs_up:",
            message="bad [/tmp/y]",
            stdout="[green]ok[/green]\n",
        )
    result = cli("logs", str(extract), "--state", url)
    assert result.exit_code == 0, result.output
    assert "wrote [/tmp/x]; using password [secret]; [bold red]alarm[/] :thumbs_up:" in (
        result.stdout
    )
    assert "KeyError: bad [/tmp/y]" in result.stdout
    assert "[green]ok[/green]" in result.stdout


# text that rich would read as markup ([b], [/], [/tmp/x]), emoji codes (:x:) or escapes (\[)
STORED_TEXT = (
    st.lists(
        st.sampled_from([*"[]/\\:abxz_-=#@é ", "[bold]", "[/]", "[/tmp/x]", ":thumbs_up:"]),
        min_size=1,
        max_size=10,
    )
    .map("".join)
    .filter(lambda s: s == s.strip() and "  " not in s)
)


@pytest.fixture(scope="module")
def fuzz_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    """A store shared by the examples, and the IR document of FLOW (stored under each
    example's flow name, so that `status` reads that name back)."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "orders.flow").write_text(FLOW)
    ir = compile_flow(str(folder / "orders.flow")).ir
    assert ir is not None
    url = f"sqlite:///{folder / 'state.db'}"
    with Store.open(url):
        pass
    yield url, to_json(ir)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(flow=STORED_TEXT, job=STORED_TEXT, note=STORED_TEXT, message=STORED_TEXT, line=STORED_TEXT)
def test_every_reading_command_prints_stored_text_verbatim(
    fuzz_state: tuple[str, dict[str, Any]], flow: str, job: str, note: str, message: str, line: str
) -> None:
    url, document = fuzz_state
    with Store.open(url) as store:
        store.save_flow(flow, FLOW, {**document, "flow": {**document["flow"], "name": flow}})
        flow_run, extract, transform = record_failed_run(
            store,
            flow=flow,
            jobs=(job, f"{job}2"),
            note=note,
            message=message,
            log_line=line,
            stdout=f"{line}\n",
        )
        request = store.request_trigger(flow, job, params={"who": note})
    try:
        readings = {
            "runs": cli("runs", "--flow", flow, "--state", url),
            "logs": cli("logs", str(extract), "--state", url),
            "logs upstream": cli("logs", str(transform), "--state", url),
            "flow-runs": cli("flow-runs", "--flow", flow, "--state", url),
            "flow-run": cli("flow-runs", str(flow_run), "--state", url),
            "requests": cli("requests", "list", "--flow", flow, "--state", url),
            "status": cli("status", "--state", url),
        }
    finally:
        with Store.open(url) as store:
            store.withdraw_trigger_request(request)
    for name, result in readings.items():
        assert result.exit_code == 0, (name, result.output)
    assert flow in readings["runs"].stdout and job in readings["runs"].stdout
    assert note in readings["runs"].stdout
    assert f"KeyError: {message}" in readings["logs"].stdout
    assert line in readings["logs"].stdout
    assert note in readings["logs upstream"].stdout
    assert flow in readings["flow-runs"].stdout
    assert f"{job} failed (KeyError: {message})" in readings["flow-run"].stdout
    assert note in readings["flow-run"].stdout
    assert flow in readings["requests"].stdout
    assert f"flow {flow}  not running" in readings["status"].stdout
    assert f"(from {job}): failed" in readings["status"].stdout
    assert f"{job} failed (KeyError: {message})" in readings["status"].stdout
    assert json.dumps({"who": note}, ensure_ascii=False) in readings["requests"].stdout


# --- why a run ended ------------------------------------------------------------------------


def test_runs_table_says_why_a_run_ended(failed: Failed) -> None:
    result = cli("runs", "--state", failed.url)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "reason" in lines[0]
    (transform,) = [line for line in lines if "upstream_failed" in line]
    assert UPSTREAM_NOTE in transform
    (extract,) = [line for line in lines if " failed " in line and "extract" in line[:30]]
    assert "KeyError: 'sku'" in extract


def test_logs_of_a_run_that_never_started_say_why(failed: Failed) -> None:
    result = cli("logs", str(failed.transform), "--state", failed.url)
    assert result.exit_code == 0, result.output
    assert UPSTREAM_NOTE in result.stdout
    assert "no attempt has started yet" not in result.stdout
    assert "it ended without an attempt" in result.stdout


# --- flow runs ------------------------------------------------------------------------------


def test_flow_runs_list_newest_first_with_their_jobs(failed: Failed) -> None:
    result = cli("flow-runs", "--state", failed.url)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "orders" in line]
    assert rows[0].split()[0] == str(failed.flow_run)
    assert "failed" in rows[0] and "1 failed, 1 upstream_failed" in rows[0]
    assert "success" in rows[1] and "1 pending" in rows[1]
    only = cli("flow-runs", "--status", "success", "--format", "json", "--state", failed.url)
    document = json.loads(only.stdout)
    assert [(r["status"], r["jobs"]) for r in document["flow_runs"]] == [
        ("success", {"pending": 1})
    ]


def test_a_flow_run_with_its_jobs_and_why_it_failed(failed: Failed) -> None:
    result = cli("flow-runs", str(failed.flow_run), "--state", failed.url)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"flow run {failed.flow_run}  orders (from extract)  failed" in text
    assert "extract failed (KeyError: 'sku')" in text
    assert UPSTREAM_NOTE in text
    document = json.loads(
        cli("flow-runs", str(failed.flow_run), "--format", "json", "--state", failed.url).stdout
    )
    assert document["reason"] == "extract failed (KeyError: 'sku')"
    assert [(j["job"], j["status"], j["reason"]) for j in document["job_runs"]] == [
        ("extract", "failed", "KeyError: 'sku'"),
        ("transform", "upstream_failed", UPSTREAM_NOTE),
    ]


def test_an_unknown_flow_run_is_a_clear_error(failed: Failed) -> None:
    result = cli("flow-runs", "99", "--state", failed.url)
    assert result.exit_code == 1
    assert "no flow run 99" in result.output and "Traceback" not in result.output


def test_status_shows_the_last_flow_run_and_why_it_failed(failed: Failed, write_flow: Any) -> None:
    path = write_flow("orders.flow", FLOW)
    result = cli("status", path, "--state", failed.url)
    assert result.exit_code == 0, result.output
    assert f"last flow run {failed.flow_run} (from extract): failed" in result.stdout
    assert "extract failed (KeyError: 'sku')" in result.stdout
    document = json.loads(cli("status", path, "--format", "json", "--state", failed.url).stdout)
    (report,) = document["flows"]
    assert report["last_flow_run"]["id"] == failed.flow_run
    assert report["last_flow_run_reason"] == "extract failed (KeyError: 'sku')"


# --- trigger requests -----------------------------------------------------------------------


def test_pending_requests_are_listed_and_withdrawn(failed: Failed) -> None:
    with Store.open(failed.url) as store:
        first = store.request_trigger("orders", "extract", params={"day": "2026-11-21"})
        second = store.request_trigger("orders", "transform")
        store.claim_trigger_requests(["elsewhere"], orchestrator_id=1)  # another flow's
    listed = cli("requests", "list", "--state", failed.url)
    assert listed.exit_code == 0, listed.output
    lines = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [(line[0], line[2]) for line in lines] == [
        (str(first), "extract"),
        (str(second), "transform"),
    ]
    assert '{"day": "2026-11-21"}' in listed.stdout
    withdrawn = cli("requests", "cancel", str(first), "--state", failed.url)
    assert withdrawn.exit_code == 0 and f"request {first} withdrawn" in withdrawn.stdout
    again = cli("requests", "cancel", str(first), "--state", failed.url)
    assert again.exit_code == 1 and f"no pending request {first}" in again.output
    with Store.open(failed.url) as store:
        assert [r.id for r in store.pending_trigger_requests()] == [second]
        assert store.claim_trigger_requests(["orders"], orchestrator_id=1)[0].id == second
    taken = cli("requests", "cancel", str(second), "--state", failed.url)
    assert taken.exit_code == 1 and "taken by an orchestrator already" in taken.output
    empty = cli("requests", "list", "--format", "json", "--state", failed.url)
    assert json.loads(empty.stdout) == {"requests": []}


def test_trigger_wait_without_an_orchestrator_withdraws_its_request(
    failed: Failed, write_flow: Any
) -> None:
    path = write_flow("orders.flow", FLOW)
    result = cli("trigger", path, "extract", "--wait", "--timeout", "300ms", "--state", failed.url)
    assert result.exit_code == 1
    assert "no orchestrator is running flow 'orders'" in result.stdout
    assert "withdrawn: no orchestrator took it within 300ms" in result.stdout
    with Store.open(failed.url) as store:
        assert store.pending_trigger_requests() == []  # it will not fire when one starts
    queued = cli("trigger", path, "extract", "--state", failed.url)
    assert queued.exit_code == 0 and "tideflow requests cancel" in queued.stdout
    with Store.open(failed.url) as store:
        assert len(store.pending_trigger_requests("orders")) == 1


# --- the live view --------------------------------------------------------------------------


@pytest.mark.parametrize("width", [80, 60])
def test_the_live_view_never_cuts_a_cell_in_a_narrow_terminal(
    failed: Failed, write_flow: Any, width: int
) -> None:
    ir = compile_flow(write_flow("orders.flow", FLOW)).ir
    assert ir is not None
    with Store.open(failed.url) as store:
        orchestrator = SimpleNamespace(
            store=store,
            flows=[ir],
            id=7,
            role="leader",
            next_fires=lambda: {("orders", "extract"): datetime.now(UTC) + timedelta(hours=5)},
        )
        console = Console(width=width, record=True, markup=False, file=open_null())
        console.print(_live_view(orchestrator, 3725.0, console.width))  # type: ignore[arg-type]
    text = console.export_text()
    assert "…" not in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width
    if width == 80:  # every word fits: none is broken
        for word in ("transform", "upstream_failed", "every", "last hour"):
            assert word in text


def open_null() -> Any:
    import io

    return io.StringIO()
