"""Diagnostics and quick fixes over stdio: the compiler's codes, messages and spans."""

from __future__ import annotations

import pytest
from lsprotocol import types as lsp
from pytest_lsp import LanguageClient

from .conftest import Editor

pytestmark = pytest.mark.asyncio(loop_scope="module")

MISSPELT = """\
job "extract" {
  run = "shop.jobs:extract"
}

job "report" {
  run   = "shop.jobs:report"
  after = [job.extrct]
}
"""


async def test_misspelt_reference_gets_e207_and_its_quick_fix(
    client: LanguageClient, editor: Editor
) -> None:
    uri = editor.open("orders.flow", MISSPELT)
    found = await editor.diagnostics(uri, lambda d: "E207" in editor.codes(d))
    (e207,) = [d for d in found if d.code == "E207"]
    # `job.extrct` on line 7 (0-based 6), columns 11 to 21, as `tideflow lint` says
    assert e207.range == lsp.Range(
        start=lsp.Position(line=6, character=11), end=lsp.Position(line=6, character=21)
    )
    assert e207.severity == lsp.DiagnosticSeverity.Error
    assert e207.source == "tideflow"
    assert e207.message.startswith("undefined reference")
    assert "help: did you mean `job.extract`?" in e207.message

    actions = await client.text_document_code_action_async(
        lsp.CodeActionParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri),
            range=e207.range,
            context=lsp.CodeActionContext(diagnostics=[e207]),
        )
    )
    assert actions is not None
    (fix,) = actions
    assert isinstance(fix, lsp.CodeAction)
    assert fix.kind == lsp.CodeActionKind.QuickFix
    assert fix.edit is not None and fix.edit.changes is not None
    (edit,) = fix.edit.changes[uri]
    assert edit.new_text == "job.extract"

    editor.edit(uri, [edit])
    await editor.diagnostics(uri, lambda d: not d)


async def test_diagnostics_match_tideflow_lint(client: LanguageClient, editor: Editor) -> None:
    from tideflow.compiler import compile_flow

    text = MISSPELT.replace("run   =", "retrys = 3\n  run   =")
    uri = editor.open("lint.flow", text)
    found = await editor.diagnostics(uri, lambda d: len(d) >= 2)
    expected = compile_flow(editor.folder / "lint.flow").diagnostics
    assert editor.codes(found) == [d.code for d in expected]
    for got, want in zip(found, expected, strict=True):
        assert want.span is not None
        assert got.range.start == lsp.Position(
            line=want.span.line - 1, character=want.span.column - 1
        )
        assert got.message.splitlines()[0] == want.message


async def test_an_error_in_an_included_file_shows_on_it(
    client: LanguageClient, editor: Editor
) -> None:
    included = editor.write(
        "common/ops.flow",
        'broker "main" {\n  kind = "embedded"\n}\n\ntopic "orders" {\n  broker = broker.mian\n}\n',
    )
    uri = editor.open(
        "main.flow",
        'include "common/ops.flow"\n\njob "a" {\n  run       = "shop.jobs:a"\n'
        "  publishes = topic.orders\n}\n",
    )
    found = await editor.diagnostics(included.as_uri(), lambda d: "E207" in editor.codes(d))
    (e207,) = [d for d in found if d.code == "E207"]
    assert e207.range.start == lsp.Position(line=5, character=11)
    assert e207.data is not None and e207.data["replacement"] == "broker.main"
    # the includer has none of its own
    assert editor.codes(client.diagnostics.get(uri, [])) == []


async def test_a_file_that_does_not_parse(client: LanguageClient, editor: Editor) -> None:
    text = (
        'job "first" {\n  run = "shop.jobs:first"\n}\n\n'
        'job "broken" {\n  run = = "x"\n}\n\n'
        'topic "last" {\n  partitions = 2\n}\n'
    )
    uri = editor.open("broken.flow", text)
    found = await editor.diagnostics(uri, lambda d: bool(d))
    assert found[0].severity == lsp.DiagnosticSeverity.Error
    assert str(found[0].code).startswith("E1")
    assert found[0].range.start.line == 5

    symbols = await client.text_document_document_symbol_async(
        lsp.DocumentSymbolParams(text_document=lsp.TextDocumentIdentifier(uri=uri))
    )
    assert symbols is not None
    assert [s.name for s in symbols] == ["first", "last"]

    formatted = await client.text_document_formatting_async(
        lsp.DocumentFormattingParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri),
            options=lsp.FormattingOptions(tab_size=2, insert_spaces=True),
        )
    )
    assert formatted is None


