"""Code actions: apply a diagnostic's "did you mean" (E202, E207, E210, E211, ...).

The replacement comes with the diagnostic (its `data`, set by
tideflow.lsp.diagnostics), so the fix is the compiler's own suggestion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lsprotocol import types as lsp

if TYPE_CHECKING:
    from .server import TideflowServer

__all__ = ["quick_fixes", "register"]


def _replacement(diagnostic: lsp.Diagnostic) -> str | None:
    data: Any = diagnostic.data
    if not isinstance(data, dict):
        return None
    replacement = data.get("replacement")
    return replacement if isinstance(replacement, str) else None


def quick_fixes(uri: str, diagnostics: list[lsp.Diagnostic]) -> list[lsp.CodeAction]:
    """One quick fix per diagnostic of ours that carries a suggestion."""
    actions = []
    for diagnostic in diagnostics:
        replacement = _replacement(diagnostic)
        if diagnostic.source != "tideflow" or replacement is None:
            continue
        edit = lsp.TextEdit(range=diagnostic.range, new_text=replacement)
        actions.append(
            lsp.CodeAction(
                title=f"Replace with {replacement}",
                kind=lsp.CodeActionKind.QuickFix,
                diagnostics=[diagnostic],
                edit=lsp.WorkspaceEdit(changes={uri: [edit]}),
                is_preferred=True,
            )
        )
    return actions


def register(server: TideflowServer) -> None:
    """textDocument/codeAction (quick fixes)."""

    @server.feature(
        lsp.TEXT_DOCUMENT_CODE_ACTION,
        lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix]),
    )
    def code_action(ls: TideflowServer, params: lsp.CodeActionParams) -> list[lsp.CodeAction]:
        return quick_fixes(params.text_document.uri, list(params.context.diagnostics))
