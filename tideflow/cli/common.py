"""What the commands share: exit codes, the group's settings, error messages, consoles,
compiling a flow, and the options and answers of the commands that read run history.

Names here are public because several command modules use them. Importing this module
stays cheap (click and the standard library): rich, the compiler and the store are
imported inside the functions that need them, so that `tideflow lint` starts fast.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from enum import Enum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, TypeVar

import click

from tideflow.dsl.durations import parse_duration
from tideflow.dsl.timetext import format_elapsed, human_delta

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from tideflow.compiler import CompileResult
    from tideflow.compiler.ir import ConsumerNode, FlowIR, JobNode
    from tideflow.dsl.diagnostics import Diagnostic
    from tideflow.runtime.model import RunStatus
    from tideflow.runtime.store import Store, StoreNotFound

__all__ = [
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_USAGE",
    "STATUS_STYLES",
    "Settings",
    "UsageProblem",
    "compile_file",
    "consumer_of",
    "count_by_status",
    "current_settings",
    "echo_error",
    "emit_json",
    "empty_store",
    "format_option",
    "job_schedule",
    "load_flow",
    "make_console",
    "open_store",
    "os_error_reason",
    "parse_seconds",
    "parse_since",
    "show_diagnostics",
    "single_input",
    "state_option",
    "status_text",
    "stderr_stream",
    "stdout_stream",
    "text_console",
    "to_jsonable",
    "unreadable",
    "when",
    "write_output",
]

EXIT_OK: Final = 0
EXIT_PROBLEMS: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERNAL: Final = 3

F = TypeVar("F", bound=Callable[..., Any])


# --- the group's settings and messages ------------------------------------------------------


class UsageProblem(click.ClickException):
    """A problem with how tideflow was called or with the files it was given (exit 2)."""

    exit_code = EXIT_USAGE

    def show(self, file: IO[Any] | None = None) -> None:
        echo_error(self.message)


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


def current_settings() -> Settings:
    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(Settings) if ctx is not None else None
    return found if found is not None else Settings()


def text_console() -> Console:
    """A console for stdout in the `tideflow` group's colour choice, 120 columns when
    piped. Markup and emoji codes are off: what it prints (names, docs, explanations)
    is shown as it is, and styles come only from `Text` objects."""
    from rich.console import Console  # lazy: CLI start-up

    color = current_settings().color_for(sys.stdout)
    return Console(
        file=sys.stdout,
        force_terminal=color,
        no_color=not color,
        width=None if sys.stdout.isatty() else 120,
        highlight=False,
        markup=False,
        emoji=False,
    )


def stderr_stream() -> IO[str]:
    # looked up on each call: click's test runner swaps the streams
    return sys.stderr


def stdout_stream() -> IO[str]:
    return sys.stdout


def echo_error(message: str) -> None:
    stream = stderr_stream()
    color = current_settings().color_for(stream)
    click.echo(click.style("error", fg="red", bold=True) + ": " + message, file=stream, color=color)


def show_diagnostics(
    diagnostics: Sequence[Diagnostic],
    sources: Mapping[str, str],
    paths: Sequence[str],
    stream: IO[str],
    *,
    max_per_file: int | None = None,
) -> None:
    """Diagnostics as text: at most `max_per_file` per file (default: the report's limit)."""
    from tideflow.compiler.report import MAX_PER_FILE, render_text  # lazy: CLI start-up

    if not diagnostics:
        return
    text = render_text(
        diagnostics,
        sources,
        paths=paths,
        color=current_settings().color_for(stream),
        max_per_file=MAX_PER_FILE if max_per_file is None else max_per_file,
    )
    stream.write(text)
    stream.flush()


# --- files and compiling -------------------------------------------------------------------


def unreadable(path: str) -> str | None:
    """Why `path` cannot be read as a file, or None when it can."""
    if Path(path).is_dir():
        return f"`{path}` is a folder, not a .flow file"
    try:
        with Path(path).open("rb"):
            pass
    except OSError as exc:
        return f"cannot read `{path}`: {os_error_reason(exc)}"
    return None


def os_error_reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def single_input(path: str) -> str:
    problem = unreadable(path)
    if problem is not None:
        raise UsageProblem(problem)
    return path


def write_output(path: str, data: bytes) -> None:
    """Write `data` to `path`, making its folder; a failure is a usage problem (exit 2)."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    except OSError as exc:
        raise UsageProblem(f"cannot write `{path}`: {os_error_reason(exc)}") from exc


def compile_file(path: str, *, check_imports: bool = False) -> CompileResult:
    """The one place flows are compiled: against the installed plugins' backends, with
    their lint rules. A plugin that failed to load is reported once, as a warning.
    `check_imports` adds the import check (E501-E503) of a flow that compiled."""
    # lazy: CLI start-up (the compiler and the plugins are loaded by the commands using them)
    from tideflow.compiler import compile_flow
    from tideflow.plugins.manager import installed_plugins

    plugins = installed_plugins()
    _warn_plugin_problems(tuple(str(problem) for problem in plugins.problems))
    result = compile_flow(
        path,
        catalog=plugins.catalog,
        rules=plugins.lint_rules,
        include_root=current_settings().include_root,
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
    result = compile_file(single_input(file), check_imports=check_imports)
    shown = result.diagnostics if warnings else result.errors
    show_diagnostics(shown, result.sources, [file], stderr_stream())
    if result.ir is None or result.errors:
        sys.exit(EXIT_PROBLEMS)
    return result.ir


def consumer_of(flow: FlowIR, name: str, *, file: str | None = None) -> ConsumerNode:
    """The consumer called `name`; an unknown one is a usage problem that suggests a close
    name or lists the flow's consumers (`file`, when given, says where the flow is)."""
    # lazy: CLI start-up (the suggester loads the plugin API, tens of ms)
    from tideflow.dsl.suggest import suggest

    consumers = flow.consumers
    found = consumers.get(name)
    if found is not None:
        return found
    close = suggest(name, consumers)
    if close:
        hint = f"; {close}"
    elif consumers:
        hint = f" (consumers: {', '.join(sorted(consumers))})"
    else:
        hint = " (it has no consumers)"
    where = f" ({file})" if file is not None else ""
    raise UsageProblem(f'flow "{flow.info.name}"{where} has no consumer `{name}`{hint}')


@functools.cache
def _warn_plugin_problems(problems: tuple[str, ...]) -> None:
    stream = stderr_stream()
    color = current_settings().color_for(stream)
    for problem in problems:
        label = click.style("warning", fg="yellow", bold=True)
        click.echo(f"{label}: {problem}", file=stream, color=color)


# --- run history: options, the store, times and tables -------------------------------------


STATUS_STYLES: Mapping[str, str] = {
    "success": "green",
    "failed": "bold red",
    "running": "cyan",
    "retrying": "yellow",
    "queued": "blue",
    "pending": "dim",
    "skipped": "dim",
    "cancelled": "magenta",
    "timeout": "red",
    "crashed": "bold red",
    "lost": "red",
    "interrupted": "magenta",
}


def state_option(func: F) -> F:
    return click.option(
        "--state",
        "state_url",
        metavar="URL",
        default=None,
        help="State store: a SQLite path or a postgresql:// URL "
        "(default: $TIDEFLOW_STATE, else state.db in the user's state folder, "
        "~/.local/state/tideflow on Linux).",
    )(func)


def format_option(func: F) -> F:
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="Output format.",
    )(func)


