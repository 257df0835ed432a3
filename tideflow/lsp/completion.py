"""Completion: what may be written at the cursor, from the schema, the catalog and the
symbols of the flow.

Works on the document's current text, parsed or not: `context.cursor_context`
reads the place from the lexer's tokens. Offers block types at the top level;
attribute names (and nested blocks) of the block the cursor is in that are not
set yet, with the options of its backend once `kind`/`backend` names one
(plugins' backends included, from the installed plugins' catalog); enum values,
booleans and the functions a value type accepts (with their argument shape from
`schema.FUNCTIONS`) after `name =`; declared names after `job.`, `topic.`, ...
and the jobs of another flow after `flow.NAME.job.`; backend names inside the
string of `kind`/`backend`, and time zones inside a `timezone` string.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from lsprotocol import types as lsp

from tideflow.compiler import schema
from tideflow.dsl import ast
from tideflow.dsl.parser import parse
from tideflow.plugins.api import options as o
from tideflow.plugins.manager import installed_plugins

from .context import (
    CursorContext,
    Position,
    block_schema,
    cursor_context,
    field_named,
    fields_of,
)
from .index import Analysis, SymbolIndex, index_file
from .positions import LineIndex
from .workspace import include_targets

if TYPE_CHECKING:
    from .server import TideflowServer

__all__ = ["Suggestion", "complete", "register"]

# the value types that accept each function (`schema.FUNCTIONS` says what they do)
_FUNCTIONS_FOR: tuple[tuple[type, tuple[str, ...]], ...] = (
    (o.ScheduleType, ("cron", "every")),
    (o.BackoffType, ("fixed", "exponential")),
)
_SECRETABLE = ("env", "secret")


def register(server: TideflowServer) -> None:
    """Add the completion handler to `server`."""

    @server.feature(
        lsp.TEXT_DOCUMENT_COMPLETION,
        lsp.CompletionOptions(trigger_characters=[".", '"']),
    )
    def completion(params: lsp.CompletionParams) -> lsp.CompletionList:
        # the analysis of the current text: server.analysis brings it up to date first
        analysis = server.analysis(params.text_document.uri)
        if analysis is not None:
            text, lines, path = analysis.text, analysis.lines, analysis.path
            symbols = _flow_symbols(server, analysis)
        else:
            document = server.workspace.get_text_document(params.text_document.uri)
            text, symbols, path = document.source, SymbolIndex(), document.path
            lines = LineIndex(text, server.position_encoding())
        items = complete(
            text, lines.offset(params.position), symbols, installed_plugins().catalog, path
        )
        return lsp.CompletionList(is_incomplete=False, items=_with_ranges(items, lines))


def _flow_symbols(server: TideflowServer, analysis: Analysis) -> SymbolIndex:
    """The declarations of the document's flow.

    While the document does not parse, the compiler reads none of its includes, so
    the analysis knows only the document's own blocks that parse: add the files it
    includes (as its recovered tree names them, or as it last parsed), and theirs.
    """
    if analysis.parsed:
        return analysis.symbols
    symbols = analysis.symbols
    pending = set(server.flows.includes_of(analysis.path))
    if analysis.flow is not None and analysis.flow.source == analysis.text:
        pending |= include_targets(analysis.flow)
    seen = {analysis.path}
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        text = server.flows.text_of(path)
        parsed = _parsed(path, text) if text is not None else None
        if parsed is not None:
            symbols = symbols.merge(index_file(parsed))
            pending |= include_targets(parsed) | server.flows.includes_of(path)
    return symbols


@lru_cache(maxsize=64)
def _parsed(path: str, text: str) -> ast.FlowFile | None:
    """An included file's tree (cached: completion asks again at each keystroke)."""
    return parse(text, path).file


