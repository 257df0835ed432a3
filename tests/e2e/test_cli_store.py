"""Which state store a command uses: $TIDEFLOW_STATE or --state when given, else one
per user whatever the current folder; a command that only reads never creates one."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from tideflow.runtime.store import Store, StoreError, StoreNotFound, default_url, resolve_url

from tideflow.cli import main

FLOW = """flow "nightly" { timezone = "UTC" }
job "tick" {
  schedule = every(1s)
  run      = "storejobs:tick"
}
"""


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user state folder of its own, no $TIDEFLOW_STATE, and an empty current folder."""
    state_home = tmp_path / "state-home"
    monkeypatch.setenv("XDG_STATE_HOME", str(state_home))
    monkeypatch.delenv("TIDEFLOW_STATE", raising=False)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    return state_home


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_the_default_store_is_per_user_not_per_folder(home: Path, tmp_path: Path) -> None:
    expected = f"sqlite:///{home / 'tideflow' / 'state.db'}"
    assert default_url() == expected
    assert resolve_url(None) == expected
    os.chdir(tmp_path)
    assert resolve_url(None) == expected
    assert resolve_url("other.db") == "sqlite:///other.db"


@pytest.mark.parametrize("command", [["runs"], ["logs", "1"], ["cancel", "1"], ["status"]])
def test_a_reading_command_without_a_store_says_so_and_creates_none(
    home: Path, tmp_path: Path, command: list[str]
) -> None:
    result = cli(*command)
    assert result.exit_code == 2, result.output
    where = home / "tideflow" / "state.db"
    assert f"no state store at {where}" in result.stderr
    assert "`tideflow run FILE` creates it" in result.stderr
    assert "Traceback" not in result.output
    assert files_under(tmp_path) == []  # neither here nor in the state folder


def test_an_explicit_store_that_does_not_exist_is_not_created(home: Path, tmp_path: Path) -> None:
    wanted = tmp_path / "nowhere" / "state.db"
    result = cli("runs", "--state", str(wanted))
    assert result.exit_code == 2
    assert f"no state store at {wanted}" in result.stderr
    assert not wanted.parent.exists()


def test_a_store_left_in_the_folder_by_older_versions_is_pointed_at(home: Path) -> None:
    Store.open(".tideflow/state.db").close()
    result = cli("runs")
    assert result.exit_code == 2
    assert "this folder has an older one: --state .tideflow/state.db" in result.stderr
    assert cli("runs", "--state", ".tideflow/state.db").exit_code == 0


def test_status_names_the_store_that_holds_no_flow(home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    Store.open(str(empty)).close()
    result = cli("status", "--state", str(empty))
    assert result.exit_code == 1
    assert f"the state store at {empty} holds no flow yet" in result.stderr


def test_status_of_a_flow_file_without_a_store_shows_the_schedule(
    home: Path, tmp_path: Path
) -> None:
    Path("nightly.flow").write_text(FLOW)
    result = cli("status", "nightly.flow")
    assert result.exit_code == 0, result.output
    assert "note: no state store at" in result.stderr
    assert "tick" in result.stdout and "every 1s" in result.stdout
    assert not home.exists()


def test_commands_started_in_different_folders_share_the_default_store(
    home: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "nightly.flow").write_text(FLOW)
    os.chdir(project)
    queued = cli("trigger", "nightly.flow", "tick")  # writes: creates the store
    assert queued.exit_code == 0, queued.output
    os.chdir(tmp_path / "elsewhere")
    listed = cli("runs")
    assert listed.exit_code == 0, listed.output
    assert f"in the state store at {home / 'tideflow' / 'state.db'}" in listed.stdout
    assert "(request 1)" in queued.stdout
    assert files_under(home) == [home / "tideflow" / "state.db"]


def test_a_file_that_is_not_a_store_is_not_migrated_by_a_reader(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StoreNotFound, match="holds no tideflow state store"):
        Store.open(str(empty), create=False)
    with sqlite3.connect(empty) as conn:  # no table was made in it
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    with pytest.raises(StoreError, match="is not a folder"):
        Store.open(str(empty / "state.db"), create=False)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def running(flows: list[str]) -> bool:
    try:  # the orchestrator may still be creating the store
        with Store.open(None, create=False) as store:
            return store.live_orchestrators(flows, 30) != []
    except StoreError:
        return False


def test_run_from_another_folder_finds_the_orchestrator_already_running(
    home: Path, tmp_path: Path
) -> None:
    """The issue: `tideflow run etl/nightly.flow` from another folder started a second
    orchestrator on a second store, and the cron fired twice."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "nightly.flow").write_text(FLOW)
    (project / "storejobs.py").write_text("def tick(ctx):\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "TIDEFLOW_STATE"}
    tideflow = [sys.executable, "-m", "tideflow"]
    first = subprocess.Popen(
        [*tideflow, "run", "nightly.flow", "--no-live"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: running(["nightly"]))
        second = subprocess.run(
            [*tideflow, "run", str(project / "nightly.flow"), "--no-live", "--duration", "1s"],
            cwd=tmp_path / "elsewhere",
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        first.terminate()
        output, _ = first.communicate(timeout=60)
    # the same store: the second orchestrator stands by for the first, fires nothing
    assert second.returncode == 0, second.stderr
    assert ": standby (another orchestrator leads nightly" in second.stderr
    assert f"state store: {home / 'tideflow' / 'state.db'}" in output
    assert f"state store: {home / 'tideflow' / 'state.db'}" in second.stderr
    assert not (tmp_path / "elsewhere" / ".tideflow").exists()
