"""Document symbols (the outline): each block with its nested blocks and attributes.

A file that does not parse shows the blocks that did (the analysis' recovered or
last good tree)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types as lsp

from tideflow.dsl import ast

from .positions import LineIndex

if TYPE_CHECKING:
    from .server import TideflowServer

__all__ = ["SYMBOL_KINDS", "document_symbols", "register"]

SYMBOL_KINDS: dict[str, lsp.SymbolKind] = {
    "flow": lsp.SymbolKind.Namespace,
    "broker": lsp.SymbolKind.Module,
    "topic": lsp.SymbolKind.Event,
    "pool": lsp.SymbolKind.Struct,
    "job": lsp.SymbolKind.Function,
    "consumer": lsp.SymbolKind.Class,
    "notify": lsp.SymbolKind.Interface,
    "executor": lsp.SymbolKind.Package,
}
"""How the outline draws each block type (others, and nested blocks: Object)."""


def _attribute(attribute: ast.Attribute, lines: LineIndex) -> lsp.DocumentSymbol:
    source = lines.text
    value = source[attribute.value.span.start : attribute.value.span.end]
    return lsp.DocumentSymbol(
        name=attribute.name,
        detail=value if len(value) <= 60 and "\n" not in value else None,
        kind=lsp.SymbolKind.Property,
        range=lines.range(attribute.span),
        selection_range=lines.range(attribute.name_span),
    )


def _block(block: ast.Block, lines: LineIndex, top: bool) -> lsp.DocumentSymbol:
    children = [
        _block(item, lines, top=False) if isinstance(item, ast.Block) else _attribute(item, lines)
        for item in block.body
    ]
    return lsp.DocumentSymbol(
        name=block.label.value if block.label is not None else block.type,
        detail=block.type if block.label is not None else None,
        kind=SYMBOL_KINDS.get(block.type, lsp.SymbolKind.Object) if top else lsp.SymbolKind.Object,
        range=lines.range(block.span),
        selection_range=lines.range(block.label.span if block.label else block.type_span),
        children=children,
    )


def document_symbols(flow: ast.FlowFile, lines: LineIndex) -> list[lsp.DocumentSymbol]:
    """The outline of one parsed file."""
    symbols = []
    for item in flow.items:
        if isinstance(item, ast.Block):
            symbols.append(_block(item, lines, top=True))
        else:
            symbols.append(
                lsp.DocumentSymbol(
                    name=item.path.value,
                    detail="include",
                    kind=lsp.SymbolKind.File,
                    range=lines.range(item.span),
                    selection_range=lines.range(item.path.span),
                )
            )
    return symbols


def register(server: TideflowServer) -> None:
    """textDocument/documentSymbol."""

    @server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    def symbols(
        ls: TideflowServer, params: lsp.DocumentSymbolParams
    ) -> list[lsp.DocumentSymbol] | None:
        analysis = ls.analysis(params.text_document.uri)
        if analysis is None or analysis.flow is None:
            return None
        return document_symbols(analysis.flow, analysis.lines)
