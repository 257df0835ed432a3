"""The language server: a pygls `LanguageServer` holding a `Workspace`, and the
feature modules that register their handlers on it.

Each feature module exposes `register(server: TideflowServer) -> None`, which adds
its `@server.feature(...)` handlers; `build_server()` calls the `register` of every
module of `FEATURE_MODULES` that exists. A handler gets the document's current
`Analysis` (tideflow.lsp.index) with `server.analysis(uri)`.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Sequence
from typing import Any, final

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from tideflow import __version__
from tideflow.compiler.pipeline import LintRule
from tideflow.dsl.gc_pause import gc_paused
from tideflow.plugins.api.options import Catalog
from tideflow.plugins.manager import installed_plugins

from .index import Analysis
from .workspace import Workspace

__all__ = ["FEATURE_MODULES", "TideflowServer", "build_server"]

FEATURE_MODULES: tuple[str, ...] = (
    "tideflow.lsp.diagnostics",  # documents in, diagnostics out
    "tideflow.lsp.formatting",
    "tideflow.lsp.actions",
    "tideflow.lsp.symbols",
    "tideflow.lsp.completion",
    "tideflow.lsp.hover",
    "tideflow.lsp.navigation",
    "tideflow.lsp.rename",
)
"""The feature modules, in registration order; one not (yet) written is skipped."""

DEBOUNCE_SECONDS = 0.05
"""How long diagnostics wait for the next keystroke before the flow is compiled."""


def _catalog() -> Catalog:
    return installed_plugins().catalog


def _rules() -> Sequence[LintRule]:
    return installed_plugins().lint_rules


@final
class TideflowServer(LanguageServer):
    """tideflow's language server: pygls plus the flows it has open."""

    def __init__(self, *, debounce: float = DEBOUNCE_SECONDS) -> None:
        super().__init__(
            "tideflow",
            __version__,
            text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental,
        )
        self.debounce = debounce
        self.pending: dict[str, asyncio.Future[None]] = {}  # uri -> diagnostics to publish
        self.published: dict[str, set[str]] = {}  # uri -> the uris its flows published to
        self.flows = Workspace(
            catalog=_catalog,
            rules=_rules,
            include_root=os.environ.get("TIDEFLOW_INCLUDE_ROOT") or None,
            encoding=self.position_encoding,
        )

    def position_encoding(self) -> str:
        """The position encoding agreed with the client ("utf-16" unless told)."""
        try:
            encoding = self.workspace.position_encoding
        except RuntimeError:  # before `initialize`
            return "utf-16"
        return str(encoding or "utf-16")

    def analysis(self, uri: str) -> Analysis | None:
        """The current analysis of the open document `uri` (None when it is not open).

        Computed now if the text changed since the last one; the same object is
        returned until the next change."""
        self.sync_document(uri)
        with gc_paused():  # as the compiler does: see dsl/gc_pause.py
            return self.flows.analysis(uri)

    def sync_document(self, uri: str) -> None:
        """Bring the workspace's copy of `uri` up to pygls' text of it."""
        document = self.workspace.text_documents.get(uri)
        if document is None:
            return
        known = self.flows.document_by_uri(uri)
        if (
            known is not None
            and known.version == document.version
            and known.text == document.source
        ):
            return
        path = to_fs_path(uri) or uri
        self.flows.update(uri, path, document.source, document.version)


def _register_features(server: TideflowServer, modules: Sequence[str]) -> None:
    for name in modules:
        try:
            module: Any = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # that feature is not written yet
            raise
        module.register(server)


def build_server(*, debounce: float = DEBOUNCE_SECONDS) -> TideflowServer:
    """A server with every feature registered, ready for `start_io()`/`start_tcp()`."""
    server = TideflowServer(debounce=debounce)
    _register_features(server, FEATURE_MODULES)
    return server
