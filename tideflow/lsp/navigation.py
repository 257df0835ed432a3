"""Go to definition and find references, across the files of a flow.

The symbol under the cursor is a declaration's label (`job "extract"`) or a
reference (`job.extract`, `flow.billing.job.close`), as the document's
`SymbolIndex` knows them. The index spans every file of the flows that hold the
document: the files it includes and the known files that include it (open, or
found in the workspace folders), so a definition or a reference may lie in
another file.

- Definition: from a reference to the label string of the block it names (every
  one, when a name is declared twice); from a label to itself; from the path of an
  `include` to the start of the file it names (resolved as the loader resolves
  it). A job of another flow (`flow.X.job.Y`) leads to its label in flow X, when
  one of the flows of the document's folder is named X (as the compiler names a
  flow: its `flow` block's label, else its root file's stem).
- References: every reference to the declaration or reference under the cursor,
  with the declaration's label first when the client asks for it
  (`includeDeclaration`). A block declared in a file that several flows include
  (`common.flow`) is referenced from all of them: `Scope` widens the document's
  index to every flow that holds a declaration of the symbol.

`Locator` turns a span of any file of the flow into an LSP `Location`; rename
(tideflow.lsp.rename) uses it too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, final

from lsprotocol import types as lsp
from pygls.uris import from_fs_path

from tideflow.dsl import ast
from tideflow.dsl.loader import load_source

from .index import Analysis, Declaration, Reference, SymbolIndex, index_files
from .positions import LineIndex
from .workspace import MAX_LIVE_SIZE, normal_path

if TYPE_CHECKING:
    from .server import TideflowServer

__all__ = [
    "Locator",
    "Scope",
    "Symbol",
    "declarations_for",
    "other_flow_job",
    "references_in",
    "register",
    "symbol_at",
]


@dataclass(frozen=True, slots=True)
class Symbol:
    """What a declaration or reference stands for: the `kind` and `name` of a block,
    and `flow` when it is a job of another flow (`flow.X.job.Y`)."""

    kind: str
    name: str
    flow: str | None = None


def _symbol_of(found: Declaration | Reference) -> Symbol:
    if isinstance(found, Reference):
        return Symbol(found.kind, found.name, found.flow)
    return Symbol(found.kind, found.name)


def symbol_at(analysis: Analysis, offset: int) -> tuple[Symbol, Declaration | Reference] | None:
    """The symbol whose label or reference holds character `offset` of the document,
    and the declaration or reference it was found in; None elsewhere, and when the
    document's tree is not its text's (its spans would point at other characters)."""
    if analysis.flow is None or analysis.flow.source != analysis.text:
        return None
    found = analysis.symbols.at(analysis.path, offset)
    if found is None:
        return None
    return _symbol_of(found), found


def declarations_for(analysis: Analysis, symbol: Symbol) -> tuple[Declaration, ...]:
    """The declarations of `symbol` in the document's flows (none for another flow's)."""
    if symbol.flow is not None:
        return ()
    return analysis.symbols.declarations_of(symbol.kind, symbol.name)


def references_in(symbols: SymbolIndex, symbol: Symbol) -> tuple[Reference, ...]:
    """Every reference to `symbol` that `symbols` holds, in file order."""
    if symbol.flow is None:
        return symbols.references_to(symbol.kind, symbol.name)
    return tuple(
        r
        for r in symbols.references
        if r.flow == symbol.flow and r.kind == symbol.kind and r.name == symbol.name
    )


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a symbol's declarations and references may lie: the `symbols` of the
    document's flows and of every flow holding a file that declares it, and the
    files of those flows that did not parse (`unparsed`: their references are
    unknown)."""

    symbols: SymbolIndex
    unparsed: tuple[str, ...]

    @staticmethod
    def of(server: TideflowServer, analysis: Analysis, symbol: Symbol) -> Scope:
        """The scope of `symbol` seen from the document of `analysis`."""
        roots = list(server.flows.compile_for(analysis.path))
        seen = {root.root for root in roots}
        symbols = analysis.symbols
        for declaration in declarations_for(analysis, symbol):
            for root in server.flows.compile_for(declaration.path):
                if root.root not in seen:  # a flow the document is not part of
                    seen.add(root.root)
                    roots.append(root)
                    symbols = symbols.merge(index_files(root.result.files))
        unparsed: list[str] = []
        for root in roots:
            parsed = {normal_path(f.path) for f in root.result.files}
            unparsed += [p for p in root.result.sources if normal_path(p) not in parsed]
        return Scope(symbols, tuple(dict.fromkeys(unparsed)))

    def declarations(self, symbol: Symbol) -> tuple[Declaration, ...]:
        """The declarations of `symbol` (none for another flow's job)."""
        if symbol.flow is not None:
            return ()
        return self.symbols.declarations_of(symbol.kind, symbol.name)

    def references(self, symbol: Symbol) -> tuple[Reference, ...]:
        """Every reference to `symbol`, in file order."""
        return references_in(self.symbols, symbol)


