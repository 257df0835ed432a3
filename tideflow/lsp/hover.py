"""Hover: what the thing under the cursor is.

- An attribute's name (or a key of a nested block's map form): its documentation
  from the schema (`compiler/schema.py`, or the backend's options from the
  installed plugins' catalog): the meaning, type, default and example that
  docs/language.md's table row shows (tests/test_docs.py keeps the rows in step
  with the schema, so the schema is the one source of both).
- A block's type word: the block's documentation; a function's name: its
  arguments and meaning (`schema.FUNCTIONS`).
- A reference (`job.extract`) or a declaration's label: the target's kind, its
  `description` and where it is declared.
- A `schedule` value: for `cron(...)`, its next five instants in the job's time
  zone (cron's `timezone =`, else the job's `timezone`, else the flow's, else
  UTC) and the daylight-saving changes of the coming year that move or drop a
  run, from `compiler/cron.py`, the evaluator the scheduler uses.

"Now" is the wall clock, unless the environment variable `TIDEFLOW_LSP_NOW`
holds an ISO 8601 instant (with its offset, e.g. `2027-03-25T12:00:00+00:00`):
tests set it so that a schedule's hover is deterministic. Nothing else reads it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from lsprotocol import types as lsp

from tideflow.compiler import cron as cronlib
from tideflow.compiler import schema
from tideflow.compiler.checks.common import clock
from tideflow.dsl import ast
from tideflow.dsl.durations import format_duration
from tideflow.plugins.api import options as o
from tideflow.plugins.manager import installed_plugins

from .context import block_schema, field_named
from .index import Analysis, Declaration, NodeAt, Reference

if TYPE_CHECKING:
    from .server import TideflowServer

__all__ = ["NOW_ENV", "hover_markdown", "now", "register"]

NOW_ENV = "TIDEFLOW_LSP_NOW"
NEXT_INSTANTS = 5
_YEAR = timedelta(days=366)


def register(server: TideflowServer) -> None:
    """Add the hover handler to `server`."""

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    def hover(params: lsp.HoverParams) -> lsp.Hover | None:
        analysis = server.analysis(params.text_document.uri)
        if analysis is None or analysis.flow is None or analysis.flow.source != analysis.text:
            # no tree, or the last good one, whose spans do not match the text; a tree
            # of the blocks that parse (the rest blanked out) keeps its spans
            return None
        found = hover_markdown(
            analysis, analysis.lines.offset(params.position), installed_plugins().catalog
        )
        if found is None:
            return None
        markdown, span = found
        return lsp.Hover(
            contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=markdown),
            range=analysis.lines.range(span),
        )


def now() -> datetime:
    """The current instant, or the one `TIDEFLOW_LSP_NOW` holds (for tests)."""
    fixed = os.environ.get(NOW_ENV)
    if fixed:
        moment = datetime.fromisoformat(fixed)
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return datetime.now(UTC)


def hover_markdown(
    analysis: Analysis, offset: int, catalog: o.Catalog
) -> tuple[str, ast.Span] | None:
    """The hover text at `offset` of a parsed document and the span it is about."""
    symbol = analysis.symbols.at(analysis.path, offset)
    if symbol is not None:
        return _symbol(analysis, symbol), _symbol_span(symbol)
    node = analysis.node_at(offset)
    block = node.block
    if block is not None and node.attribute is None and _inside(block.type_span, offset):
        described = block_schema([b.type for b in node.blocks])
        if described is not None:
            return f"**`{block.type}`** block\n\n{described.doc}", block.type_span
    if node.attribute is None:
        return None
    if node.on_attribute_name:
        return _attribute(node, catalog, node.attribute.name), node.attribute.name_span
    entry = _map_key(node, offset)
    nested = [b.type for b in node.blocks] + [node.attribute.name]
    if entry is not None and block_schema(nested) is not None:  # not `env = { KEY = ...}`
        return _attribute(node, catalog, entry.key, nested=node.attribute.name), entry.key_span
    if node.attribute.name == "schedule" and isinstance(node.attribute.value, ast.Call):
        text = _schedule(analysis, node, node.attribute.value)
        if text is not None:
            return text, node.attribute.value.span
    call = next(
        (
            e
            for e in reversed(node.exprs)
            if isinstance(e, ast.Call) and _inside(e.function_span, offset)
        ),
        None,
    )
    if call is not None and call.function in schema.FUNCTIONS:
        signature, _, meaning = schema.FUNCTIONS[call.function].partition("): ")
        return f"```\n{signature})\n```\n\n{meaning}", call.function_span
    return None


def _inside(span: ast.Span, offset: int) -> bool:
    return span.start <= offset <= span.end


# --- attributes ----------------------------------------------------------------------


def _map_key(node: NodeAt, offset: int) -> ast.MapEntry | None:
    """The entry of the map form of a nested block (`retry = { attempts = 3 }`) whose
    key is under the cursor."""
    if node.attribute is None or not isinstance(node.attribute.value, ast.MapExpr):
        return None
    for entry in node.attribute.value.entries:
        if _inside(entry.key_span, offset):
            return entry
    return None


def _attributes_of(block: ast.Block) -> dict[str, str | None]:
    return {
        a.name: a.value.value if isinstance(a.value, ast.String) else None for a in block.attributes
    }


def _attribute(node: NodeAt, catalog: o.Catalog, name: str, nested: str | None = None) -> str:
    types = [b.type for b in node.blocks] + ([nested] if nested else [])
    owner = block_schema(types)
    if owner is None:
        return f"`{name}`: not an attribute tideflow knows here"
    attributes = _attributes_of(node.blocks[-1]) if node.blocks and not nested else {}
    found = field_named(owner, attributes, catalog, name)
    if found is None:
        return f"`{name}`: not an attribute of a `{owner.type}` block"
    field_, backend = found
    where = (
        f"option of the `{backend.name}` {owner.backend_kind}"
        if backend is not None
        else f"`{owner.type}` attribute"
    )
    return field_markdown(field_, where)


def field_markdown(field_: o.Field, where: str) -> str:
    """A field's documentation: the meaning, then type, default and example, as the
    reference's table row gives them."""
    default = "**required**" if field_.required else _default(field_)
    example = f"`{field_.name} = {field_.example}`" if field_.example else ""
    return (
        f"**`{field_.name}`** · {where}\n\n{field_.doc}\n\n"
        "| type | required / default | example |\n|---|---|---|\n"
        f"| {field_.type.describe()} | {default} | {example} |"
    )


