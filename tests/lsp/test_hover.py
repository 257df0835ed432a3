"""Hover, end to end through the real server over stdio: an attribute's documentation
(the same text as docs/language.md's row), a reference's target, and a cron
schedule's next instants around a daylight-saving change, with "now" fixed through
the server's clock variable."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from lsprotocol import types as lsp

from tideflow.lsp.hover import NOW_ENV

from .conftest import Editor

pytestmark = pytest.mark.asyncio(loop_scope="module")

FLOW = """\
flow "orders" {
  timezone = "Europe/Lisbon"
}

job "extract" {
  description = "pull the orders"
  schedule    = cron("30 1 * * *")
  run         = "shop.jobs:extract"
}

job "load" {
  after = [job.extract]
  run   = "shop.jobs:load"
}

topic "orders" {}

consumer "workers" {
  consumes = topic.orders
  run      = "shop.workers:handle"
  scale { lag_per_instance = 500 }
}
"""

DOC = Path(__file__).resolve().parents[2] / "docs" / "language.md"


@pytest.fixture(scope="module", autouse=True)
def fixed_now() -> Iterator[None]:
    """The module's server starts (after this autouse fixture) with "now" fixed:
    2027-03-25 12:00 UTC, three days before Lisbon springs forward."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(NOW_ENV, "2027-03-25T12:00:00+00:00")
        yield


async def hover(editor: Editor, uri: str, needle: str, skip: int = 1, text: str = FLOW) -> str:
    """The hover's markdown `skip` characters into the first `needle` of `text`."""
    offset = text.index(needle) + skip
    line = text.count("\n", 0, offset)
    character = offset - (text.rfind("\n", 0, offset) + 1)
    result = await editor.client.text_document_hover_async(
        lsp.HoverParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri),
            position=lsp.Position(line=line, character=character),
        )
    )
    assert result is not None, f"no hover on {needle!r}"
    assert isinstance(result.contents, lsp.MarkupContent)
    return result.contents.value


def doc_row_meaning(section: str, attribute: str) -> str:
    """The meaning cell of `attribute`'s row in docs/language.md's section."""
    text = DOC.read_text(encoding="utf-8")
    body = text.split(f"### {section}\n", 1)[1].split("\n### ", 1)[0]
    for line in body.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells and cells[0] == f"`{attribute}`":
            return cells[3]
    raise AssertionError(f"no row for {attribute} under {section}")


async def test_an_attributes_documentation_is_its_reference_row(editor: Editor) -> None:
    uri = editor.open("hover.flow", FLOW)
    text = await hover(editor, uri, "lag_per_instance")
    assert doc_row_meaning("`scale` nested block", "lag_per_instance") in text
    assert "integer ≥ 1" in text and "`100`" in text  # type and default, as the row shows


async def test_a_reference_shows_its_target(editor: Editor) -> None:
    uri = editor.open("refs.flow", FLOW)
    text = await hover(editor, uri, "job.extract", skip=5)
    assert "**job** `extract`" in text
    assert "pull the orders" in text
    assert "refs.flow:5" in text  # where it is declared


async def test_a_cron_schedule_around_the_spring_gap_in_lisbon(editor: Editor) -> None:
    # now = 2027-03-25 12:00 UTC; Lisbon springs forward at 01:00 on 2027-03-28
    uri = editor.open("cron.flow", FLOW)
    text = await hover(editor, uri, '"30 1 * * *"')
    assert "in Europe/Lisbon" in text
    runs = [line for line in text.splitlines() if re.match(r"- \w{3} \d{4}-", line)]
    assert runs == [
        "- Fri 2027-03-26 01:30 WET (UTC+00:00)",
        "- Sat 2027-03-27 01:30 WET (UTC+00:00)",
        "- Sun 2027-03-28 02:00 WEST (UTC+01:00) (instead of 01:30, which does not exist that day)",
        "- Mon 2027-03-29 01:30 WEST (UTC+01:00)",
        "- Tue 2027-03-30 01:30 WEST (UTC+01:00)",
    ]
    assert "**gap** on 2027-03-28" in text
    assert "**overlap** on 2027-10-31" in text


async def test_hover_works_in_the_blocks_that_parse(editor: Editor) -> None:
    # the user is typing a new job at the end: the file does not parse
    uri = editor.open("typing.flow", FLOW + 'job "new" {\n  run = \n')
    text = await hover(editor, uri, "lag_per_instance")
    assert doc_row_meaning("`scale` nested block", "lag_per_instance") in text


async def test_a_functions_name_shows_its_arguments(editor: Editor) -> None:
    text = 'job "retried" {\n  run = "a.b:c"\n  retry { backoff = exponential(10s, 5m) }\n}\n'
    uri = editor.open("functions.flow", text)
    shown = await hover(editor, uri, "exponential", text=text)
    assert "exponential(INITIAL, CAP, factor = 2)" in shown
