"""The `tideflow` command line: the group, its options, and where each command lives.

Exit status: 0 when all is well; 1 when a flow has problems (errors, warnings with
`--strict`, files `fmt --check` would change); 2 for usage and I/O problems (a
missing file, an unreadable folder, no `dot` program); 3 for an internal error,
which prints one line and a hint to report it (the traceback with TIDEFLOW_DEBUG=1).

Each command family has its own module (`source`: compile, lint, graph, fmt; `run`;
`history`: runs, logs, flow-runs, status; `requests`: trigger, cancel, requests;
`upcoming`; `worker`; `autoscale`: simulate, explain; `dlq`; `plugins`; `serve`; `lsp`),
sharing `common`. `LAZY_COMMANDS` names them: a module is imported only when one of
its commands runs, which keeps `tideflow lint` fast.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

import click

from tideflow import __version__
from tideflow.cli.common import EXIT_INTERNAL, EXIT_OK, Settings, echo_error
from tideflow.runtime import redaction  # the standard library only: cheap at start

__all__ = ["LAZY_COMMANDS", "TideflowGroup", "main"]

LAZY_COMMANDS: dict[str, str] = {
    # "name": "module:attribute" of a click command, imported only when it runs
    "compile": "tideflow.cli.source:compile_command",
    "lint": "tideflow.cli.source:lint_command",
    "graph": "tideflow.cli.source:graph_command",
    "fmt": "tideflow.cli.source:fmt_command",
    "run": "tideflow.cli.run:run_command",
    "runs": "tideflow.cli.history:runs_command",
    "logs": "tideflow.cli.history:logs_command",
    "flow-runs": "tideflow.cli.history:flow_runs_command",
    "status": "tideflow.cli.history:status_command",
    "trigger": "tideflow.cli.requests:trigger_command",
    "cancel": "tideflow.cli.requests:cancel_command",
    "requests": "tideflow.cli.requests:requests_command",
    "upcoming": "tideflow.cli.upcoming:upcoming_command",
    "worker": "tideflow.cli.worker:worker_command",
    "simulate": "tideflow.cli.autoscale:simulate_command",
    "explain": "tideflow.cli.autoscale:explain_command",
    "dlq": "tideflow.cli.dlq:dlq_command",
    "plugins": "tideflow.cli.plugins:plugins_command",
    "serve": "tideflow.cli.serve:serve_command",
    "lsp": "tideflow.cli.lsp:lsp_command",
}
"""Every command, by the module that defines it, loaded on first use."""


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
    echo_error(f"internal error ({detail}); this is a bug in tideflow: {hint}")
    sys.exit(EXIT_INTERNAL)


def _quiet_broken_pipe() -> NoReturn:
    # the reader went away (`tideflow compile x | head`): that is not an error to shout about
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (a test runner's buffer)
        pass
    sys.exit(EXIT_OK)


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
    # before any command reads a secret(): whatever logs it afterwards prints [secret]
    redaction.configure()
    ctx.obj = Settings(color=color, include_root=include_root)
    if include_root is not None:
        # processes this one starts (consumer instances, job workers) compile the same flow
        os.environ["TIDEFLOW_INCLUDE_ROOT"] = str(Path(include_root).resolve())