def _default(field_: o.Field) -> str:
    if field_.default is None:
        return "optional"
    return f"`{_literal(field_.type, field_.default)}`"


def _literal(value_type: o.ValueType, value: Any) -> str:
    """A default as a .flow file writes it."""
    if isinstance(value_type, o.DurationType):
        return format_duration(float(value))
    if isinstance(value_type, o.BoolType):
        return "true" if value else "false"
    if isinstance(value_type, o.ListType) and isinstance(value, tuple | list):
        return "[" + ", ".join(_literal(value_type.item, v) for v in value) + "]"
    if isinstance(value_type, o.StringType):
        return f'"{value}"'
    return str(value)


# --- references and declarations ---------------------------------------------------------


def _symbol_span(symbol: Declaration | Reference) -> ast.Span:
    return symbol.name_span if isinstance(symbol, Declaration) else symbol.span


def _symbol(analysis: Analysis, symbol: Declaration | Reference) -> str:
    if isinstance(symbol, Reference) and symbol.flow is not None:
        return (
            f"**{symbol.kind}** `{symbol.name}` of the flow `{symbol.flow}`\n\n"
            "Another flow's job: its runs start this job (the compiler cannot see it)."
        )
    targets = (
        (symbol,)
        if isinstance(symbol, Declaration)
        else analysis.symbols.declarations_of(symbol.kind, symbol.name)
    )
    if not targets:
        return f"**{symbol.kind}** `{symbol.name}`: not declared in this flow"
    parts = []
    for target in targets:
        lines = [f"**{target.kind}** `{target.name}`"]
        description = _description(target.block)
        if description:
            lines.append(description)
        where = Path(target.path)
        line = target.span.line
        lines.append(f"declared in [{where.name}:{line}]({where.as_uri()}#L{line})")
        parts.append("\n\n".join(lines))
    return "\n\n---\n\n".join(parts)


def _description(block: ast.Block) -> str:
    for attribute in block.attributes:
        if attribute.name == "description" and isinstance(attribute.value, ast.String):
            return attribute.value.value
    return ""