def _with_ranges(items: list[Suggestion], lines: LineIndex) -> list[lsp.CompletionItem]:
    result: list[lsp.CompletionItem] = []
    for item in items:
        edit = lsp.TextEdit(
            range=lines.range_of(item.start, item.end), new_text=item.insert or item.label
        )
        result.append(
            lsp.CompletionItem(
                label=item.label,
                kind=item.kind,
                detail=item.detail or None,
                documentation=(
                    lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=item.doc)
                    if item.doc
                    else None
                ),
                text_edit=edit,
                insert_text_format=(
                    lsp.InsertTextFormat.Snippet if item.snippet else lsp.InsertTextFormat.PlainText
                ),
                sort_text=f"{item.rank}{len(result):04d}",
            )
        )
    return result


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A completion before it gets its LSP range: replaces text[start:end] with `insert`
    (the label when empty); a lower `rank` sorts first (required attributes)."""

    label: str
    kind: lsp.CompletionItemKind
    start: int
    end: int
    insert: str = ""
    detail: str = ""
    doc: str = ""
    snippet: bool = False
    rank: int = 1


def complete(
    text: str, offset: int, symbols: SymbolIndex, catalog: o.Catalog, path: str = ""
) -> list[Suggestion]:
    """The completions at character `offset` of `text`; `symbols` are the flow's
    declarations, `path` the document's file (its folder holds the other flows)."""
    ctx = cursor_context(text, offset)
    if ctx.position is Position.TOP:
        return list(_block_types(ctx))
    if ctx.position is Position.BODY:
        return list(_attributes(ctx, catalog))
    if ctx.position is Position.VALUE:
        return list(_values(ctx, symbols, catalog, path))
    if ctx.position is Position.STRING:
        return list(_strings(ctx, catalog))
    return []


# --- names ---------------------------------------------------------------------------


def _block_types(ctx: CursorContext) -> Iterator[Suggestion]:
    for block in schema.BLOCKS.values():
        header = f'{block.type} "${{1:name}}"' if block.label else block.type
        yield Suggestion(
            block.type,
            lsp.CompletionItemKind.Class,
            ctx.start,
            ctx.end,
            insert=f"{header} {{\n\t$0\n}}",
            snippet=True,
            detail=f"{block.type} block",
            doc=block.doc,
        )
    yield Suggestion(
        "include",
        lsp.CompletionItemKind.Keyword,
        ctx.start,
        ctx.end,
        insert='include "${1:other.flow}"',
        snippet=True,
        detail="include another file",
    )


def _attributes(ctx: CursorContext, catalog: o.Catalog) -> Iterator[Suggestion]:
    frame = ctx.blocks[-1]
    block = block_schema([b.type for b in ctx.blocks])
    if block is None:
        return
    own, backend = fields_of(block, frame.attributes, catalog)
    for field_ in own:
        if field_.name in frame.attributes:
            continue
        if isinstance(field_.type, o.ObjectType) and not frame.is_map:
            yield Suggestion(
                field_.name,
                lsp.CompletionItemKind.Struct,
                ctx.start,
                ctx.end,
                insert=f"{field_.name} {{\n\t$0\n}}",
                snippet=True,
                detail=f"{field_.name} block",
                doc=_field_doc(field_),
                rank=0 if field_.required else 1,
            )
            continue
        yield _attribute_item(ctx, field_, f"{block.type} attribute")
    if backend is not None:
        where = f"option of the {backend.name} {block.backend_kind}"
        for field_ in backend.options:
            if field_.name not in frame.attributes:
                yield _attribute_item(ctx, field_, where)


def _attribute_item(ctx: CursorContext, field_: o.Field, where: str) -> Suggestion:
    return Suggestion(
        field_.name,
        lsp.CompletionItemKind.Property,
        ctx.start,
        ctx.end,
        insert=f"{field_.name} = {_value_snippet(field_.type)}",
        snippet=True,
        detail=f"{field_.type.describe()} · {where}",
        doc=_field_doc(field_),
        rank=0 if field_.required else 1,
    )


def _value_snippet(value_type: o.ValueType) -> str:
    """What `name = ` is followed by: a choice of the words it takes, quotes around a
    string, or just the cursor."""
    if isinstance(value_type, o.EnumType):
        return "${1|" + ",".join(value_type.choices) + "|}"
    if isinstance(value_type, o.BoolType):
        return "${1|true,false|}"
    if isinstance(value_type, o.StringType) and value_type.choices:
        return '"${1|' + ",".join(value_type.choices) + '|}"'
    if isinstance(value_type, o.StringType | o.CallableType):
        return '"$1"'
    return "$0"


