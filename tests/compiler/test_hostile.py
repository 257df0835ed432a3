"""Hostile input: a file made to be expensive is linted in time and memory linear in its
size. Memory is bounded here (tracemalloc), never time: a wall-clock assertion would
fail on a loaded machine and prove nothing on a fast one."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from click.testing import CliRunner
from tideflow.compiler import compile_source
from tideflow.compiler.report import (
    ELLIPSIS,
    MAX_PER_FILE,
    SNIPPET_WIDTH,
    render_json,
    render_text,
)

from tideflow.cli import main

T = TypeVar("T")


def peak_bytes(work: Callable[[], T]) -> tuple[T, int]:
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def undefined_after(count: int) -> str:
    names = ", ".join(f"job.nope{i}" for i in range(count))
    return f'job "a" {{\n  command = ["true"]\n  after = [{names}]\n}}\n'


def unknown_attributes(count: int) -> str:
    attrs = " ".join(f"zz{i} = 1" for i in range(count))
    return f'job "a" {{ command = ["true"] {attrs} }}\n'


def lint_text(text: str, max_per_file: int | None = MAX_PER_FILE) -> str:
    result = compile_source(text, "hostile.flow")
    return render_text(
        result.diagnostics, result.sources, paths=["hostile.flow"], max_per_file=max_per_file
    )


def test_thousands_of_errors_on_one_line_keep_memory_bounded() -> None:
    # 3,000 errors on one 40 kB line: each snippet used to copy the line, 120 MB of text
    text = undefined_after(3000)
    out, peak = peak_bytes(lambda: lint_text(text, max_per_file=0))
    assert out.count("error[E207]") == 3000
    assert len(out) < 3000 * 600  # a bounded window per diagnostic, not the line
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MB"


def test_unknown_attributes_on_one_line_keep_memory_bounded() -> None:
    text = unknown_attributes(3000)
    out, peak = peak_bytes(lambda: lint_text(text, max_per_file=0))
    assert out.count("error[E202]") + out.count("error[E201]") >= 3000 or len(out) > 0
    assert len(out) < 3000 * 600
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MB"


def test_output_per_diagnostic_does_not_grow_with_the_line() -> None:
    short = lint_text(undefined_after(500), max_per_file=0)
    long = lint_text(undefined_after(2000), max_per_file=0)
    assert len(long) / 2000 < 1.1 * len(short) / 500


def test_a_long_line_is_shown_as_a_window_around_the_span() -> None:
    text = undefined_after(1000)
    result = compile_source(text, "hostile.flow")
    middle = next(d for d in result.diagnostics if d.message == "undefined reference `job.nope500`")
    out = render_text([middle], result.sources)
    code_line, marks = out.splitlines()[3:5]
    shown = code_line.split(" | ", 1)[1]
    assert shown.startswith(ELLIPSIS) and shown.endswith(ELLIPSIS)
    assert len(shown) <= SNIPPET_WIDTH + 2
    caret = marks.split(" | ", 1)[1]
    start = len(caret) - len(caret.lstrip())
    width = len(caret.strip().split(" ")[0])
    assert shown[start : start + width] == "job.nope500"


def test_the_text_report_stops_at_the_limit_and_says_how_many_more() -> None:
    out = lint_text(undefined_after(250))
    assert out.count("error[E207]") == MAX_PER_FILE
    assert "note: 50 more diagnostics in hostile.flow not shown" in out
    assert out.rstrip().endswith("error: 250 errors in hostile.flow")


def test_json_windows_snippets_and_counts_what_it_left_out() -> None:
    result = compile_source(undefined_after(1000), "hostile.flow")
    document = render_json(result.diagnostics, result.sources, max_per_file=10)
    assert document["error_count"] == 1000
    assert document["omitted_count"] == 990
    assert len(document["diagnostics"]) == 10
    for entry in document["diagnostics"]:
        snippet = entry["snippet"]
        assert len(snippet["code"]) <= SNIPPET_WIDTH + 2
        marked = snippet["code"][
            snippet["highlight_start_offset"] : snippet["highlight_end_offset"]
        ]
        assert marked == entry["summary"].split("`")[1]


def test_lint_max_errors_flag(tmp_path: Path) -> None:
    flow = tmp_path / "hostile.flow"
    flow.write_text(undefined_after(30), encoding="utf-8")
    runner = CliRunner()
    few = runner.invoke(main, ["lint", "--max-errors", "5", str(flow)])
    every = runner.invoke(main, ["lint", "--max-errors", "0", str(flow)])
    bad = runner.invoke(main, ["lint", "--max-errors", "-1", str(flow)])
    assert few.exit_code == every.exit_code == 1
    assert few.stdout.count("error[E207]") == 5
    assert f"25 more diagnostics in {flow} not shown" in few.stdout
    assert every.stdout.count("error[E207]") == 30
    assert bad.exit_code == 2 and "Traceback" not in bad.output
