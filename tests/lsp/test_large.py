"""A 10 MB file does not hang the server: it says the file is too large for live
analysis, and keeps answering."""

from __future__ import annotations

import pytest
from lsprotocol import types as lsp
from pytest_lsp import LanguageClient

from .conftest import Editor

pytestmark = pytest.mark.asyncio(loop_scope="module")

JOB = 'job "j{n:07d}" {{\n  run   = "shop.jobs:work"\n  after = [job.j{p:07d}]\n}}\n\n'


async def test_a_ten_megabyte_file_does_not_hang_the_server(
    client: LanguageClient, editor: Editor
) -> None:
    parts = ['job "j0000000" {\n  run = "shop.jobs:work"\n}\n\n']
    size = len(parts[0])
    n = 1
    while size < 10_000_000:
        part = JOB.format(n=n, p=n - 1)
        parts.append(part)
        size += len(part)
        n += 1
    text = "".join(parts)
    uri = editor.open("huge.flow", text)
    (problem,) = await editor.diagnostics(uri, lambda d: bool(d))
    assert "file too large for live analysis" in problem.message

    # it still answers, about this file and about a small one
    symbols = await client.text_document_document_symbol_async(
        lsp.DocumentSymbolParams(text_document=lsp.TextDocumentIdentifier(uri=uri))
    )
    assert not symbols
    small = editor.open("small.flow", 'job "a" {\n  run = "shop.jobs:a"\n  retrys = 1\n}\n')
    found = await editor.diagnostics(small, lambda d: bool(d))
    assert editor.codes(found) == ["E202"]
