"""`lint --check-imports`, and `run` checking its functions before anything fires."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tideflow.cli import main

FLOW = """flow "nightly" {}
job "extract" {
  schedule = every(1s)
  run      = "handlerz.jobs:extract"
}
"""


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"NO_COLOR": "1"}, catch_exceptions=False)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "handlers").mkdir()
    (tmp_path / "handlers" / "__init__.py").write_text("")
    (tmp_path / "handlers" / "jobs.py").write_text("def extract(ctx):\n    pass\n")
    (tmp_path / "nightly.flow").write_text(FLOW)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path


def test_lint_finds_a_missing_module_only_when_asked(project: Path) -> None:
    plain = cli("lint", "nightly.flow")
    assert plain.exit_code == 0 and "no problems found" in plain.stdout
    checked = cli("lint", "--check-imports", "nightly.flow")
    assert checked.exit_code == 1
    assert 'error[E501]: job "extract" runs `handlerz.jobs:extract`, but there is no ' in (
        checked.stdout
    )
    assert " --> nightly.flow:4:14" in checked.stdout
    assert "help: did you mean `handlers.jobs:extract`?" in checked.stdout
    assert "Traceback" not in checked.output


def test_lint_check_imports_in_json(project: Path) -> None:
    import json

    result = cli("lint", "--check-imports", "--format", "json", "nightly.flow")
    codes = [d["code"] for d in json.loads(result.stdout)["diagnostics"]]
    assert codes == ["E501"]


def run(project: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tideflow", "run", "nightly.flow", "--no-live", *extra],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1", "TIDEFLOW_STATE": f"sqlite:///{project / 's.db'}"},
    )


def test_run_checks_the_functions_before_anything_fires(project: Path) -> None:
    refused = run(project, "--duration", "2s")
    assert refused.returncode == 1
    assert "error[E501]" in refused.stderr
    assert not (project / "s.db").exists()  # nothing started, nothing fired


def test_run_no_check_imports_starts_anyway(project: Path) -> None:
    started = run(project, "--duration", "0.5s", "--no-check-imports")
    assert started.returncode == 0, started.stderr
    assert "E501" not in started.stderr
