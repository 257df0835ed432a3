"""The language server's shared model: what one analysis of a document knows.

`Analysis` (frozen) is the server's answer for one open document at one version:
`uri`, `path` (absolute file path, as the compiler's spans spell it), `text`,
`version`, `flow` (the `FlowFile` AST of `text`; when `text` does not parse, the
blocks that did parse, or the last good AST, with `stale=True`; None when there is
none), `diagnostics` (the compiler's `Diagnostic`s whose span lies in this file,
1-based spans, exactly as `tideflow lint` reports them), `symbols` (a
`SymbolIndex` over this file and every file of its flow: the files it includes and
the files, open or in the workspace folders, that include it), `lines` (a
`positions.LineIndex` of `text`: `lines.range(span)` is a span's LSP range,
`lines.offset(position)` an LSP position's character offset) and `sources` (path ->
text of every file read).
`SymbolIndex` holds `declarations` (`Declaration`: `kind` = the block type,
"job", "topic", "broker", "pool", "consumer", "notify", "flow", ...; `name` = its
label; `name_span` = the label without its quotes; `span` = the whole block;
`path`) and `references` (`Reference`: `kind` and `name` of the target; `flow` set
for `flow.X.job.Y`, whose target lies in another flow; `span` of the whole
reference; `name_span` of its last part; `path`); ask it with
`declarations_of(kind, name)`, `references_to(kind, name)`, `in_file(path)` and
`at(path, offset)` (the declaration or reference whose name is under the cursor).
`node_at(flow, offset)` says where a cursor is in the tree: `NodeAt.blocks` (the
enclosing blocks, outermost first), `attribute` (the enclosing attribute or None),
`exprs` (the enclosing expressions, outermost first), `path` (block types then the
attribute name, e.g. ("job", "retry", "backoff")) and `reference`. Obtain an
`Analysis` with `TideflowServer.analysis(uri)` (tideflow.lsp.server).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import final

from tideflow.dsl import ast
from tideflow.dsl.diagnostics import Diagnostic

from .positions import LineIndex

__all__ = [
    "Analysis",
    "Declaration",
    "NodeAt",
    "Reference",
    "SymbolIndex",
    "index_files",
    "node_at",
]


@dataclass(frozen=True, slots=True)
class Declaration:
    """A labelled top-level block: `job "extract" { ... }` declares job `extract`."""

    kind: str
    name: str
    name_span: ast.Span
    span: ast.Span
    path: str
    block: ast.Block = field(compare=False)


@dataclass(frozen=True, slots=True)
class Reference:
    """A reference to a declaration: `job.extract`, or `flow.billing.job.close` (with
    `flow="billing"`, a job of another flow, which no file here declares)."""

    kind: str
    name: str
    span: ast.Span
    name_span: ast.Span
    path: str
    flow: str | None = None
    node: ast.Reference | None = field(default=None, compare=False)


def _contains(span: ast.Span, offset: int) -> bool:
    """Whether a cursor at `offset` is in `span` (its end included: the cursor sits
    just after the word it is typing)."""
    return span.start <= offset <= span.end


@final
@dataclass(frozen=True)
class SymbolIndex:
    """Declarations and references of one or more files; see the module docstring."""

    declarations: tuple[Declaration, ...] = ()
    references: tuple[Reference, ...] = ()

    def declarations_of(self, kind: str, name: str) -> tuple[Declaration, ...]:
        """The declarations of `kind` named `name` (more than one is a duplicate)."""
        return tuple(d for d in self.declarations if d.kind == kind and d.name == name)

    def references_to(self, kind: str, name: str) -> tuple[Reference, ...]:
        """The references to this flow's `kind` `name` (not other flows' jobs)."""
        return tuple(
            r for r in self.references if r.kind == kind and r.name == name and r.flow is None
        )

    def of_kind(self, kind: str) -> tuple[Declaration, ...]:
        """Every declaration of one kind, in file order."""
        return tuple(d for d in self.declarations if d.kind == kind)

    def in_file(self, path: str) -> SymbolIndex:
        """The part of the index that lies in one file."""
        return SymbolIndex(
            tuple(d for d in self.declarations if d.path == path),
            tuple(r for r in self.references if r.path == path),
        )

    def at(self, path: str, offset: int) -> Declaration | Reference | None:
        """The declaration whose label, or the reference whose text, holds `offset`."""
        for declaration in self.declarations:
            if declaration.path == path and _contains(declaration.name_span, offset):
                return declaration
        for reference in self.references:
            if reference.path == path and _contains(reference.span, offset):
                return reference
        return None

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(d.path for d in self.declarations) | {r.path for r in self.references}

    def merge(self, other: SymbolIndex) -> SymbolIndex:
        """Both indexes, each declaration and reference once."""
        declarations = dict.fromkeys((*self.declarations, *other.declarations))
        references = dict.fromkeys((*self.references, *other.references))
        return SymbolIndex(tuple(declarations), tuple(references))


def _label_name_span(label: ast.String) -> ast.Span:
    """The label's span without its quotes (where a rename writes the new name)."""
    span = label.span
    if len(label.raw) >= 2 and label.raw[0] == '"' and label.raw[-1] == '"':
        return ast.Span(
            span.path,
            span.line,
            span.column + 1,
            span.end_line,
            span.end_column - 1,
            span.start + 1,
            span.end - 1,
        )
    return span


def _last_part_span(node: ast.Reference) -> ast.Span:
    """The span of a reference's last part (`extract` in `job.extract`); references
    are written without spaces, so it ends where the reference ends."""
    span = node.span
    width = len(node.parts[-1])
    return ast.Span(
        span.path,
        span.end_line,
        span.end_column - width,
        span.end_line,
        span.end_column,
        span.end - width,
        span.end,
    )


