"""`tideflow runs | logs | cancel` read and steer the run history."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from tideflow.dsl.timetext import human_delta
from tideflow.runtime.model import AttemptStatus, ErrorInfo, RunStatus, TriggerKind
from tideflow.runtime.store import Store

from tideflow.cli.common import parse_since
from tideflow.cli.history import logs_command, runs_command
from tideflow.cli.requests import cancel_command


@pytest.fixture
def state(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with Store.open(url) as store:
        flow_run = store.create_flow_run("orders", "extract", TriggerKind.SCHEDULE)
        ids = store.create_job_runs(flow_run, "orders", ["extract", "report"], TriggerKind.SCHEDULE)
        attempt = store.start_attempt(ids["extract"], 1, pid=4242)
        store.finish_attempt(
            attempt,
            AttemptStatus.FAILED,
            exit_code=1,
            stdout="rows: 7\n",
            error=ErrorInfo(
                "KeyError",
                "'sku'",
                "Traceback (most recent call last):\n  ...\nKeyError: 'sku'",
                "shop.jobs.extract",
                "shop/jobs.py:12",
            ),
            logs=[(datetime.now(UTC), "WARNING", "row 7 has no sku")],
            job_run_status=RunStatus.FAILED,
        )
    return url


def test_runs_table_lists_newest_first(state: str) -> None:
    result = CliRunner().invoke(runs_command, ["--state", state])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "orders" in line]
    assert "report" in lines[0] and "pending" in lines[0]
    assert "extract" in lines[1] and "failed" in lines[1]


def test_runs_json_filters_by_status(state: str) -> None:
    result = CliRunner().invoke(
        runs_command, ["--state", state, "--status", "failed", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    runs = json.loads(result.output)["runs"]
    assert [(r["job"], r["status"], r["attempts"]) for r in runs] == [("extract", "failed", 1)]


def test_runs_since_in_the_future_finds_nothing(state: str) -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    result = CliRunner().invoke(runs_command, ["--state", state, "--since", future])
    assert result.exit_code == 0 and "no runs match" in result.output


def test_logs_show_the_function_that_raised(state: str) -> None:
    result = CliRunner().invoke(logs_command, ["1", "--state", state])
    assert result.exit_code == 0, result.output
    assert "KeyError: 'sku' in shop.jobs.extract (shop/jobs.py:12)" in result.output
    assert "row 7 has no sku" in result.output and "rows: 7" in result.output


def test_logs_json(state: str) -> None:
    result = CliRunner().invoke(logs_command, ["1", "--state", state, "--format", "json"])
    document = json.loads(result.output)
    assert document["attempts"][0]["error"]["function"] == "shop.jobs.extract"
    assert document["attempts"][0]["logs"][0]["level"] == "WARNING"


def test_logs_of_an_unknown_run_is_a_clear_error(state: str) -> None:
    result = CliRunner().invoke(logs_command, ["99", "--state", state])
    assert result.exit_code == 1 and "no run 99" in result.output


def test_cancel_only_unfinished_runs(state: str) -> None:
    runner = CliRunner()
    done = runner.invoke(cancel_command, ["1", "--state", state])
    assert done.exit_code == 1 and "already finished (failed)" in done.output
    pending = runner.invoke(cancel_command, ["2", "--state", state])
    assert pending.exit_code == 0 and "cancellation of run 2" in pending.output


def test_since_forms() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert parse_since("5m", now) == now - timedelta(minutes=5)
    assert parse_since("1.5h", now) == now - timedelta(minutes=90)
    assert parse_since("2026-11-20", now) == datetime(2026, 11, 20, tzinfo=UTC)
    with pytest.raises(click.BadParameter, match="neither a duration"):
        parse_since("yesterday", now)


def test_human_delta() -> None:
    assert human_delta(30) == "30s ago"
    assert human_delta(-600) == "in 10m"
    assert human_delta(0.2) == "now"