def _field_doc(field_: o.Field) -> str:
    lines = [field_.doc]
    if field_.required:
        lines.append("Required.")
    if field_.example:
        lines.append(f"Example: `{field_.name} = {field_.example}`")
    return "\n\n".join(lines)


# --- values --------------------------------------------------------------------------


def _value_type(ctx: CursorContext, catalog: o.Catalog) -> o.ValueType | None:
    """The type of the value at the cursor: its attribute's, inside lists."""
    if not ctx.blocks or ctx.attribute is None:
        return None
    frame = ctx.blocks[-1]
    types = [b.type for b in ctx.blocks]
    block = block_schema(types)
    value_type: o.ValueType
    if block is None and frame.is_map and len(types) > 1:
        # a value in a map attribute (`env = { KEY = |`): the map's value type
        owner = block_schema(types[:-1])
        found = owner.by_name.get(frame.type) if owner is not None else None
        if found is None or not isinstance(found.type, o.MapType):
            return None
        return found.type.value
    if block is None:
        return None
    named = field_named(block, frame.attributes, catalog, ctx.attribute)
    if named is None:
        return None
    value_type = named[0].type
    while isinstance(value_type, o.ListType):
        value_type = value_type.item
    return value_type


def _values(
    ctx: CursorContext, symbols: SymbolIndex, catalog: o.Catalog, path: str
) -> Iterator[Suggestion]:
    if ctx.qualifier:
        yield from _references(ctx, symbols, path)
        return
    if ctx.function is not None:
        return  # a function's arguments: literals only
    value_type = _value_type(ctx, catalog)
    if isinstance(value_type, o.EnumType):
        for choice in value_type.choices:
            yield Suggestion(choice, lsp.CompletionItemKind.EnumMember, ctx.start, ctx.end)
        return
    if isinstance(value_type, o.BoolType):
        for word in ("true", "false"):
            yield Suggestion(word, lsp.CompletionItemKind.Value, ctx.start, ctx.end)
        return
    if isinstance(value_type, o.RefType):
        for declaration in symbols.of_kind(value_type.kind):
            yield Suggestion(
                f"{value_type.kind}.{declaration.name}",
                lsp.CompletionItemKind.Reference,
                ctx.start,
                ctx.end,
                detail=_description(declaration.block),
            )
        return
    yield from _functions(ctx, _functions_for(value_type))


def _functions_for(value_type: o.ValueType | None) -> tuple[str, ...]:
    if value_type is None or isinstance(value_type, o.LiteralType):
        return tuple(schema.FUNCTIONS)
    for kind, names in _FUNCTIONS_FOR:
        if isinstance(value_type, kind):
            return names
    inner = value_type.value if isinstance(value_type, o.MapType) else value_type
    if isinstance(inner, o.StringType) and inner.secretable:
        return _SECRETABLE
    return ()


# `cron("MIN HOUR DOM MON DOW", timezone = "Zone"): a cron schedule`
_SIGNATURE = re.compile(r"(\w+)\((.*)\): (.*)")


def _functions(ctx: CursorContext, names: Iterable[str]) -> Iterator[Suggestion]:
    for name in names:
        described = schema.FUNCTIONS[name]
        match = _SIGNATURE.fullmatch(described)
        if match is None:
            continue
        _, arguments, meaning = match.groups()
        yield Suggestion(
            name,
            lsp.CompletionItemKind.Function,
            ctx.start,
            ctx.end,
            insert=f"{name}({_argument_snippet(arguments)})",
            snippet=True,
            detail=f"{name}({arguments})",
            doc=meaning,
        )


def _argument_snippet(arguments: str) -> str:
    """Placeholders for the positional arguments of a signature (keywords are optional)."""
    shown = []
    for index, argument in enumerate(a.strip() for a in arguments.split(", ")):
        if "=" in argument or not argument:
            continue
        quoted = argument.startswith('"') and argument.endswith('"')
        inner = argument[1:-1] if quoted else argument
        placeholder = f"${{{index + 1}:{_escape(inner)}}}"
        shown.append(f'"{placeholder}"' if quoted else placeholder)
    return ", ".join(shown)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("$", "\\$").replace("}", "\\}")


