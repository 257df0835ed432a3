"""Go to definition and find references over stdio, across the files of one flow: a
job declared in jobs.flow and used in the three files of its flow (the root that
includes it, and two files the root includes too)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from lsprotocol import types as lsp
from pytest_lsp import LanguageClient

from .conftest import Editor

pytestmark = pytest.mark.asyncio(loop_scope="module")

FLOW: Mapping[str, str] = {
    "root.flow": """\
include "jobs.flow"
include "load.flow"
include "report.flow"

job "notify" {
  after = [job.extract]
  run   = "shop.jobs:notify"
}
""",
    "jobs.flow": """\
job "extract" {
  run = "shop.jobs:extract"
}

pool "extract" {
  slots = 2
}
""",
    "load.flow": """\
job "load" {
  after = [job.extract]
  run   = "shop.jobs:load"
  pool  = pool.extract
}
""",
    "report.flow": """\
job "report" {
  after = [job.load, job.extract]
  run   = "shop.jobs:report"
}
""",
}
"""jobs.flow declares job "extract" (and a pool of the same name, another symbol); the
three others use the job."""


SECOND_FLOW = """\
include "jobs.flow"

job "audit" {
  after = [job.extract]
  run   = "shop.jobs:audit"
  pool  = pool.extract
}
"""
"""Another flow that includes jobs.flow: its references count too."""


def position(text: str, needle: str, skip: int = 0) -> lsp.Position:
    """The position `skip` characters into the first `needle` of `text` (ASCII)."""
    offset = text.index(needle) + skip
    line = text.count("\n", 0, offset)
    return lsp.Position(line=line, character=offset - (text.rfind("\n", 0, offset) + 1))


Place = tuple[int, int, int, int]
"""A range as (start line, start character, end line, end character): hashable."""


def place(found: lsp.Range) -> Place:
    return (found.start.line, found.start.character, found.end.line, found.end.character)


def span(text: str, needle: str, start: int = 0, end: int | None = None) -> Place:
    """The range of characters [start, end) of the first `needle` of `text`."""
    end = len(needle) if end is None else end
    return place(lsp.Range(start=position(text, needle, start), end=position(text, needle, end)))


def uses(folder_uri: str) -> set[tuple[str, Place]]:
    """Where the flow refers to job "extract": each `job.extract`, whole."""
    return {
        (f"{folder_uri}/root.flow", span(FLOW["root.flow"], "job.extract")),
        (f"{folder_uri}/load.flow", span(FLOW["load.flow"], "job.extract")),
        (f"{folder_uri}/report.flow", span(FLOW["report.flow"], "job.extract")),
    }


def write_flow(client: LanguageClient, editor: Editor) -> str:
    """Save the four files and tell the server, as an editor's file watcher does; the
    folder's URI."""
    changes = [
        lsp.FileEvent(uri=editor.write(name, text).as_uri(), type=lsp.FileChangeType.Created)
        for name, text in FLOW.items()
    ]
    client.workspace_did_change_watched_files(lsp.DidChangeWatchedFilesParams(changes=changes))
    return editor.folder.as_uri()


async def open_clean(editor: Editor, name: str) -> str:
    """Open one file of the flow and wait until it is checked (and clean); its URI."""
    return await open_clean_text(editor, name, FLOW[name])


async def open_clean_text(editor: Editor, name: str, text: str) -> str:
    """Open a document and wait until it is checked (and clean); its URI."""
    uri = editor.open(name, text)
    await editor.diagnostics(uri, lambda found: not found)
    return uri


def where(locations: object) -> set[tuple[str, Place]]:
    assert isinstance(locations, list | tuple)
    found: set[tuple[str, Place]] = set()
    for location in locations:
        assert isinstance(location, lsp.Location)
        found.add((location.uri, place(location.range)))
    return found


async def definition(
    client: LanguageClient, uri: str, at: lsp.Position
) -> set[tuple[str, Place]] | None:
    result = await client.text_document_definition_async(
        lsp.DefinitionParams(text_document=lsp.TextDocumentIdentifier(uri=uri), position=at)
    )
    return None if result is None else where(result)


