"""The installed `tideflow` program run as a user runs it: a real process, real streams,
real exit codes, a real terminal for the colour tests."""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tideflow import __version__

ANSI = re.compile(r"\x1b\[[0-9;]*m")
pytestmark = pytest.mark.integration


def tideflow_program() -> str:
    """The console script installed beside the interpreter running the tests (the venv's)."""
    beside = Path(sys.executable).parent / "tideflow"
    found = str(beside) if beside.exists() else shutil.which("tideflow")
    assert found, "the `tideflow` console script is not installed (pip install -e .)"
    return found


def tideflow(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"NO_COLOR", "FORCE_COLOR"}}
    return subprocess.run(
        [tideflow_program(), *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr
    assert not ANSI.search(result.stdout + result.stderr)  # pipes are not terminals


def test_version(workdir: Path) -> None:
    result = tideflow("--version", cwd=workdir)
    assert (result.returncode, result.stdout.strip()) == (0, f"tideflow {__version__}")


def test_python_dash_m_runs_the_same_program(good: str, workdir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tideflow", "lint", good],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "no problems found in orders.flow\n"


def test_lint_exit_codes(
    good: str, unknown_attribute: str, warnings_only: str, workdir: Path
) -> None:
    assert tideflow("lint", good, cwd=workdir).returncode == 0
    assert tideflow("lint", warnings_only, cwd=workdir).returncode == 0
    assert tideflow("lint", "--strict", warnings_only, cwd=workdir).returncode == 1
    bad = tideflow("lint", unknown_attribute, cwd=workdir)
    assert bad.returncode == 1
    assert bad.stdout.startswith('error[E202]: unknown attribute `retrys` in job "extract"\n')
    assert bad.stdout.endswith("\nerror: 1 error in bad.flow\n")
    assert_clean(bad)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["lint", "missing.flow"], "error: cannot read `missing.flow`: no such file or directory"),
        (["compile", "."], "error: `.` is a folder, not a .flow file"),
        (["graph", "missing.flow"], "error: cannot read `missing.flow`"),
        (["fmt", "missing.flow"], "error: cannot read `missing.flow`"),
        (["lint", "--format", "xml", "a.flow"], "Invalid value for '--format'"),
    ],
)
def test_usage_and_io_problems_exit_2(workdir: Path, arguments: list[str], message: str) -> None:
    result = tideflow(*arguments, cwd=workdir)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""
    assert_clean(result)


def test_bad_input_never_shows_a_traceback(syntax_error: str, not_utf8: str, workdir: Path) -> None:
    for arguments in (
        ["lint", syntax_error],
        ["lint", not_utf8],
        ["compile", syntax_error],
        ["compile", not_utf8],
        ["graph", not_utf8],
        ["fmt", syntax_error],
        ["fmt", not_utf8],
    ):
        result = tideflow(*arguments, cwd=workdir)
        assert result.returncode == 1, (arguments, result.stderr)
        assert "error[E1" in result.stdout + result.stderr
        assert_clean(result)


def test_compile_to_stdout_is_json(good: str, workdir: Path) -> None:
    result = tideflow("compile", good, cwd=workdir)
    assert result.returncode == 0
    assert result.stdout.startswith("{\n")
    assert '"name": "orders"' in result.stdout


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is missing")
def test_graph_draws_png_and_svg_files(good: str, workdir: Path) -> None:
    for name in ("out/orders.png", "out/orders.svg"):
        result = tideflow("graph", good, "-o", name, cwd=workdir)
        assert result.returncode == 0, result.stderr
        assert (workdir / name).stat().st_size > 1000
    assert (workdir / "out/orders.png").read_bytes().startswith(b"\x89PNG")


def test_graph_without_dot_on_path_is_exit_2_with_install_hint(good: str, workdir: Path) -> None:
    no_dot = workdir / "bin"
    no_dot.mkdir()
    result = tideflow("graph", good, "-o", "orders.png", cwd=workdir, env={"PATH": str(no_dot)})
    assert result.returncode == 2
    assert "`dot` program was not found" in result.stderr
    assert "apt-get install graphviz" in result.stderr and "brew install graphviz" in result.stderr
    assert_clean(result)


def run_in_terminal(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run tideflow with its stdout and stderr on a pseudo-terminal: its exit status and
    what it printed."""
    controller, terminal = pty.openpty()
    base = {k: v for k, v in os.environ.items() if k not in {"NO_COLOR", "FORCE_COLOR"}}
    with subprocess.Popen(
        [tideflow_program(), *args],
        cwd=cwd,
        env={**base, "TERM": "xterm", **env},
        stdout=terminal,
        stderr=terminal,
    ) as process:
        os.close(terminal)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closed: the program ended
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=60)
    os.close(controller)
    return process.returncode, b"".join(chunks).decode("utf-8")


def test_colour_on_a_terminal_unless_no_color(unknown_attribute: str, workdir: Path) -> None:
    status, coloured = run_in_terminal(["lint", unknown_attribute], workdir, {})
    assert status == 1
    assert ANSI.search(coloured)
    assert "error[E202]" in ANSI.sub("", coloured)
    _, plain = run_in_terminal(["lint", unknown_attribute], workdir, {"NO_COLOR": "1"})
    assert "error[E202]" in plain
    assert not ANSI.search(plain)


def test_graph_will_not_write_a_binary_picture_to_a_terminal(good: str, workdir: Path) -> None:
    status, printed = run_in_terminal(["graph", good, "--format", "png"], workdir, {})
    assert status == 2
    assert "not writing a png picture to a terminal; use -o FILE.png" in ANSI.sub("", printed)
    assert "PNG" not in printed