def _references(ctx: CursorContext, symbols: SymbolIndex, path: str) -> Iterator[Suggestion]:
    """`job.` gives this flow's jobs; `flow.` the other flows; `flow.X.job.` X's jobs."""
    qualifier = ctx.qualifier
    if len(qualifier) == 1 and qualifier[0] != "flow":
        for declaration in symbols.of_kind(qualifier[0]):
            yield Suggestion(
                declaration.name,
                lsp.CompletionItemKind.Reference,
                ctx.start,
                ctx.end,
                detail=f"{declaration.kind} · {Path(declaration.path).name}",
                doc=_description(declaration.block),
            )
        return
    flows = _other_flows(str(Path(path).parent)) if path else {}
    if qualifier == ("flow",):
        for name in sorted(flows):
            yield Suggestion(
                name,
                lsp.CompletionItemKind.Module,
                ctx.start,
                ctx.end,
                insert=f"{name}.job.",
                detail="another flow",
            )
    elif len(qualifier) == 3 and qualifier[0] == "flow" and qualifier[2] == "job":
        for job in flows.get(qualifier[1], ()):
            yield Suggestion(
                job, lsp.CompletionItemKind.Reference, ctx.start, ctx.end, detail="job"
            )


def _description(block: ast.Block) -> str:
    for attribute in block.attributes:
        if attribute.name == "description" and isinstance(attribute.value, ast.String):
            return attribute.value.value
    return ""


def _other_flows(folder: str) -> Mapping[str, tuple[str, ...]]:
    """The flows of the `.flow` files in `folder`: name -> job names."""
    found: dict[str, tuple[str, ...]] = {}
    try:
        files = sorted(Path(folder).glob("*.flow"))
    except OSError:
        return found
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue
        flow = _flow_in(str(file), stat.st_mtime_ns, stat.st_size)
        if flow is not None:
            name, jobs = flow
            found.setdefault(name, jobs)
    return found


@cache
def _flow_in(path: str, mtime: int, size: int) -> tuple[str, tuple[str, ...]] | None:
    """A file's flow name (its `flow` block's label, else its stem) and its jobs;
    cached by modification time and size."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    result = parse(text, path)
    if result.file is None:
        return None
    name = Path(path).stem
    jobs = []
    for block in result.file.blocks:
        if block.type == "flow" and block.label is not None:
            name = block.label.value
        elif block.type == "job" and block.label is not None:
            jobs.append(block.label.value)
    return name, tuple(jobs)


# --- inside strings ------------------------------------------------------------------


def _strings(ctx: CursorContext, catalog: o.Catalog) -> Iterator[Suggestion]:
    """Backend names in `kind`/`backend`, zones in `timezone`, a string option's choices."""
    if ctx.function is not None:
        if ctx.keyword == "timezone":
            yield from _zones(ctx)
        return
    if not ctx.blocks or ctx.attribute is None:
        return
    block = block_schema([b.type for b in ctx.blocks])
    if block is None:
        return
    if ctx.attribute == block.backend_field and block.backend_kind is not None:
        for name in catalog.names(block.backend_kind):
            spec = catalog.get(block.backend_kind, name)
            yield Suggestion(
                name,
                lsp.CompletionItemKind.EnumMember,
                ctx.start,
                ctx.end,
                detail=f"{block.backend_kind} backend",
                doc=spec.doc if spec is not None else "",
            )
        return
    if ctx.attribute == "timezone":
        yield from _zones(ctx)
        return
    found = field_named(block, ctx.blocks[-1].attributes, catalog, ctx.attribute)
    if found is not None and isinstance(found[0].type, o.StringType):
        for choice in found[0].type.choices:
            yield Suggestion(choice, lsp.CompletionItemKind.EnumMember, ctx.start, ctx.end)


def _zones(ctx: CursorContext) -> Iterator[Suggestion]:
    prefix = ctx.prefix.lower()
    matching = [z for z in _zone_names() if z.lower().startswith(prefix)]
    for name in matching:
        yield Suggestion(name, lsp.CompletionItemKind.Value, ctx.start, ctx.end, detail="time zone")


@cache
def _zone_names() -> tuple[str, ...]:
    return tuple(sorted(zoneinfo.available_timezones()))