async def references(
    client: LanguageClient, uri: str, at: lsp.Position, *, declaration: bool
) -> set[tuple[str, Place]]:
    result = await client.text_document_references_async(
        lsp.ReferenceParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri),
            position=at,
            context=lsp.ReferenceContext(include_declaration=declaration),
        )
    )
    return where(result)


async def test_definition_of_a_reference_is_the_label_in_the_included_file(
    client: LanguageClient, editor: Editor
) -> None:
    folder = write_flow(client, editor)
    uri = await open_clean(editor, "report.flow")
    label = (f"{folder}/jobs.flow", span(FLOW["jobs.flow"], '"extract"'))
    # anywhere on `job.extract`, its kind included; and on the label itself
    for skip in (0, 6, len("job.extract")):
        at = position(FLOW["report.flow"], "job.extract", skip)
        assert await definition(client, uri, at) == {label}
    jobs = await open_clean(editor, "jobs.flow")
    assert await definition(client, jobs, position(FLOW["jobs.flow"], "extract")) == {label}
    # `job.load` leads to load.flow, not to a topic or another kind's block
    load = await definition(client, uri, position(FLOW["report.flow"], "job.load", 5))
    assert load == {(f"{folder}/load.flow", span(FLOW["load.flow"], '"load"'))}
    # from an include's path to the file it names
    root = await open_clean(editor, "root.flow")
    start = (0, 0, 0, 0)
    at = position(FLOW["root.flow"], '"load.flow"', 3)
    assert await definition(client, root, at) == {(f"{folder}/load.flow", start)}
    # nothing to go to from an attribute's name or a string
    assert await definition(client, uri, position(FLOW["report.flow"], "after")) is None
    assert await definition(client, uri, position(FLOW["report.flow"], "shop.jobs")) is None


async def test_references_of_a_job_across_the_files_of_its_flow(
    client: LanguageClient, editor: Editor
) -> None:
    folder = write_flow(client, editor)
    jobs = await open_clean(editor, "jobs.flow")
    label = (f"{folder}/jobs.flow", span(FLOW["jobs.flow"], '"extract"'))
    at = position(FLOW["jobs.flow"], "extract", 2)
    assert await references(client, jobs, at, declaration=False) == uses(folder)
    assert await references(client, jobs, at, declaration=True) == uses(folder) | {label}
    # from a reference in another file, the same answer
    load = await open_clean(editor, "load.flow")
    at = position(FLOW["load.flow"], "job.extract", 8)
    assert await references(client, load, at, declaration=True) == uses(folder) | {label}
    # the pool "extract" is another symbol, with its own reference
    pool = position(FLOW["jobs.flow"], 'pool "extract"', 7)
    assert await references(client, jobs, pool, declaration=False) == {
        (f"{folder}/load.flow", span(FLOW["load.flow"], "pool.extract"))
    }


async def test_references_reach_every_flow_that_includes_the_declaration(
    client: LanguageClient, editor: Editor
) -> None:
    folder = write_flow(client, editor)
    editor.write("second.flow", SECOND_FLOW)
    uri = await open_clean(editor, "report.flow")
    at = position(FLOW["report.flow"], "job.extract", 6)
    audit = (f"{folder}/second.flow", span(SECOND_FLOW, "job.extract"))
    assert await references(client, uri, at, declaration=False) == uses(folder) | {audit}


async def test_definition_of_another_flows_job(client: LanguageClient, editor: Editor) -> None:
    billing = (
        'flow "billing" {\n  timezone = "UTC"\n}\n\njob "close_month" {\n  run = "b:close"\n}\n'
    )
    payroll = 'job "pay" {\n  run = "p:pay"\n}\n'  # no `flow` block: named after its file
    report = (
        'job "report" {\n'
        "  after = [flow.billing.job.close_month, flow.payroll.job.pay]\n"
        '  run   = "r:report"\n'
        "}\n"
    )
    folder = editor.folder.as_uri()
    editor.write("accounts.flow", billing)
    editor.write("payroll.flow", payroll)
    uri = await open_clean_text(editor, "report.flow", report)
    at = position(report, "flow.billing", 20)
    close = (f"{folder}/accounts.flow", span(billing, '"close_month"'))
    assert await definition(client, uri, at) == {close}
    at = position(report, "flow.payroll", 2)
    assert await definition(client, uri, at) == {(f"{folder}/payroll.flow", span(payroll, '"pay"'))}