async def test_format(client: LanguageClient, editor: Editor) -> None:
    from tideflow.dsl.formatter import format_source

    text = 'job "a" {\nrun="shop.jobs:a"\n    timeout=15m\n}\n'
    uri = editor.open("fmt.flow", text)
    edits = await client.text_document_formatting_async(
        lsp.DocumentFormattingParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri),
            options=lsp.FormattingOptions(tab_size=2, insert_spaces=True),
        )
    )
    assert edits is not None
    (edit,) = edits
    assert edit.new_text == format_source(text).text
    assert edit.range.start == lsp.Position(line=0, character=0)
    assert edit.range.end == lsp.Position(line=4, character=0)

    editor.edit(uri, edits)
    again = await client.text_document_formatting_async(
        lsp.DocumentFormattingParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri),
            options=lsp.FormattingOptions(tab_size=2, insert_spaces=True),
        )
    )
    assert again is not None and not again


async def test_outline(client: LanguageClient, editor: Editor) -> None:
    text = (
        'broker "main" {\n  kind = "embedded"\n}\n\n'
        'job "a" {\n  run = "shop.jobs:a"\n  retry { attempts = 3 }\n}\n'
    )
    uri = editor.open("outline.flow", text)
    symbols = await client.text_document_document_symbol_async(
        lsp.DocumentSymbolParams(text_document=lsp.TextDocumentIdentifier(uri=uri))
    )
    assert symbols is not None
    broker, job = symbols
    assert isinstance(job, lsp.DocumentSymbol)
    assert (broker.name, broker.kind) == ("main", lsp.SymbolKind.Module)
    assert (job.name, job.detail, job.kind) == ("a", "job", lsp.SymbolKind.Function)
    assert job.children is not None
    assert [c.name for c in job.children] == ["run", "retry"]
    assert job.children[1].children is not None
    assert [c.name for c in job.children[1].children] == ["attempts"]


async def test_an_included_file_is_checked_through_the_file_including_it(
    client: LanguageClient, editor: Editor
) -> None:
    # main.flow is not open: the workspace folder tells who includes topics.flow
    editor.write(
        "main.flow",
        'include "parts/topics.flow"\n\nbroker "main" {\n  kind = "embedded"\n}\n\n'
        'job "a" {\n  run       = "shop.jobs:a"\n  publishes = topic.orders\n}\n',
    )
    text = 'topic "orders" {\n  broker = broker.main\n}\n'
    uri = editor.open("parts/topics.flow", text)
    # broker.main is main.flow's: only the warning that nothing consumes the topic
    await editor.diagnostics(uri, lambda d: editor.codes(d) == ["W405"])

    editor.replace(uri, text.replace("broker.main", "broker.mian"))
    found = await editor.diagnostics(uri, lambda d: "E207" in editor.codes(d))
    assert [d.data["replacement"] for d in found if d.data] == ["broker.main"]


async def test_unsaved_text_of_an_included_file_counts(
    client: LanguageClient, editor: Editor
) -> None:
    included_text = (
        'broker "main" {\n  kind = "embedded"\n}\n\ntopic "orders" {\n  broker = broker.main\n}\n'
    )
    included = editor.open("ops.flow", included_text)
    main = editor.open(
        "main.flow",
        'include "ops.flow"\n\njob "a" {\n  run       = "shop.jobs:a"\n'
        "  publishes = topic.orders\n}\n",
    )
    await editor.diagnostics(main, lambda d: not d)
    editor.replace(included, included_text.replace('topic "orders"', 'topic "order"'))
    found = await editor.diagnostics(main, lambda d: "E207" in editor.codes(d))
    (e207,) = found
    assert e207.range.start == lsp.Position(line=4, character=14)
    assert (editor.folder / "ops.flow").read_text() == included_text  # nothing saved


async def test_a_burst_of_changes_ends_with_the_last_ones_diagnostics(
    client: LanguageClient, editor: Editor
) -> None:
    uri = editor.open("burst.flow", MISSPELT)
    await editor.diagnostics(uri, lambda d: editor.codes(d) == ["E207"])
    for letter in "abcde":  # sent together, as a fast typist's keystrokes
        editor.replace(uri, MISSPELT.replace("job.extrct", f"job.extract{letter}"))
    last = MISSPELT.replace("job.extrct", "job.extract").replace("run   =", "rnu   =")
    editor.replace(uri, last)
    found = await editor.diagnostics(uri, lambda d: "E207" not in editor.codes(d))
    assert "E202" in editor.codes(found)
