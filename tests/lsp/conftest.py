"""A real `tideflow lsp` over stdio, driven by pytest-lsp's client.

`client` is one server per test module (started with `python -m tideflow lsp`,
initialised as VS Code would be, the module's temporary folder as its workspace);
`editor` wraps it with what a test does: write files, open and change documents,
and wait (never sleep) for the diagnostics it expects.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

WAIT_SECONDS = 60.0
"""A hang bound only: a loaded 2-core machine may be slow, a hung server never ends."""

Check = Callable[[Sequence[lsp.Diagnostic]], bool]


@pytest_lsp.fixture(  # type: ignore[untyped-decorator]
    config=ClientServerConfig(server_command=[sys.executable, "-m", "tideflow", "lsp"]),
    scope="module",
)
async def client(
    lsp_client: LanguageClient, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[None]:
    root = tmp_path_factory.mktemp("lsp-workspace")
    await lsp_client.initialize_session(
        lsp.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            root_uri=root.as_uri(),
            workspace_folders=[lsp.WorkspaceFolder(uri=root.as_uri(), name="workspace")],
        )
    )
    lsp_client.workspace_root = root  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()


class Editor:
    """What an editor does to the server, for tests."""

    def __init__(self, client: LanguageClient, folder: Path) -> None:
        self.client = client
        self.folder = folder
        self.versions: dict[str, int] = {}

    def write(self, name: str, text: str) -> Path:
        """Save a file in this test's folder (not opened)."""
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def open(self, name: str, text: str) -> str:
        """Save and open a document; its uri."""
        uri = self.write(name, text).as_uri()
        self.versions[uri] = 1
        self.client.text_document_did_open(
            lsp.DidOpenTextDocumentParams(
                text_document=lsp.TextDocumentItem(
                    uri=uri, language_id="tideflow", version=1, text=text
                )
            )
        )
        return uri

    def replace(self, uri: str, text: str) -> None:
        """The editor's whole text becomes `text` (not saved)."""
        self.versions[uri] += 1
        self.client.text_document_did_change(
            lsp.DidChangeTextDocumentParams(
                text_document=lsp.VersionedTextDocumentIdentifier(
                    uri=uri, version=self.versions[uri]
                ),
                content_changes=[lsp.TextDocumentContentChangeWholeDocument(text=text)],
            )
        )

    def edit(self, uri: str, edits: Sequence[lsp.TextEdit]) -> None:
        """Apply edits as incremental changes (last first, so ranges stay valid)."""
        self.versions[uri] += 1
        ordered = sorted(
            edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True
        )
        self.client.text_document_did_change(
            lsp.DidChangeTextDocumentParams(
                text_document=lsp.VersionedTextDocumentIdentifier(
                    uri=uri, version=self.versions[uri]
                ),
                content_changes=[
                    lsp.TextDocumentContentChangePartial(range=e.range, text=e.new_text)
                    for e in ordered
                ],
            )
        )

    async def diagnostics(self, uri: str, until: Check) -> Sequence[lsp.Diagnostic]:
        """The diagnostics of `uri` once `until` holds for them."""

        async def wait() -> Sequence[lsp.Diagnostic]:
            while True:
                found = self.client.diagnostics.get(uri)
                if found is not None and until(found):
                    return found
                await self.client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)

        return await asyncio.wait_for(wait(), WAIT_SECONDS)

    @staticmethod
    def codes(diagnostics: Sequence[lsp.Diagnostic]) -> list[str]:
        """The codes of some diagnostics, in order."""
        return [str(d.code) for d in diagnostics]


@pytest.fixture
def editor(client: LanguageClient, request: pytest.FixtureRequest) -> Editor:
    """An editor on the module's server, with a folder of its own for this test."""
    root: Path = client.workspace_root  # type: ignore[attr-defined]
    folder = root / request.node.name.replace("[", "_").replace("]", "_")
    folder.mkdir()
    client.diagnostics.clear()
    return Editor(client, folder)
