"""`tideflow compile`, `lint`, `graph` and `fmt`: the commands that read `.flow` files.

None of them runs anything or touches the state store; they import only the compiler
(and graphviz for pictures), so they start fast.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import click

from tideflow.cli.common import (
    EXIT_PROBLEMS,
    EXIT_USAGE,
    UsageProblem,
    compile_file,
    echo_error,
    os_error_reason,
    show_diagnostics,
    single_input,
    stderr_stream,
    stdout_stream,
    unreadable,
    write_output,
)

if TYPE_CHECKING:
    from tideflow.dsl.diagnostics import Diagnostic

__all__ = ["compile_command", "fmt_command", "graph_command", "lint_command"]

GRAPH_SUFFIXES: Final = {".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png", ".pdf": "pdf"}
_DOT_MISSING: Final = (
    "graphviz's `dot` program was not found on PATH; it draws svg, png and pdf pictures\n"
    "  install it with `apt-get install graphviz` (Debian, Ubuntu), `dnf install graphviz`\n"
    "  (Fedora) or `brew install graphviz` (macOS), or write DOT text with `-o FILE.dot`"
)


# --- files ----------------------------------------------------------------------------------


@dataclass
class _Inputs:
    """The `.flow` files named on the command line, folders expanded, and what went wrong."""

    paths: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _collect(arguments: Iterable[str], *, folders: bool) -> _Inputs:
    """Every readable file among `arguments`; with `folders`, the `.flow` files in a folder
    (hidden folders skipped). Unreadable arguments become `problems`, never exceptions."""
    inputs = _Inputs()
    for argument in arguments:
        if folders and Path(argument).is_dir():
            try:
                found = sorted(_flow_files(argument))
            except OSError as exc:
                where = os.fspath(exc.filename) if exc.filename else argument
                inputs.problems.append(f"cannot read folder `{where}`: {os_error_reason(exc)}")
                continue
            if not found:
                inputs.problems.append(f"no .flow files in folder `{argument}`")
            inputs.paths.extend(found)
            continue
        problem = unreadable(argument)
        if problem is None:
            inputs.paths.append(argument)
        else:
            inputs.problems.append(problem)
    inputs.paths = list(dict.fromkeys(inputs.paths))
    return inputs


def _flow_files(folder: str) -> Iterator[str]:
    def fail(exc: OSError) -> None:
        raise exc

    for current, subfolders, files in os.walk(folder, onerror=fail):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in files:
            if name.endswith(".flow"):
                yield str(Path(current, name))


# --- compile --------------------------------------------------------------------------------


@click.command("compile")
@click.argument("file", metavar="FILE")
@click.option("-o", "--output", metavar="PATH", help="Write the IR JSON here instead of to stdout.")
def compile_command(file: str, output: str | None) -> None:
    """Compile FILE and print its IR as JSON; problems go to stderr."""
    from tideflow.compiler.irjson import to_json  # lazy: CLI start-up

    result = compile_file(single_input(file))
    show_diagnostics(result.diagnostics, result.sources, [file], stderr_stream())
    if result.ir is None or result.errors:
        sys.exit(EXIT_PROBLEMS)
    text = json.dumps(to_json(result.ir), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        write_output(output, text.encode("utf-8"))


# --- lint -----------------------------------------------------------------------------------


@click.command("lint")
@click.argument("files", metavar="FILE...", nargs=-1, required=True)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "sarif"]),
    default="text",
    show_default=True,
    help="text for people, json like `terraform validate -json`, sarif for code scanning.",
)
@click.option("--strict", is_flag=True, help="Fail on warnings too.")
@click.option(
    "--check-imports",
    is_flag=True,
    help="Also import each job's and consumer's `run` function and check how it is "
    "called (runs the flow's Python modules; `run` does it by default).",
)
@click.option(
    "--max-errors",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Show at most N diagnostics per file (errors and warnings; 0: all). "
    "The summary counts them all.",
)
def lint_command(
    files: tuple[str, ...], output_format: str, strict: bool, check_imports: bool, max_errors: int
) -> None:
    """Check flows and report every problem.

    A folder stands for the .flow files in it. Several files make one report.
    """
    from tideflow.compiler.report import (  # lazy: CLI start-up
        render_json,
        render_sarif,
        shown_per_file,
    )

    inputs = _collect(files, folders=True)
    for problem in inputs.problems:
        echo_error(problem)
    diagnostics: dict[Diagnostic, None] = {}  # a shared include is reported once
    sources: dict[str, str] = {}
    for path in inputs.paths:
        result = compile_file(path, check_imports=check_imports)
        diagnostics.update(dict.fromkeys(result.diagnostics))
        sources.update(result.sources)
    found = list(diagnostics)

    out = stdout_stream()
    if output_format == "json":
        document = render_json(found, sources, max_per_file=max_errors)
        out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    elif output_format == "sarif":
        from tideflow.plugins.manager import installed_plugins  # lazy: CLI start-up

        titles = {rule.code: rule.summary for rule in installed_plugins().lint_rules}
        log = render_sarif(shown_per_file(found, max_errors)[0], rule_titles=titles)
        out.write(json.dumps(log, indent=2, ensure_ascii=False) + "\n")
    elif found:
        show_diagnostics(found, sources, inputs.paths, out, max_per_file=max_errors)
    elif inputs.paths:
        click.echo(f"no problems found in {_where(inputs.paths)}", file=out)
    out.flush()

    errors = sum(1 for d in found if d.is_error)
    if inputs.problems:
        sys.exit(EXIT_USAGE)
    if errors or (strict and found):
        sys.exit(EXIT_PROBLEMS)


def _where(paths: Sequence[str]) -> str:
    return paths[0] if len(paths) == 1 else f"{len(paths)} files"


# --- graph ----------------------------------------------------------------------------------


@click.command("graph")
@click.argument("file", metavar="FILE")
@click.option(
    "-o", "--output", metavar="PATH", help="Write the picture here (format from the suffix)."
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["dot", "svg", "png", "pdf"]),
    help="Picture format (default: from -o's suffix, else dot).",
)
@click.option("--legend/--no-legend", default=True, show_default=True, help="Draw a key.")
def graph_command(file: str, output: str | None, output_format: str | None, legend: bool) -> None:
    """Draw a flow: jobs, topics, consumers, brokers, pools, and where jobs run.

    Without -o, DOT text goes to stdout; svg, png and pdf need graphviz's `dot` program.
    """
    # lazy: CLI start-up (graphviz and the drawing are for `graph` only)
    import graphviz

    from tideflow.compiler.graph import render

    chosen = output_format or _format_from_suffix(output)
    if output is None and chosen in {"png", "pdf"} and stdout_stream().isatty():
        raise UsageProblem(f"not writing a {chosen} picture to a terminal; use -o FILE.{chosen}")

    result = compile_file(single_input(file))
    show_diagnostics(result.errors, result.sources, [file], stderr_stream())  # warnings: `lint`
    if result.ir is None or result.errors:
        sys.exit(EXIT_PROBLEMS)
    try:
        data = render(result.ir, chosen, legend=legend)
    except graphviz.ExecutableNotFound as exc:
        raise UsageProblem(_DOT_MISSING) from exc
    except graphviz.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise UsageProblem(
            f"graphviz's `dot` failed to draw {chosen}: " + (detail[0] if detail else str(exc))
        ) from exc
    if output is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_output(output, data)


def _format_from_suffix(output: str | None) -> str:
    if output is None:
        return "dot"
    suffix = Path(output).suffix.lower()
    if suffix not in GRAPH_SUFFIXES:
        known = ", ".join(sorted(GRAPH_SUFFIXES))
        raise UsageProblem(
            f"cannot tell the picture format from `{output}`; use a suffix ({known}) or --format"
        )
    return GRAPH_SUFFIXES[suffix]


# --- fmt ------------------------------------------------------------------------------------


@click.command("fmt")
@click.argument("files", metavar="FILE...", nargs=-1, required=True)
@click.option("--check", is_flag=True, help="Change nothing; exit 1 if a file would change.")
@click.option("--diff", is_flag=True, help="Change nothing; print the changes; exit 1 if any.")
def fmt_command(files: tuple[str, ...], check: bool, diff: bool) -> None:
    """Rewrite flows in the canonical format.

    A folder stands for the .flow files in it.
    """
    # lazy: CLI start-up (the formatter is for `fmt` only)
    from tideflow.dsl.formatter import format_source
    from tideflow.dsl.parser import decode_source

    inputs = _collect(files, folders=True)
    for problem in inputs.problems:
        echo_error(problem)
    changed: list[str] = []
    unchanged = 0
    broken = 0
    for path in inputs.paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            inputs.problems.append(f"cannot read `{path}`: {os_error_reason(exc)}")
            echo_error(inputs.problems[-1])
            continue
        text, undecodable = decode_source(data, path)
        if undecodable is not None:
            shown = {path: data.decode("utf-8", "replace")}
            show_diagnostics([undecodable], shown, [path], stderr_stream())
            broken += 1
            continue
        result = format_source(text, path)
        show_diagnostics(result.diagnostics, {path: text}, [path], stderr_stream())
        if result.text is None:
            broken += 1
            continue
        if result.text == text:
            unchanged += 1
            continue
        changed.append(path)
        if diff:
            _print_diff(path, text, result.text)
        if check:
            click.echo(f"would reformat {path}")
        elif not diff:
            _rewrite(path, result.text)

    _fmt_summary(changed, unchanged, broken, dry_run=check or diff)
    if inputs.problems:
        sys.exit(EXIT_USAGE)
    if broken or ((check or diff) and changed):  # like `--check`: CI can gate on `--diff`
        sys.exit(EXIT_PROBLEMS)


def _print_diff(path: str, before: str, after: str) -> None:
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=f"{path}",
        tofile=f"{path} (formatted)",
    )
    out = stdout_stream()
    for line in lines:
        out.write(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    out.flush()


def _rewrite(path: str, text: str) -> None:
    """Replace `path` with `text` atomically, keeping the file's permissions."""
    target = Path(path)
    try:
        handle, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
                stream.write(text)
            shutil.copymode(target, temporary)
            Path(temporary).replace(target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise UsageProblem(f"cannot write `{path}`: {os_error_reason(exc)}") from exc


def _fmt_summary(changed: Sequence[str], unchanged: int, broken: int, *, dry_run: bool) -> None:
    parts = []
    if changed:
        verb = "would be reformatted" if dry_run else "reformatted"
        parts.append(f"{_count(len(changed), 'file')} {verb}")
    if unchanged:
        parts.append(f"{_count(unchanged, 'file')} already formatted")
    if broken:
        parts.append(f"{_count(broken, 'file')} with errors")
    if parts:
        click.echo(", ".join(parts), err=True)


def _count(number: int, word: str) -> str:
    return f"{number} {word}" if number == 1 else f"{number} {word}s"
