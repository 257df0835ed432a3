"""Rename over stdio: a job declared in one file and used in three (the flow of
test_navigation), renamed from its label or from a reference, then compiled clean;
and the renames the server refuses, with the message the editor shows."""

from __future__ import annotations

import pytest
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient
from tideflow.compiler import compile_flow

from .conftest import Editor
from .test_navigation import (
    FLOW,
    SECOND_FLOW,
    Place,
    open_clean,
    place,
    position,
    span,
    write_flow,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


def edits_by_uri(edit: lsp.WorkspaceEdit | None) -> dict[str, list[lsp.TextEdit]]:
    """A workspace edit's text edits by document, whichever form the server chose."""
    assert edit is not None
    found: dict[str, list[lsp.TextEdit]] = {}
    for uri, edits in (edit.changes or {}).items():
        found.setdefault(uri, []).extend(edits)
    for change in edit.document_changes or ():
        assert isinstance(change, lsp.TextDocumentEdit)
        for item in change.edits:
            assert isinstance(item, lsp.TextEdit)
            found.setdefault(change.text_document.uri, []).append(item)
    return found


def applied(text: str, edits: list[lsp.TextEdit]) -> str:
    """`text` with `edits` applied (ASCII text: LSP characters are offsets in a line)."""
    starts = [0]
    starts += [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    for edit in sorted(edits, key=lambda e: place(e.range), reverse=True):
        start = starts[edit.range.start.line] + edit.range.start.character
        end = starts[edit.range.end.line] + edit.range.end.character
        text = text[:start] + edit.new_text + text[end:]
    return text


async def prepare(client: LanguageClient, uri: str, at: lsp.Position) -> object:
    return await client.text_document_prepare_rename_async(
        lsp.PrepareRenameParams(text_document=lsp.TextDocumentIdentifier(uri=uri), position=at)
    )


async def rename(
    client: LanguageClient, uri: str, at: lsp.Position, new_name: str
) -> lsp.WorkspaceEdit | None:
    return await client.text_document_rename_async(
        lsp.RenameParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri), position=at, new_name=new_name
        )
    )


@pytest.mark.parametrize(
    ("opened", "needle", "name_at"),
    [("jobs.flow", '"extract"', 1), ("report.flow", "job.extract", 4)],
    ids=["from-the-label", "from-a-reference"],
)
async def test_rename_a_job_used_in_three_files(
    client: LanguageClient, editor: Editor, opened: str, needle: str, name_at: int
) -> None:
    folder = write_flow(client, editor)
    uri = await open_clean(editor, opened)
    at = position(FLOW[opened], needle, name_at + 2)

    prepared = await prepare(client, uri, at)
    assert isinstance(prepared, lsp.PrepareRenamePlaceholder)
    assert prepared.placeholder == "extract"
    assert place(prepared.range) == span(FLOW[opened], needle, name_at, name_at + 7)

    edits = edits_by_uri(await rename(client, uri, at, "pull"))
    # the label's text inside its quotes, and the name part of each `job.extract`
    expected: dict[str, list[Place]] = {
        f"{folder}/jobs.flow": [span(FLOW["jobs.flow"], '"extract"', 1, 8)],
        f"{folder}/root.flow": [span(FLOW["root.flow"], "job.extract", 4)],
        f"{folder}/load.flow": [span(FLOW["load.flow"], "job.extract", 4)],
        f"{folder}/report.flow": [span(FLOW["report.flow"], "job.extract", 4)],
    }
    assert {u: sorted(place(e.range) for e in found) for u, found in edits.items()} == expected
    assert {e.new_text for found in edits.values() for e in found} == {"pull"}

    for name, text in FLOW.items():
        editor.write(name, applied(text, edits[f"{folder}/{name}"]))
    result = compile_flow(editor.folder / "root.flow")
    assert result.diagnostics == ()
    assert result.ir is not None
    assert set(result.ir.jobs) == {"pull", "load", "report", "notify"}
    assert result.ir.jobs["report"].after == ("load", "pull")
    assert 'pool "extract"' in (editor.folder / "jobs.flow").read_text()  # another kind


