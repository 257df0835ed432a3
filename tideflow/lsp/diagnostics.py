"""Diagnostics as one types: documents in (open, change, close), the compiler's
diagnostics out, for the changed file and every file of the flows holding it.

The same codes, messages and spans as `tideflow lint`: the message is the
diagnostic's, the label, `help` and notes follow it as `tideflow lint --format
json` puts them in `detail`. A "did you mean" is also kept, as the text that would
replace the diagnostic's span, in the LSP diagnostic's `data` (`{"replacement":
...}`), for the quick fix (tideflow.lsp.actions).

Debounced without a fixed wait: a change is compiled at once, unless the previous
change of the document is still waiting to be (changes arrive faster than they
compile); then the burst waits `server.debounce` seconds for its last change and
compiles once. Compiling blocks the server's loop, so the keystrokes typed
meanwhile are read together afterwards.
"""

from __future__ import annotations

import asyncio
import re
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lsprotocol import types as lsp
from pygls.uris import from_fs_path, to_fs_path

from tideflow.dsl.diagnostics import Diagnostic
from tideflow.dsl.gc_pause import gc_paused

from .positions import LineIndex

if TYPE_CHECKING:
    from .server import TideflowServer

__all__ = ["SOURCE", "register", "replacement_of", "to_lsp"]

SOURCE = "tideflow"

_SUGGESTION = re.compile(r'^did you mean (?:`([^`]+)`|("[^"]*"))\?$')


def replacement_of(diagnostic: Diagnostic, text: str) -> str | None:
    """The text that applies `diagnostic`'s "did you mean" to its span in `text`, or None.

    The suggestion is written as the user would write it: quoted when the span is a
    string, without the `()` a function suggestion shows when the span is its name."""
    if diagnostic.help is None or diagnostic.span is None:
        return None
    match = _SUGGESTION.match(diagnostic.help)
    if match is None:
        return None
    written = text[diagnostic.span.start : diagnostic.span.end]
    if match.group(2) is not None:  # a quoted suggestion: a string's value
        quoted = match.group(2)
        return quoted if written.startswith('"') else quoted[1:-1]
    word = match.group(1)
    if word.endswith("()") and "(" not in written:
        word = word[:-2]
    if written.startswith('"') and not word.startswith('"'):
        return f'"{word}"'
    return word if word != written else None


def _detail(diagnostic: Diagnostic) -> str:
    """The message, then the label, help and notes (as `lint --format json`'s detail)."""
    lines = [diagnostic.message]
    if diagnostic.label:
        lines.append(diagnostic.label)
    if diagnostic.help:
        lines.append(f"help: {diagnostic.help}")
    lines += [f"note: {note}" for note in diagnostic.notes]
    return "\n".join(lines)


def to_lsp(
    diagnostic: Diagnostic, lines: LineIndex, others: Mapping[str, LineIndex] | None = None
) -> lsp.Diagnostic:
    """`diagnostic` as LSP shows it; `lines` indexes the text its span is in, `others`
    the texts of the files its related locations point into."""
    span = diagnostic.span
    where = lines.range(span) if span is not None else lines.range_of(0, 0)
    data: dict[str, Any] | None = None
    if span is not None:
        replacement = replacement_of(diagnostic, lines.text)
        if replacement is not None:
            data = {"replacement": replacement, "code": diagnostic.code}
    related = []
    for item in diagnostic.related:
        index = lines if others is None else others.get(item.span.path, lines)
        if index is lines and item.span.path != (span.path if span else None):
            continue  # a file whose text we do not have: no range to give
        related.append(
            lsp.DiagnosticRelatedInformation(
                location=lsp.Location(uri=from_fs_path(item.span.path) or item.span.path,
                                      range=index.range(item.span)),
                message=item.message,
            )
        )  # fmt: skip
    return lsp.Diagnostic(
        range=where,
        message=_detail(diagnostic),
        severity=lsp.DiagnosticSeverity.Error
        if diagnostic.is_error
        else lsp.DiagnosticSeverity.Warning,
        code=diagnostic.code or None,
        source=SOURCE,
        related_information=related or None,
        data=data,
    )