# --- schedules -------------------------------------------------------------------------


def _string_arg(call: ast.Call) -> str | None:
    if call.args and isinstance(call.args[0], ast.String):
        return call.args[0].value
    return None


def _zone_of(analysis: Analysis, node: NodeAt, call: ast.Call) -> str:
    """cron's `timezone =`, else the job's `timezone`, else the flow's, else UTC."""
    for keyword in call.kwargs:
        if keyword.name == "timezone" and isinstance(keyword.value, ast.String):
            return keyword.value.value
    for block in reversed(node.blocks):
        zone = _attributes_of(block).get("timezone")
        if zone:
            return zone
    flows = [d.block for d in analysis.symbols.of_kind("flow")]
    if analysis.flow is not None:
        flows += [b for b in analysis.flow.blocks if b.type == "flow"]
    for block in flows:
        zone = _attributes_of(block).get("timezone")
        if zone:
            return zone
    default = schema.FLOW.by_name["timezone"].default
    return default if isinstance(default, str) else "UTC"


def _schedule(analysis: Analysis, node: NodeAt, call: ast.Call) -> str | None:
    expression = _string_arg(call)
    if call.function == "every" and call.args and isinstance(call.args[0], ast.Duration):
        return f"**every {format_duration(call.args[0].seconds)}**, from when the flow starts"
    if call.function != "cron" or expression is None:
        return None
    zone_name = _zone_of(analysis, node, call)
    tz = cronlib.zone(zone_name)
    if tz is None or cronlib.check_cron(expression) is not None:
        return f"**cron `{expression}`** in {zone_name}: see the diagnostics"
    moment = now()
    today = moment.astimezone(tz).date()
    gap, overlap = cronlib.dst_hits(expression, zone_name, today)
    gap = gap if gap is not None and _within_a_year(gap, today) else None
    overlap = overlap if overlap is not None and _within_a_year(overlap, today) else None
    lines = [
        f"**cron `{expression}`** in {zone_name}",
        "",
        f"Next {NEXT_INSTANTS} runs after {_local(moment, tz)}:",
        "",
    ]
    for instant in islice(cronlib.instants_after(expression, zone_name, moment), NEXT_INSTANTS):
        local = instant.astimezone(tz)
        note = ""
        if gap is not None and gap.moved and local.replace(tzinfo=None) == gap.transition.end:
            note = f" (instead of {clock(gap.fires_at)}, which does not exist that day)"
        lines.append(f"- {_local(instant, tz)}{note}")
    changes = list(_dst_lines(gap, overlap))
    lines += (
        ["", "Daylight saving in the coming year:", "", *changes]
        if changes
        else [
            "",
            "No daylight-saving change moves or drops a run in the coming year.",
        ]
    )
    return "\n".join(lines)


def _within_a_year(hit: cronlib.DstHit, today: date) -> bool:
    return hit.fires_at.date() < today + _YEAR


def _local(instant: datetime, tz: ZoneInfo) -> str:
    """`Sun 2027-03-28 02:00 WEST (UTC+01:00)`: the wall clock, its zone's name and offset."""
    local = instant.astimezone(tz)
    offset = local.strftime("%z")
    return f"{local:%a %Y-%m-%d} {clock(local)} {local.tzname()} (UTC{offset[:3]}:{offset[3:]})"


def _dst_lines(gap: cronlib.DstHit | None, overlap: cronlib.DstHit | None) -> Iterator[str]:
    if gap is not None:
        start, end = gap.transition.start, gap.transition.end
        day = gap.fires_at.date().isoformat()
        fate = (
            f"the {clock(gap.fires_at)} run moves to {clock(end)}"
            if gap.moved
            else "runs in those times are dropped (a wildcard follows the wall clock)"
        )
        yield (
            f"- **gap** on {day}: clocks go forward, local times from "
            f"{clock(start)} to {clock(end)} do not exist; {fate}"
        )
    if overlap is not None:
        start, end = overlap.transition.start, overlap.transition.end
        day = overlap.fires_at.date().isoformat()
        yield (
            f"- **overlap** on {day}: clocks go back, local times from "
            f"{clock(start)} to {clock(end)} happen twice; the {clock(overlap.fires_at)} "
            "run happens once, the first time"
        )
