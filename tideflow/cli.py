"""The `tideflow` command line: compile, lint, graph and fmt, and a place for more.

Exit status: 0 when all is well; 1 when a flow has problems (errors, warnings with
`--strict`, files `fmt --check` would change); 2 for usage and I/O problems (a
missing file, an unreadable folder, no `dot` program); 3 for an internal error,
which prints one line and a hint to report it (the traceback with TIDEFLOW_DEBUG=1).

Commands that live elsewhere are added with `main.add_command(...)`, or listed in
`LAZY_COMMANDS` so that their module is imported only when the command runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import json
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, NoReturn

import click

from tideflow import __version__

if TYPE_CHECKING:
    from rich.console import Console

    from tideflow.compiler import CompileResult
    from tideflow.compiler.ir import FlowIR
    from tideflow.dsl.diagnostics import Diagnostic

__all__ = [
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_USAGE",
    "LAZY_COMMANDS",
    "load_flow",
    "main",
]

EXIT_OK: Final = 0
EXIT_PROBLEMS: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERNAL: Final = 3

LAZY_COMMANDS: dict[str, str] = {
    # "name": "module:attribute" of a click command, imported only when it runs
    "plugins": "tideflow.cli_plugins:plugins_command",
    "runs": "tideflow.cli_runtime:runs_command",
    "logs": "tideflow.cli_runtime:logs_command",
    "cancel": "tideflow.cli_runtime:cancel_command",
    "flow-runs": "tideflow.cli_runtime:flow_runs_command",
    "requests": "tideflow.cli_runtime:requests_command",
    "run": "tideflow.cli_run:run_command",
    "trigger": "tideflow.cli_run:trigger_command",
    "status": "tideflow.cli_run:status_command",
    "upcoming": "tideflow.cli_run:upcoming_command",
    "worker": "tideflow.cli_worker:worker_command",
    "simulate": "tideflow.cli_autoscale:simulate_command",
    "explain": "tideflow.cli_autoscale:explain_command",
    "serve": "tideflow.cli_serve:serve_command",
    "dlq": "tideflow.cli_dlq:dlq_command",
}
"""Commands defined in other modules, loaded on first use (keeps `tideflow lint` fast)."""

GRAPH_SUFFIXES: Final = {".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png", ".pdf": "pdf"}
_DOT_MISSING: Final = (
    "graphviz's `dot` program was not found on PATH; it draws svg, png and pdf pictures\n"
    "  install it with `apt-get install graphviz` (Debian, Ubuntu), `dnf install graphviz`\n"
    "  (Fedora) or `brew install graphviz` (macOS), or write DOT text with `-o FILE.dot`"
)


# --- the group: colour, errors, lazy commands ----------------------------------------------


class UsageProblem(click.ClickException):
    """A problem with how tideflow was called or with the files it was given (exit 2)."""

    exit_code = EXIT_USAGE

    def show(self, file: IO[Any] | None = None) -> None:
        _error(self.message)


class TideflowGroup(click.Group):
    """A click group that loads `LAZY_COMMANDS` on demand and turns unexpected
    exceptions into one line instead of a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in LAZY_COMMANDS:
            return command
        target = LAZY_COMMANDS[cmd_name]
        module_name, _, attribute = target.partition(":")
        try:
            loaded = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(loaded, click.Command):
                raise TypeError(f"{target} is not a click command")
        except Exception as exc:
            # `--help` still lists the others; running this one reports the bug
            return _broken_command(cmd_name, target, exc)
        return loaded

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            _quiet_broken_pipe()
        except Exception as exc:  # every other exception is a bug in tideflow
            _internal_error(exc)


def _broken_command(name: str, target: str, exc: Exception) -> click.Command:
    def fail() -> None:
        _internal_error(exc)

    return click.Command(
        name, callback=fail, help=f"(cannot be loaded from {target})", add_help_option=False
    )


def _internal_error(exc: BaseException) -> NoReturn:
    if os.environ.get("TIDEFLOW_DEBUG") == "1":
        traceback.print_exception(exc, file=sys.stderr)
        hint = "please report it with the traceback above"
    else:
        hint = "please report it; TIDEFLOW_DEBUG=1 shows the traceback"
    detail = f"{type(exc).__name__}: {exc}".rstrip(": ").replace("\n", " ")
    _error(f"internal error ({detail}); this is a bug in tideflow: {hint}")
    sys.exit(EXIT_INTERNAL)


