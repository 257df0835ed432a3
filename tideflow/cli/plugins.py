"""`tideflow plugins`: what is installed, and the options of one backend.

    tideflow plugins                      plugins, distributions, versions, backends
    tideflow plugins --format json        the same as JSON
    tideflow plugins --describe redis     the options of a backend (`broker:redis`
                                          when the name is used by several kinds)

Exit status: 0; 1 when a plugin has a problem (it is listed after the table);
2 for an unknown or ambiguous backend name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import click
from rich.table import Table
from rich.text import Text

from tideflow import __version__
from tideflow.cli.common import EXIT_PROBLEMS, UsageProblem, echo_error, text_console
from tideflow.dsl.durations import format_duration
from tideflow.dsl.suggest import suggest
from tideflow.plugins.api import (
    BoolType,
    DurationType,
    EnumType,
    Field,
    ListType,
    MapType,
    StringType,
    ValueType,
)
from tideflow.plugins.manager import BackendEntry, PluginSet, installed_plugins

__all__ = ["plugins_command"]

KINDS: Final = ("broker", "scaler", "notifier", "executor")


# --- values as a .flow file writes them ---------------------------------------------------


def format_value(value: object, vtype: ValueType) -> str:
    """A default value as it would be written in a `.flow` file."""
    if value is None:
        return ""
    match vtype:
        case DurationType() if isinstance(value, int | float):
            return format_duration(float(value))
        case BoolType():
            return "true" if value else "false"
        case EnumType():
            return str(value)
        case ListType() if isinstance(value, list | tuple):
            return "[" + ", ".join(format_value(v, vtype.item) for v in value) + "]"
        case MapType() if isinstance(value, Mapping):
            inner = "  ".join(f"{k} = {format_value(v, vtype.value)}" for k, v in value.items())
            return "{ " + inner + " }" if inner else "{}"
        case StringType():
            return json.dumps(value)
    return json.dumps(value) if isinstance(value, str) else str(value)


def _json_value(value: object) -> object:
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


# --- listing ------------------------------------------------------------------------------


def _provider(entry: BackendEntry) -> str:
    if entry.plugin is not None:
        return entry.plugin.describe()
    return "tideflow (built-in; option schema only, not implemented yet)"


def _schema_only(plugins: PluginSet) -> list[BackendEntry]:
    return [
        entry
        for kind in KINDS
        for _, entry in sorted(plugins.backends.get(kind, {}).items())
        if entry.backend_class is None
    ]


def _listing_json(plugins: PluginSet) -> dict[str, Any]:
    return {
        "plugins": [
            {
                "name": info.name,
                "module": info.module,
                "distribution": info.distribution,
                "version": info.version,
                "builtin": info.builtin,
                "backends": [{"kind": kind, "name": name} for kind, name in info.backends],
                "lint_rules": list(info.lint_rules),
            }
            for info in plugins.plugins
        ],
        "schema_only": [{"kind": e.kind, "name": e.name} for e in _schema_only(plugins)],
        "problems": [
            {
                "plugin": p.plugin,
                "distribution": p.distribution,
                "version": p.version,
                "message": p.message,
            }
            for p in plugins.problems
        ],
        "disabled": list(plugins.disabled),
    }


def _print_listing(plugins: PluginSet) -> None:
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    for column in ("plugin", "distribution", "version", "provides"):
        table.add_column(column, overflow="fold")
    for info in plugins.plugins:
        provides = [f"{kind}:{name}" for kind, name in info.backends]
        provides += [f"lint:{code}" for code in info.lint_rules]
        table.add_row(
            info.name + (" (built-in)" if info.builtin else ""),
            info.distribution or "-",
            info.version or "-",
            ", ".join(provides) or "-",
        )
    schema_only = _schema_only(plugins)
    if schema_only:
        # built-ins whose classes are still to come: the compiler knows their options
        table.add_row(
            "tideflow (built-in)",
            "tideflow",
            __version__,
            ", ".join(f"{e.kind}:{e.name}*" for e in schema_only),
        )
    console = text_console()
    console.print(table)
    if schema_only:
        console.print("* option schema only: flows naming it compile; it cannot run yet")
    if plugins.disabled:
        console.print(f"disabled: {', '.join(plugins.disabled)}")


# --- describing one backend ---------------------------------------------------------------


def _find(plugins: PluginSet, name: str) -> BackendEntry:
    """The backend `name` (`redis`) or `kind:name` (`broker:redis`) names."""
    kind, _, bare = name.rpartition(":")
    if kind:
        if kind not in KINDS:
            raise UsageProblem(
                f"unknown backend kind `{kind}` in `{name}`; kinds: {', '.join(KINDS)}"
            )
        candidates = [e for e in plugins.find(bare) if e.kind == kind]
    else:
        candidates = plugins.find(bare)
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        forms = " or ".join(f"`{e.kind}:{e.name}`" for e in candidates)
        raise UsageProblem(f"`{name}` names several backends; say which: {forms}")
    available = [f"{k}:{n}" for k in KINDS for n in plugins.names(k) if not kind or k == kind]
    close = suggest(bare, [a.split(":", 1)[1] for a in available])
    message = f"unknown backend `{name}`; available: {', '.join(available) or 'none'}"
    if close:
        message += f"\n  help: {close}"
    raise UsageProblem(message)


def _option_json(option: Field) -> dict[str, Any]:
    return {
        "name": option.name,
        "type": option.type.describe(),
        "required": option.required,
        "default": _json_value(option.default),
        "default_text": format_value(option.default, option.type),
        "doc": option.doc,
        "example": option.example,
    }


def _describe_json(entry: BackendEntry) -> dict[str, Any]:
    described: dict[str, Any] = {
        "kind": entry.kind,
        "name": entry.name,
        "summary": entry.spec.doc,
        "implemented": entry.backend_class is not None,
        "provided_by": _provider(entry),
        "distribution": entry.plugin.distribution if entry.plugin else "tideflow",
        "options": [_option_json(o) for o in entry.spec.options],
    }
    if entry.kind == "broker":
        described["partitioned"] = entry.spec.partitioned
    return described


def _print_description(entry: BackendEntry) -> None:
    console = text_console()
    console.print(Text.assemble((f'{entry.kind} "{entry.name}"', "bold"), f": {entry.spec.doc}"))
    console.print(f"provided by {_provider(entry)}")
    if entry.kind == "broker":
        partitions = "partitioned" if entry.spec.partitioned else "not partitioned"
        console.print(partitions)
    if not entry.spec.options:
        console.print("no options")
        return
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("option", no_wrap=True)
    table.add_column("type")
    table.add_column("required")
    table.add_column("default")
    table.add_column("description", overflow="fold")
    for option in entry.spec.options:
        table.add_row(
            option.name,
            option.type.describe(),
            "yes" if option.required else "no",
            format_value(option.default, option.type) or "-",
            option.doc,
        )
    console.print(table)


@click.command("plugins")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--describe",
    "describe",
    metavar="NAME",
    help="Print the options of one backend (`redis`, or `broker:redis`).",
)
def plugins_command(output_format: str, describe: str | None) -> None:
    """List installed plugins and the backends they provide, or describe one backend."""
    plugins = installed_plugins()
    if describe is not None:
        entry = _find(plugins, describe)
        if output_format == "json":
            click.echo(json.dumps(_describe_json(entry), indent=2))
        else:
            _print_description(entry)
        return
    if output_format == "json":
        click.echo(json.dumps(_listing_json(plugins), indent=2))
    else:
        _print_listing(plugins)
    _report_problems(plugins.problems)


def _report_problems(problems: Sequence[object]) -> None:
    for problem in problems:
        echo_error(str(problem))
    if problems:
        click.get_current_context().exit(EXIT_PROBLEMS)
