"""Times the CLI prints (in which zone, labelled), the windows `upcoming` accepts, and
where a flow's warnings are shown (`lint`, and `run` at start; not every command)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from tideflow.runtime.store import Store

from tideflow.cli import main

from .test_cli_reading import record_failed_run

# a New York cron, and a topic nothing publishes to or consumes (W404, W405)
FLOW = """flow "etl" { timezone = "America/New_York" }
broker "b" { kind = "embedded" }
topic "unused" { broker = broker.b }
job "extract" {
  schedule = cron("30 0 * * *")
  run      = "timejobs:extract"
}
"""


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TIDEFLOW_STATE", f"sqlite:///{tmp_path / 'state.db'}")
    (tmp_path / "timejobs.py").write_text("def extract(ctx):\n    pass\n")
    Path("etl.flow").write_text(FLOW)
    return "etl.flow"


def test_upcoming_until_a_duration_counts_from_now(flow: str) -> None:
    result = cli("upcoming", flow, "--until", "7d", "--format", "json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    start = datetime.fromisoformat(answer["from"])
    until = datetime.fromisoformat(answer["until"])
    assert until - start == timedelta(days=7)
    assert len(answer["instants"]) == 7  # once a day
    later = cli("upcoming", flow, "--from", "1d", "--until", "3d", "--format", "json")
    assert later.exit_code == 0, later.output
    assert len(json.loads(later.stdout)["instants"]) == 2


def test_upcoming_explains_what_it_accepts(flow: str) -> None:
    result = cli("upcoming", flow, "--until", "next week")
    assert result.exit_code == 2
    assert "nor a duration from now (12h, 7d)" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["upcoming", "etl.flow", "--until", "1d"],
        ["status", "etl.flow"],
        ["trigger", "etl.flow", "extract"],
        ["graph", "etl.flow"],
    ],
)
def test_only_lint_and_run_repeat_a_flows_warnings(flow: str, command: list[str]) -> None:
    result = cli(*command)
    assert result.exit_code == 0, result.output
    assert "warning[" not in result.stderr
    assert "nothing publishes" not in result.output


def test_lint_and_run_show_the_warnings(flow: str, tmp_path: Path) -> None:
    linted = cli("lint", flow)
    assert "warning[W404]" in linted.stdout and "warning[W405]" in linted.stdout
    ran = subprocess.run(
        [sys.executable, "-m", "tideflow", "run", flow, "--no-live", "--duration", "0.2s"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr.count("warning[W404]") == 1


def test_status_shows_the_next_run_in_the_jobs_zone_labelled(flow: str) -> None:
    result = cli("status", flow)
    assert result.exit_code == 0, result.output
    now = datetime.now(UTC)
    zone = __import__("zoneinfo").ZoneInfo("America/New_York")
    local = now.astimezone(zone)
    expected = local.replace(hour=0, minute=30, second=0, microsecond=0)
    if expected <= local:
        expected += timedelta(days=1)
    label = expected.strftime("%Z")  # EST or EDT
    assert f"00:30:00 {label}" in result.stdout or f"00:30 {label}" in result.stdout
    report = json.loads(cli("status", flow, "--format", "json").stdout)
    (job,) = report["flows"][0]["jobs"]
    assert job["timezone"] == "America/New_York"


def test_logs_label_the_zone_of_each_line(tmp_path: Path) -> None:
    """A log line's clock time says whose clock it is (the machine's: UTC, CET, +0530...)."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with Store.open(url) as store:
        _flow_run, extract, _ = record_failed_run(store, log_line="loaded 5 rows")
    result = CliRunner().invoke(main, ["logs", str(extract), "--state", url])
    assert result.exit_code == 0, result.output
    line = next(text for text in result.stdout.splitlines() if "loaded 5 rows" in text)
    # the clock time, its zone, then the level: `07:52:01 UTC INFO    loaded 5 rows`
    assert re.search(r"\d\d:\d\d:\d\d [A-Z+-][A-Za-z0-9+-]* +[A-Z]+ +loaded 5 rows", line), line