def publish(server: TideflowServer, uri: str) -> None:
    """Compile the flows holding `uri` and publish every one of their files' diagnostics."""
    # the trees of a large flow are many objects in no cycle: the collector would
    # walk them all, again and again, for nothing (see dsl/gc_pause.py)
    with gc_paused():
        _publish(server, uri)


def _publish(server: TideflowServer, uri: str) -> None:
    server.sync_document(uri)
    document = server.flows.document_by_uri(uri)
    if document is None:
        return
    found = server.flows.diagnostics_by_file(document.path)
    encoding = server.position_encoding()
    indexes = {path: LineIndex(text, encoding) for path, (text, _) in found.items()}
    published: set[str] = set()
    for path, (_, diagnostics) in found.items():
        target = from_fs_path(path) or path
        open_document = server.flows.documents.get(path)
        server.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(
                uri=target,
                diagnostics=[to_lsp(d, indexes[path], indexes) for d in diagnostics],
                version=open_document.version if open_document is not None else None,
            )
        )
        published.add(target)
    # files that left the flow (an include removed) keep no stale diagnostics
    before = server.published.get(uri, set())
    server.published[uri] = published
    still = set().union(*server.published.values()) if server.published else set()
    for gone in before - still:
        server.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(uri=gone, diagnostics=[])
        )


def schedule(server: TideflowServer, uri: str, delay: float) -> None:
    """Publish `uri`'s diagnostics `delay` seconds from now, unless it changes again."""
    pending = server.pending.pop(uri, None)
    if pending is not None:
        pending.cancel()

    async def later() -> None:
        await asyncio.sleep(delay)
        server.pending.pop(uri, None)
        try:
            publish(server, uri)
        except Exception:  # a bug must not end diagnostics for the session: say it
            server.window_log_message(
                lsp.LogMessageParams(
                    type=lsp.MessageType.Error,
                    message=f"tideflow: diagnostics of {uri} failed:\n{traceback.format_exc()}",
                )
            )

    server.pending[uri] = asyncio.ensure_future(later())


def register(server: TideflowServer) -> None:
    """Keep the workspace in step with the editor and publish diagnostics."""

    @server.feature(lsp.INITIALIZED)
    def initialized(ls: TideflowServer, params: lsp.InitializedParams) -> None:
        paths = [to_fs_path(f.uri) for f in ls.workspace.folders.values()]
        root = ls.workspace.root_path
        ls.flows.add_folders([p for p in (*paths, root) if p])

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: TideflowServer, params: lsp.DidOpenTextDocumentParams) -> None:
        ls.sync_document(params.text_document.uri)
        schedule(ls, params.text_document.uri, 0)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: TideflowServer, params: lsp.DidChangeTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.sync_document(uri)
        # a change compiles at once, unless the last one is still waiting to: then
        # changes arrive faster than they compile (a burst of keystrokes, read
        # together while the server was busy) and the burst's last one is awaited
        schedule(ls, uri, ls.debounce if uri in ls.pending else 0)

    @server.feature(lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def files_changed(ls: TideflowServer, params: lsp.DidChangeWatchedFilesParams) -> None:
        # a file that is not open changed on disk: flows that include it read it anew
        ls.flows.invalidate()
        for uri in [d.uri for d in ls.flows.documents.values()]:
            schedule(ls, uri, ls.debounce)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: TideflowServer, params: lsp.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        pending = ls.pending.pop(uri, None)
        if pending is not None:
            pending.cancel()
        ls.flows.close(to_fs_path(uri) or uri)
        before = ls.published.pop(uri, set())
        still = set().union(*ls.published.values()) if ls.published else set()
        for gone in before - still:
            ls.text_document_publish_diagnostics(
                lsp.PublishDiagnosticsParams(uri=gone, diagnostics=[])
            )
        for other in [d.uri for d in ls.flows.documents.values()]:
            schedule(ls, other, ls.debounce)