def _quiet_broken_pipe() -> NoReturn:
    # the reader went away (`tideflow compile x | head`): that is not an error to shout about
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (a test runner's buffer)
        pass
    sys.exit(EXIT_OK)


@dataclass(frozen=True, slots=True)
class Settings:
    """Options of the `tideflow` group that every command sees (`ctx.obj`)."""

    color: str = "auto"  # auto | always | never
    include_root: str | None = None  # None: the folder of each flow file compiled

    def color_for(self, stream: IO[Any]) -> bool:
        """Whether to colour `stream`: asked for, or a terminal and NO_COLOR unset."""
        if self.color != "auto":
            return self.color == "always"
        if os.environ.get("NO_COLOR"):
            return False
        if os.environ.get("FORCE_COLOR"):
            return True
        isatty = getattr(stream, "isatty", None)
        return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


@click.group(
    cls=TideflowGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Exit status: 0 ok, 1 problems found, 2 usage or I/O error, 3 internal error.",
)
@click.version_option(
    __version__, "--version", prog_name="tideflow", message="%(prog)s %(version)s"
)
@click.option(
    "--color",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Colour diagnostics (auto: on a terminal, unless NO_COLOR is set).",
)
@click.option(
    "--include-root",
    type=click.Path(file_okay=False, exists=True),
    envvar="TIDEFLOW_INCLUDE_ROOT",
    default=None,
    help="Folder that `include`s may read from [default: the folder of each flow file].",
)
@click.pass_context
def main(ctx: click.Context, color: str, include_root: str | None) -> None:
    """tideflow: jobs on schedules, messages on brokers, consumers that follow the backlog."""
    from tideflow.runtime import redaction  # stdlib only: costs nothing at start

    # before any command reads a secret(): whatever logs it afterwards prints [secret]
    redaction.configure()
    ctx.obj = Settings(color=color, include_root=include_root)
    if include_root is not None:
        # processes this one starts (consumer instances, job workers) compile the same flow
        os.environ["TIDEFLOW_INCLUDE_ROOT"] = str(Path(include_root).resolve())


def _settings() -> Settings:
    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(Settings) if ctx is not None else None
    return found if found is not None else Settings()


def text_console() -> Console:
    """A console for stdout in the `tideflow` group's colour choice, 120 columns when
    piped. Markup and emoji codes are off: what it prints (names, docs, explanations)
    is shown as it is, and styles come only from `Text` objects."""
    from rich.console import Console

    color = _settings().color_for(sys.stdout)
    return Console(
        file=sys.stdout,
        force_terminal=color,
        no_color=not color,
        width=None if sys.stdout.isatty() else 120,
        highlight=False,
        markup=False,
        emoji=False,
    )


# --- messages -------------------------------------------------------------------------------


def _stderr() -> IO[str]:
    # looked up on each call: click's test runner swaps the streams
    return sys.stderr


def _stdout() -> IO[str]:
    return sys.stdout


def _error(message: str) -> None:
    stream = _stderr()
    color = _settings().color_for(stream)
    click.echo(click.style("error", fg="red", bold=True) + ": " + message, file=stream, color=color)


def _show_diagnostics(
    diagnostics: Sequence[Diagnostic],
    sources: Mapping[str, str],
    paths: Sequence[str],
    stream: IO[str],
    *,
    max_per_file: int | None = None,
) -> None:
    """Diagnostics as text: at most `max_per_file` per file (default: the report's limit)."""
    from tideflow.compiler.report import MAX_PER_FILE, render_text

    if not diagnostics:
        return
    text = render_text(
        diagnostics,
        sources,
        paths=paths,
        color=_settings().color_for(stream),
        max_per_file=MAX_PER_FILE if max_per_file is None else max_per_file,
    )
    stream.write(text)
    stream.flush()


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
                inputs.problems.append(f"cannot read folder `{where}`: {_reason(exc)}")
                continue
            if not found:
                inputs.problems.append(f"no .flow files in folder `{argument}`")
            inputs.paths.extend(found)
            continue
        problem = _unreadable(argument)
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


def _unreadable(path: str) -> str | None:
    """Why `path` cannot be read as a file, or None when it can."""
    if Path(path).is_dir():
        return f"`{path}` is a folder, not a .flow file"
    try:
        with Path(path).open("rb"):
            pass
    except OSError as exc:
        return f"cannot read `{path}`: {_reason(exc)}"
    return None


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _single_input(path: str) -> str:
    problem = _unreadable(path)
    if problem is not None:
        raise UsageProblem(problem)
    return path


def _write_output(path: str, data: bytes) -> None:
    """Write `data` to `path`, making its folder; a failure is a usage problem (exit 2)."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    except OSError as exc:
        raise UsageProblem(f"cannot write `{path}`: {_reason(exc)}") from exc


def _compile(path: str, *, check_imports: bool = False) -> CompileResult:
    """The one place flows are compiled: against the installed plugins' backends, with
    their lint rules. A plugin that failed to load is reported once, as a warning.
    `check_imports` adds the import check (E501-E503) of a flow that compiled."""
    from tideflow.compiler import compile_flow
    from tideflow.plugins.manager import installed_plugins

    plugins = installed_plugins()
    _warn_plugin_problems(tuple(str(problem) for problem in plugins.problems))
    result = compile_flow(
        path,
        catalog=plugins.catalog,
        rules=plugins.lint_rules,
        include_root=_settings().include_root,
    )
    if not check_imports or result.ir is None:
        return result
    from tideflow.compiler.imports import check_imports as imports_of

    found = imports_of(result.ir, result.files)
    if not found:
        return result
    diagnostics = tuple(sorted((*result.diagnostics, *found), key=lambda d: d.sort_key()))
    return dataclasses.replace(result, diagnostics=diagnostics, ir=None)


def load_flow(file: str, *, warnings: bool = False, check_imports: bool = False) -> FlowIR:
    """Compile FILE for a command that uses it (run, worker, trigger, ...): errors go to
    stderr and exit 1, a missing or unreadable file exits 2. Warnings are shown only
    with `warnings` (`run`, once at start): `lint` is where they belong, and repeating
    them in every status or trigger buries the command's own output. With
    `check_imports`, the flow's Python functions are imported and checked too."""
    result = _compile(_single_input(file), check_imports=check_imports)
    shown = result.diagnostics if warnings else result.errors
    _show_diagnostics(shown, result.sources, [file], _stderr())
    if result.ir is None or result.errors:
        sys.exit(EXIT_PROBLEMS)
    return result.ir


@functools.cache
def _warn_plugin_problems(problems: tuple[str, ...]) -> None:
    stream = _stderr()
    color = _settings().color_for(stream)
    for problem in problems:
        label = click.style("warning", fg="yellow", bold=True)
        click.echo(f"{label}: {problem}", file=stream, color=color)


# --- compile --------------------------------------------------------------------------------


@main.command("compile")
@click.argument("file", metavar="FILE")
@click.option("-o", "--output", metavar="PATH", help="Write the IR JSON here instead of to stdout.")
def compile_command(file: str, output: str | None) -> None:
    """Compile FILE and print its IR as JSON; problems go to stderr."""
    from tideflow.compiler.irjson import to_json

    result = _compile(_single_input(file))
    _show_diagnostics(result.diagnostics, result.sources, [file], _stderr())
    if result.ir is None or result.errors:
        sys.exit(EXIT_PROBLEMS)
    text = json.dumps(to_json(result.ir), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        _write_output(output, text.encode("utf-8"))


# --- lint -----------------------------------------------------------------------------------


@main.command("lint")
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
    from tideflow.compiler.report import render_json, render_sarif, shown_per_file

    inputs = _collect(files, folders=True)
    for problem in inputs.problems:
        _error(problem)
    diagnostics: dict[Diagnostic, None] = {}  # a shared include is reported once
    sources: dict[str, str] = {}
    for path in inputs.paths:
        result = _compile(path, check_imports=check_imports)
        diagnostics.update(dict.fromkeys(result.diagnostics))
        sources.update(result.sources)
    found = list(diagnostics)

    out = _stdout()
    if output_format == "json":
        document = render_json(found, sources, max_per_file=max_errors)
        out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    elif output_format == "sarif":
        from tideflow.plugins.manager import installed_plugins

        titles = {rule.code: rule.summary for rule in installed_plugins().lint_rules}
        log = render_sarif(shown_per_file(found, max_errors)[0], rule_titles=titles)
        out.write(json.dumps(log, indent=2, ensure_ascii=False) + "\n")
    elif found:
        _show_diagnostics(found, sources, inputs.paths, out, max_per_file=max_errors)
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


@main.command("graph")
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
    """Draw a flow: jobs, topics, consumers, brokers, pools.

    Without -o, DOT text goes to stdout; svg, png and pdf need graphviz's `dot` program.
    """
    import graphviz

    from tideflow.compiler.graph import render

    chosen = output_format or _format_from_suffix(output)
    if output is None and chosen in {"png", "pdf"} and _stdout().isatty():
        raise UsageProblem(f"not writing a {chosen} picture to a terminal; use -o FILE.{chosen}")

    result = _compile(_single_input(file))
    _show_diagnostics(result.errors, result.sources, [file], _stderr())  # warnings: `lint`
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
        _write_output(output, data)


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


@main.command("fmt")
@click.argument("files", metavar="FILE...", nargs=-1, required=True)
@click.option("--check", is_flag=True, help="Change nothing; exit 1 if a file would change.")
@click.option("--diff", is_flag=True, help="Change nothing; print the changes; exit 1 if any.")
def fmt_command(files: tuple[str, ...], check: bool, diff: bool) -> None:
    """Rewrite flows in the canonical format.

    A folder stands for the .flow files in it.
    """
    from tideflow.dsl.formatter import format_source
    from tideflow.dsl.parser import decode_source

    inputs = _collect(files, folders=True)
    for problem in inputs.problems:
        _error(problem)
    changed: list[str] = []
    unchanged = 0
    broken = 0
    for path in inputs.paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            inputs.problems.append(f"cannot read `{path}`: {_reason(exc)}")
            _error(inputs.problems[-1])
            continue
        text, undecodable = decode_source(data, path)
        if undecodable is not None:
            shown = {path: data.decode("utf-8", "replace")}
            _show_diagnostics([undecodable], shown, [path], _stderr())
            broken += 1
            continue
        result = format_source(text, path)
        _show_diagnostics(result.diagnostics, {path: text}, [path], _stderr())
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
    out = _stdout()
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
        raise UsageProblem(f"cannot write `{path}`: {_reason(exc)}") from exc


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


# --- other commands -------------------------------------------------------------------------
# A command that lives in its own module joins here with `main.add_command(command)`, or
# through LAZY_COMMANDS above when importing its module is costly (the runtime, a server).