@contextmanager
def open_store(
    url: str | None, *, create: bool = False, empty_if_missing: bool = False
) -> Iterator[Store]:
    """The store `url` names (see `resolve_url`). Only commands that write (`run`,
    `trigger`) pass `create`: a reading command without a store says so (exit 2), or,
    with `empty_if_missing` (it has a flow file to say something about), notes it on
    stderr and reads an empty history."""
    from tideflow.runtime.store import Store, StoreError, StoreNotFound  # lazy: CLI start-up

    try:
        store = Store.open(url, create=create)
    except StoreNotFound as exc:
        if not empty_if_missing:
            raise UsageProblem(_not_found(str(exc), url)) from exc
        store = empty_store(exc, url)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        yield store
    finally:
        store.close()


def empty_store(missing: StoreNotFound, url: str | None) -> Store:
    """For a command given a flow file but no store: a note on stderr, and an empty
    history in memory (nothing is written anywhere)."""
    from tideflow.runtime.store import Store  # lazy: CLI start-up

    click.echo(f"note: {_not_found(str(missing), url)}", err=True)
    return Store.open("sqlite://")


def _not_found(message: str, url: str | None) -> str:
    from tideflow.runtime.store import STATE_ENV  # lazy: CLI start-up

    text = (
        f"{message}: nothing has run with it yet (`tideflow run FILE` creates it); "
        f"--state or ${STATE_ENV} name another"
    )
    legacy = Path(".tideflow", "state.db")
    if url is None and not os.environ.get(STATE_ENV) and legacy.exists():
        # tideflow kept the store in the current folder before it had a per-user default
        text += f"; this folder has an older one: --state {legacy}"
    return text


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`5m`, `2h`, `1d` ago, or an ISO date/time (UTC when no zone is given)."""
    now = now or datetime.now(UTC)
    seconds = parse_duration(text)
    if seconds is not None:
        return now - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration (5m, 2h, 1d) nor a date (2026-11-22T10:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_seconds(text: str) -> float:
    """A duration as the language writes it (`30s`, `2m`, `500ms`, `1h30m`), or a plain
    number of seconds."""
    seconds = parse_duration(text, bare_seconds=True)
    if seconds is not None:
        return seconds
    if text.strip().startswith("-"):
        raise click.BadParameter("a duration cannot be negative")
    raise click.BadParameter(f"{text!r} is not a duration such as 30s, 2m or 500ms")


def when(moment: datetime | None, now: datetime | None = None, zone: tzinfo | None = None) -> str:
    """A time as people read it in a table: the clock time in `zone` (default: this
    machine's), labelled with the zone, and how long ago: `00:30:00 EST (in 5h)`."""
    if moment is None:
        return "-"
    now = now or datetime.now(UTC)
    local = moment.astimezone(zone)
    delta = (now - moment).total_seconds()
    shape = "%H:%M:%S %Z" if abs(delta) < 86400 else "%Y-%m-%d %H:%M %Z"
    return f"{local.strftime(shape)} ({human_delta(delta)})"


PIPED_WIDTH = 10_000  # wider than any row: tables take only the width they need


def make_console(*, stderr: bool = False) -> Console:
    """A console for tables: the terminal's width, or an unbounded page when piped (so
    that `tideflow runs | grep failed` sees whole rows, never cut or folded).

    Markup and emoji codes are off: what it prints (names, notes, log lines, output)
    is user and job text, shown as it is (`[/tmp/x]`, `[secret]`, `:x:`); styles come
    only from `Text` objects."""
    from rich.console import Console  # lazy: CLI start-up

    console = Console(stderr=stderr, highlight=False, markup=False, emoji=False)
    if not console.is_terminal:
        console = Console(
            stderr=stderr, highlight=False, markup=False, emoji=False, width=PIPED_WIDTH
        )
    return console


def status_text(status: str) -> Text:
    from rich.text import Text  # lazy: CLI start-up

    return Text(status, style=STATUS_STYLES.get(status, ""))


def to_jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    click.echo(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False))


def count_by_status(
    counts: Mapping[tuple[str, str, RunStatus], int], flow: str
) -> dict[str, Counter[str]]:
    by_job: dict[str, Counter[str]] = {}
    for (count_flow, job, status), n in counts.items():
        if count_flow == flow:
            by_job.setdefault(job, Counter())[status.value] += n
    return by_job


def job_schedule(job: JobNode) -> str:
    """What starts `job`, as the status tables say it (`every 90s`, `cron 0 2 * * * Europe/Paris`,
    `after extract`, `manual`)."""
    from tideflow.compiler.describe import describe_schedule  # lazy: CLI start-up

    if job.schedule is None:
        return f"after {', '.join(job.after)}" if job.after else "manual"
    return describe_schedule(job.schedule, interval=_interval, zone=" {}", show_utc=False)


def _interval(seconds: float) -> str:
    return f"{seconds:g}s" if seconds < 120 else format_elapsed(seconds)
