"""Rename a block: its label and every reference to it, across the files of its flow.

`prepareRename` answers with the range of the name under the cursor (the text
inside a label's quotes, or the last part of a reference: `extract` in
`job.extract`) or refuses, saying why: the cursor is not on a block's name, the
name is a job of another flow or declared nowhere, or a file of the flow does not
parse (its references would be missed). `rename` refuses the same things, and a
new name that is not a valid label (the rule of E215) or that another block of
the same kind already has (E205 would follow); else it returns one
`WorkspaceEdit` that rewrites the declaration's label and every reference,
whichever file holds them: the files of the document's flows and of every flow
that includes a file declaring the block (`navigation.Scope`). A refusal is an
LSP error response (`RequestFailed`) whose message the editor shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException

from tideflow.compiler.checks.common import LABEL
from tideflow.dsl import ast

from .index import Analysis, Declaration
from .navigation import Locator, Scope, Symbol, declarations_for, symbol_at
from .workspace import normal_path

if TYPE_CHECKING:
    from .server import TideflowServer

__all__ = ["RenameRefused", "check_scope", "register", "rename_spans", "renameable"]

NOT_A_NAME = (
    'only the name of a block (`job "extract"`) or a reference to one (`job.extract`) '
    "can be renamed"
)


class RenameRefused(Exception):
    """Why a rename cannot be done; its message is shown to the user as it is."""


def renameable(analysis: Analysis, offset: int) -> tuple[Symbol, ast.Span]:
    """The symbol under character `offset` and the span of its name there.

    Raises `RenameRefused` when the name under the cursor cannot be renamed."""
    if not analysis.parsed:
        raise RenameRefused("this file does not parse: fix its syntax error before renaming")
    hit = symbol_at(analysis, offset)
    if hit is None:
        raise RenameRefused(NOT_A_NAME)
    symbol, found = hit
    if symbol.flow is not None:
        raise RenameRefused(
            f'job "{symbol.name}" belongs to flow "{symbol.flow}", which these files do '
            "not declare: rename it in that flow's files"
        )
    if not isinstance(found, Declaration) and not declarations_for(analysis, symbol):
        raise RenameRefused(
            f'no {symbol.kind} is named "{symbol.name}": there is nothing to rename '
            "(fix the reference instead)"
        )
    return symbol, found.name_span


def check_scope(scope: Scope) -> None:
    """Raises `RenameRefused` when a file of the scope does not parse: its references
    are unknown, so a rename would leave some of them behind."""
    if scope.unparsed:
        raise RenameRefused(
            f"{Path(scope.unparsed[0]).name} does not parse: fix its syntax error before "
            "renaming (its references would be missed)"
        )


def rename_spans(scope: Scope, symbol: Symbol, new_name: str) -> list[ast.Span]:
    """The spans to rewrite with `new_name`: the labels of `symbol`'s declarations and
    the last part of every reference to it, each once. Raises `RenameRefused` for a
    name that is not a valid label or that another `symbol.kind` block already has."""
    if not LABEL.match(new_name):
        raise RenameRefused(
            f'"{new_name}" is not a valid {symbol.kind} name: names start with a letter '
            "or `_` and hold letters, digits, `_` or `-`"
        )
    if new_name == symbol.name:
        return []
    taken = scope.symbols.declarations_of(symbol.kind, new_name)
    if taken:
        where = taken[0].name_span
        raise RenameRefused(
            f'a {symbol.kind} named "{new_name}" already exists '
            f"({Path(where.path).name}:{where.line})"
        )
    spans = [d.name_span for d in scope.declarations(symbol)]
    spans += [r.name_span for r in scope.references(symbol)]
    return list({(normal_path(s.path), s.start): s for s in spans}.values())


def _workspace_edit(
    server: TideflowServer, locator: Locator, spans: list[ast.Span], new_name: str
) -> lsp.WorkspaceEdit:
    """`new_name` written over every span: versioned document edits when the client
    takes them (an edit made for an older text is then refused), plain changes else."""
    by_path: dict[str, list[lsp.TextEdit]] = {}
    for span in spans:
        where = locator.range(span)
        if where is None:
            raise RenameRefused(f"cannot read {span.path}: the rename would be incomplete")
        by_path.setdefault(span.path, []).append(lsp.TextEdit(range=where, new_text=new_name))
    capabilities = server.client_capabilities.workspace
    edits = capabilities.workspace_edit if capabilities is not None else None
    if edits is None or not edits.document_changes:
        return lsp.WorkspaceEdit(changes={locator.uri(p): e for p, e in by_path.items()})
    changes: list[lsp.TextDocumentEdit | lsp.CreateFile | lsp.RenameFile | lsp.DeleteFile] = []
    for path, text_edits in by_path.items():
        document = server.flows.documents.get(normal_path(path))
        identifier = lsp.OptionalVersionedTextDocumentIdentifier(
            uri=locator.uri(path), version=document.version if document is not None else None
        )
        changes.append(lsp.TextDocumentEdit(text_document=identifier, edits=list(text_edits)))
    return lsp.WorkspaceEdit(document_changes=changes)


def _refusal(reason: RenameRefused) -> JsonRpcException:
    return JsonRpcException(str(reason), code=lsp.LSPErrorCodes.RequestFailed)


def register(server: TideflowServer) -> None:
    """Add the prepareRename and rename handlers to `server`."""

    @server.feature(lsp.TEXT_DOCUMENT_PREPARE_RENAME)
    def prepare_rename(params: lsp.PrepareRenameParams) -> lsp.PrepareRenamePlaceholder | None:
        analysis = server.analysis(params.text_document.uri)
        if analysis is None:
            return None
        offset = analysis.lines.offset(params.position)
        try:
            symbol, span = renameable(analysis, offset)
            check_scope(Scope.of(server, analysis, symbol))
        except RenameRefused as reason:
            raise _refusal(reason) from None
        return lsp.PrepareRenamePlaceholder(
            range=analysis.lines.range(span), placeholder=symbol.name
        )

    @server.feature(lsp.TEXT_DOCUMENT_RENAME)
    def rename(params: lsp.RenameParams) -> lsp.WorkspaceEdit | None:
        analysis = server.analysis(params.text_document.uri)
        if analysis is None:
            return None
        offset = analysis.lines.offset(params.position)
        try:
            symbol, _ = renameable(analysis, offset)
            scope = Scope.of(server, analysis, symbol)
            check_scope(scope)
            spans = rename_spans(scope, symbol, params.new_name)
            return _workspace_edit(server, Locator(server, analysis), spans, params.new_name)
        except RenameRefused as reason:
            raise _refusal(reason) from None