def _exprs_in(expr: ast.Expr) -> Iterator[ast.Expr]:
    """`expr` and every expression inside it, depth first."""
    stack: list[ast.Expr] = [expr]
    while stack:
        current = stack.pop()
        yield current
        match current:
            case ast.ListExpr(items=items):
                stack.extend(reversed(items))
            case ast.MapExpr(entries=entries):
                stack.extend(e.value for e in reversed(entries))
            case ast.Call(args=args, kwargs=kwargs):
                stack.extend(k.value for k in reversed(kwargs))
                stack.extend(reversed(args))
            case _:
                pass


def _as_reference(node: ast.Reference, path: str) -> Reference | None:
    parts = node.parts
    if len(parts) == 2:
        return Reference(parts[0], parts[1], node.span, _last_part_span(node), path, None, node)
    if len(parts) == 4 and parts[0] == "flow" and parts[2] == "job":
        return Reference("job", parts[3], node.span, _last_part_span(node), path, parts[1], node)
    return None  # malformed: the compiler reports it


def _walk_block(block: ast.Block, path: str, references: list[Reference]) -> None:
    for item in block.body:
        if isinstance(item, ast.Block):
            _walk_block(item, path, references)
            continue
        for expr in _exprs_in(item.value):
            if type(expr) is ast.Reference:
                found = _as_reference(expr, path)
                if found is not None:
                    references.append(found)


def index_file(flow: ast.FlowFile) -> SymbolIndex:
    """The declarations and references of one parsed file."""
    declarations: list[Declaration] = []
    references: list[Reference] = []
    for block in flow.blocks:
        if block.label is not None:
            declarations.append(
                Declaration(
                    block.type,
                    block.label.value,
                    _label_name_span(block.label),
                    block.span,
                    flow.path,
                    block,
                )
            )
        _walk_block(block, flow.path, references)
    return SymbolIndex(tuple(declarations), tuple(references))


def index_files(files: Iterable[ast.FlowFile]) -> SymbolIndex:
    """The declarations and references of several parsed files (a flow's), in order."""
    result = SymbolIndex()
    for flow in files:
        result = result.merge(index_file(flow))
    return result


@dataclass(frozen=True, slots=True)
class NodeAt:
    """Where a cursor lies in a file's tree; see `node_at`."""

    offset: int
    blocks: tuple[ast.Block, ...] = ()
    attribute: ast.Attribute | None = None
    exprs: tuple[ast.Expr, ...] = ()

    @property
    def block(self) -> ast.Block | None:
        """The innermost enclosing block."""
        return self.blocks[-1] if self.blocks else None

    @property
    def path(self) -> tuple[str, ...]:
        """The enclosing block types, then the attribute's name if in one."""
        types = tuple(b.type for b in self.blocks)
        return (*types, self.attribute.name) if self.attribute is not None else types

    @property
    def expr(self) -> ast.Expr | None:
        """The innermost expression under the cursor."""
        return self.exprs[-1] if self.exprs else None

    @property
    def reference(self) -> ast.Reference | None:
        expr = self.expr
        return expr if type(expr) is ast.Reference else None

    @property
    def on_attribute_name(self) -> bool:
        """Whether the cursor is on the attribute's name (not its value)."""
        return self.attribute is not None and _contains(self.attribute.name_span, self.offset)


def _children(expr: ast.Expr) -> tuple[ast.Expr, ...]:
    match expr:
        case ast.ListExpr(items=items):
            return items
        case ast.MapExpr(entries=entries):
            return tuple(e.value for e in entries)
        case ast.Call(args=args, kwargs=kwargs):
            return (*args, *(k.value for k in kwargs))
        case _:
            return ()


def node_at(flow: ast.FlowFile, offset: int) -> NodeAt:
    """The blocks, attribute and expressions that enclose character `offset`."""
    blocks: list[ast.Block] = []
    items: tuple[ast.Block | ast.Include | ast.Attribute, ...] = flow.items
    attribute: ast.Attribute | None = None
    while True:
        inner = next(
            (
                item
                for item in items
                if isinstance(item, ast.Block | ast.Attribute) and _contains(item.span, offset)
            ),
            None,
        )
        if inner is None:
            break
        if isinstance(inner, ast.Attribute):
            attribute = inner
            break
        blocks.append(inner)
        items = inner.body
    exprs: list[ast.Expr] = []
    if attribute is not None:
        candidates: tuple[ast.Expr, ...] = (attribute.value,)
        while True:
            hit = next((e for e in candidates if _contains(e.span, offset)), None)
            if hit is None:
                break
            exprs.append(hit)
            candidates = _children(hit)
    return NodeAt(offset, tuple(blocks), attribute, tuple(exprs))


@final
@dataclass(frozen=True)
class Analysis:
    """One document, analysed at one version; see the module docstring."""

    uri: str
    path: str
    text: str
    version: int | None
    flow: ast.FlowFile | None
    diagnostics: tuple[Diagnostic, ...]
    symbols: SymbolIndex
    lines: LineIndex
    sources: Mapping[str, str] = field(default_factory=dict)
    stale: bool = False  # `flow` is not the tree of `text` (which does not parse)

    @property
    def parsed(self) -> bool:
        """Whether `flow` is the tree of `text` exactly."""
        return self.flow is not None and not self.stale

    def node_at(self, offset: int) -> NodeAt:
        """Where `offset` lies in `flow` (empty when there is no tree)."""
        if self.flow is None:
            return NodeAt(offset)
        return node_at(self.flow, offset)
