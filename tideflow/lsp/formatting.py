"""Formatting: `tideflow fmt`'s layout (tideflow.dsl.formatter) as one whole-document
edit; nothing when the file does not parse (the formatter would have to guess)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types as lsp

from tideflow.dsl.formatter import format_file

if TYPE_CHECKING:
    from .server import TideflowServer

__all__ = ["format_edits", "register"]


def format_edits(server: TideflowServer, uri: str) -> list[lsp.TextEdit] | None:
    """The edits that format `uri`: [] when it is formatted, None when it cannot be."""
    analysis = server.analysis(uri)
    if analysis is None or not analysis.parsed or analysis.flow is None:
        return None
    formatted = format_file(analysis.flow)
    if formatted == analysis.text:
        return []
    return [lsp.TextEdit(range=analysis.lines.whole(), new_text=formatted)]


def register(server: TideflowServer) -> None:
    """textDocument/formatting."""

    @server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
    def formatting(
        ls: TideflowServer, params: lsp.DocumentFormattingParams
    ) -> list[lsp.TextEdit] | None:
        return format_edits(ls, params.text_document.uri)