async def test_rename_reaches_every_flow_that_includes_the_declaration(
    client: LanguageClient, editor: Editor
) -> None:
    folder = write_flow(client, editor)
    editor.write("second.flow", SECOND_FLOW)
    uri = await open_clean(editor, "root.flow")
    at = position(FLOW["root.flow"], "job.extract", 6)
    edits = edits_by_uri(await rename(client, uri, at, "pull"))
    assert set(edits) == {f"{folder}/{name}" for name in (*FLOW, "second.flow")}
    assert [place(e.range) for e in edits[f"{folder}/second.flow"]] == [
        span(SECOND_FLOW, "job.extract", 4)
    ]
    for name, text in {**FLOW, "second.flow": SECOND_FLOW}.items():
        editor.write(name, applied(text, edits[f"{folder}/{name}"]))
    for root in ("root.flow", "second.flow"):
        assert compile_flow(editor.folder / root).diagnostics == ()


async def test_rename_follows_the_unsaved_text_of_an_open_file(
    client: LanguageClient, editor: Editor
) -> None:
    folder = write_flow(client, editor)
    jobs = await open_clean(editor, "jobs.flow")
    # a line typed above the job, not saved: the label moves down one line
    top = lsp.Range(start=lsp.Position(line=0, character=0), end=lsp.Position(line=0, character=0))
    editor.edit(jobs, [lsp.TextEdit(range=top, new_text="# pulls the orders\n")])
    typed = "# pulls the orders\n" + FLOW["jobs.flow"]
    edit = await rename(client, jobs, position(typed, '"extract"', 3), "pull")
    assert edit is not None and edit.document_changes is not None
    versions = {
        change.text_document.uri: change.text_document.version
        for change in edit.document_changes
        if isinstance(change, lsp.TextDocumentEdit)
    }
    assert versions[jobs] == 2  # the edit is for the text the editor has now
    assert versions[f"{folder}/load.flow"] is None  # not open: the file on disk
    edits = edits_by_uri(edit)
    assert [place(e.range) for e in edits[jobs]] == [span(typed, '"extract"', 1, 8)]
    assert applied(typed, edits[jobs]).startswith('# pulls the orders\njob "pull" {')


async def test_rename_refused_on_a_collision_or_an_invalid_name(
    client: LanguageClient, editor: Editor
) -> None:
    write_flow(client, editor)
    uri = await open_clean(editor, "load.flow")
    at = position(FLOW["load.flow"], "job.extract", 5)
    with pytest.raises(JsonRpcException, match=r'a job named "report" already exists \(report'):
        await rename(client, uri, at, "report")
    for invalid in ("2pull", "pull orders", ""):
        with pytest.raises(JsonRpcException, match=f'"{invalid}" is not a valid job name'):
            await rename(client, uri, at, invalid)
    # a job of that name is no collision for a pool: kinds have names of their own
    pool = position(FLOW["load.flow"], "pool.extract", 6)
    edits = edits_by_uri(await rename(client, uri, pool, "load"))
    assert sum(len(found) for found in edits.values()) == 2  # the label and `pool.extract`


ELSEWHERE = """\
job "report" {
  after = [job.extrct, flow.billing.job.close]
  run   = "shop.jobs:report"
}
"""


async def test_prepare_rename_says_what_cannot_be_renamed(
    client: LanguageClient, editor: Editor
) -> None:
    uri = editor.open("elsewhere.flow", ELSEWHERE)
    await editor.diagnostics(uri, lambda found: editor.codes(found) == ["E207"])
    refusals = {
        "after": "only the name of a block",
        "shop.jobs": "only the name of a block",
        "job.extrct": 'no job is named "extrct"',
        "flow.billing": 'job "close" belongs to flow "billing"',
    }
    for needle, message in refusals.items():
        with pytest.raises(JsonRpcException, match=message):
            await prepare(client, uri, position(ELSEWHERE, needle, 1))

    broken = editor.open("broken.flow", 'job "x" {\n  run = \n}\n')
    await editor.diagnostics(broken, lambda found: bool(found))
    with pytest.raises(JsonRpcException, match="this file does not parse"):
        await prepare(client, broken, lsp.Position(line=0, character=6))