@final
class Locator:
    """Spans of the files of one analysis as LSP locations: each file's URI (the
    client's own for an open document) and its text's line index, built once."""

    def __init__(self, server: TideflowServer, analysis: Analysis) -> None:
        self._server = server
        self._analysis = analysis
        self._lines: dict[str, LineIndex | None] = {normal_path(analysis.path): analysis.lines}

    def uri(self, path: str) -> str:
        """The URI of the file at `path`."""
        if normal_path(path) == normal_path(self._analysis.path):
            return self._analysis.uri
        document = self._server.flows.documents.get(normal_path(path))
        if document is not None:
            return document.uri
        return from_fs_path(path) or path

    def lines(self, path: str) -> LineIndex | None:
        """The line index of the text the analysis read for `path` (None: unreadable)."""
        key = normal_path(path)
        if key not in self._lines:
            text = self._analysis.sources.get(path)
            if text is None:
                text = self._server.flows.text_of(path)
            encoding = self._analysis.lines.encoding
            self._lines[key] = None if text is None else LineIndex(text, encoding)
        return self._lines[key]

    def range(self, span: ast.Span) -> lsp.Range | None:
        """The LSP range of `span` in its file."""
        lines = self.lines(span.path)
        return None if lines is None else lines.range(span)

    def location(self, span: ast.Span) -> lsp.Location | None:
        """The LSP location of `span`."""
        found = self.range(span)
        return None if found is None else lsp.Location(uri=self.uri(span.path), range=found)


def label_span(declaration: Declaration) -> ast.Span:
    """A declaration's label as written, quotes included (where a definition points)."""
    label = declaration.block.label
    return label.span if label is not None else declaration.name_span


def included_file(analysis: Analysis, offset: int) -> str | None:
    """The path of the file that the `include` whose path string holds `offset` names,
    as the loader resolves it (relative to the including file); None elsewhere."""
    if analysis.flow is None or analysis.flow.source != analysis.text:
        return None
    for include in analysis.flow.includes:
        span = include.path.span
        if span.start <= offset <= span.end and "\0" not in include.path.value:
            return os.path.normpath(Path(analysis.path).parent / include.path.value)
    return None


def _locations(locator: Locator, spans: list[ast.Span]) -> list[lsp.Location]:
    found = (locator.location(span) for span in spans)
    return [location for location in found if location is not None]


def other_flow_job(server: TideflowServer, analysis: Analysis, symbol: Symbol) -> list[Declaration]:
    """The declarations of `symbol`, a job of another flow, in the flows whose root
    files lie in the document's folder (files that another file includes are parts
    of flows, not roots); empty when no flow there has that name."""
    if symbol.flow is None:
        return []
    found: list[Declaration] = []
    own = normal_path(analysis.path)
    for file in sorted(Path(analysis.path).parent.glob("*.flow")):
        path = normal_path(str(file))
        if path == own or server.flows.includers_of(path):
            continue
        text = server.flows.text_of(path)
        if text is None or len(text) > MAX_LIVE_SIZE:
            continue
        loaded = load_source(text, path, include_root=server.flows.include_root)
        labels = [b.label.value for b in loaded.blocks if b.type == "flow" and b.label]
        if (labels[0] if labels else file.stem) == symbol.flow:
            found += index_files(loaded.files).declarations_of("job", symbol.name)
    return found


def _include_target(
    server: TideflowServer, analysis: Analysis, offset: int
) -> list[lsp.Location] | None:
    path = included_file(analysis, offset)
    if path is None or not (normal_path(path) in server.flows.documents or Path(path).is_file()):
        return None  # E110 says the file is missing; there is nowhere to go
    start = lsp.Position(line=0, character=0)
    uri = Locator(server, analysis).uri(path)
    return [lsp.Location(uri=uri, range=lsp.Range(start=start, end=start))]


def register(server: TideflowServer) -> None:
    """Add the definition and references handlers to `server`."""

    @server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
    def definition(params: lsp.DefinitionParams) -> list[lsp.Location] | None:
        analysis = server.analysis(params.text_document.uri)
        if analysis is None:
            return None
        offset = analysis.lines.offset(params.position)
        hit = symbol_at(analysis, offset)
        if hit is None:
            return _include_target(server, analysis, offset)
        symbol, found = hit
        if isinstance(found, Declaration):
            targets: Sequence[Declaration] = (found,)
        elif symbol.flow is not None:
            targets = other_flow_job(server, analysis, symbol)
        else:
            targets = declarations_for(analysis, symbol)
        return _locations(Locator(server, analysis), [label_span(d) for d in targets]) or None

    @server.feature(lsp.TEXT_DOCUMENT_REFERENCES)
    def references(params: lsp.ReferenceParams) -> list[lsp.Location] | None:
        analysis = server.analysis(params.text_document.uri)
        if analysis is None:
            return None
        hit = symbol_at(analysis, analysis.lines.offset(params.position))
        if hit is None:
            return None
        symbol, _ = hit
        scope = Scope.of(server, analysis, symbol)
        spans: list[ast.Span] = []
        if params.context.include_declaration:
            spans.extend(label_span(d) for d in scope.declarations(symbol))
        spans.extend(r.span for r in scope.references(symbol))
        return _locations(Locator(server, analysis), spans)
