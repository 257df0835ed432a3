"""The shared model: declarations, references and where a cursor is."""

from __future__ import annotations

from lsprotocol import types as lsp
from tideflow.dsl.parser import parse

from tideflow.lsp.index import Declaration, Reference, index_files, node_at
from tideflow.lsp.positions import LineIndex

MAIN = """\
include "ops.flow"

job "extract" {
  run   = "shop.jobs:extract"
  retry { backoff = exponential(10s, 5m) }
}

job "report" {
  run   = "shop.jobs:report"
  after = [job.extract, flow.billing.job.close]
}
"""

OPS = 'topic "orders" {\n  partitions = 2\n}\n'


def test_declarations_and_references_across_files() -> None:
    main = parse(MAIN, "/w/main.flow").file
    ops = parse(OPS, "/w/ops.flow").file
    assert main is not None and ops is not None
    index = index_files([main, ops])
    (extract,) = index.declarations_of("job", "extract")
    assert isinstance(extract, Declaration)
    assert MAIN[extract.name_span.start : extract.name_span.end] == "extract"
    assert MAIN[extract.span.start : extract.span.end].startswith('job "extract" {')
    (orders,) = index.declarations_of("topic", "orders")
    assert orders.path == "/w/ops.flow"
    (use,) = index.references_to("job", "extract")
    assert MAIN[use.span.start : use.span.end] == "job.extract"
    assert MAIN[use.name_span.start : use.name_span.end] == "extract"
    other = [r for r in index.references if r.flow is not None]
    assert [(r.flow, r.kind, r.name) for r in other] == [("billing", "job", "close")]
    assert index.at("/w/main.flow", MAIN.index("job.extract") + 5) == use
    assert isinstance(index.at("/w/main.flow", MAIN.index('"report"') + 2), Declaration)
    assert isinstance(use, Reference)
    assert index.in_file("/w/ops.flow").declarations == (orders,)


def test_node_at_says_the_block_path_and_attribute() -> None:
    main = parse(MAIN, "/w/main.flow").file
    assert main is not None
    inside = node_at(main, MAIN.index("10s"))
    assert inside.path == ("job", "retry", "backoff")
    assert inside.expr is not None and MAIN[inside.expr.span.start : inside.expr.span.end] == "10s"
    on_reference = node_at(main, MAIN.index("job.extract,") + 4)
    assert on_reference.path == ("job", "after")
    assert on_reference.reference is not None and str(on_reference.reference) == "job.extract"
    on_name = node_at(main, MAIN.index("after") + 1)
    assert on_name.on_attribute_name
    between = node_at(main, MAIN.index('job "report"') - 1)
    assert between.path == ()


def test_positions_count_utf16_units() -> None:
    text = 'job "a" {\n  description = "🌊 tide"\n}\n'
    lines = LineIndex(text)
    offset = text.index("tide")
    position = lines.position(offset)
    assert position == lsp.Position(line=1, character=offset - text.index("\n") - 1 + 1)
    assert lines.offset(position) == offset
    assert LineIndex(text, "utf-32").position(offset).character == position.character - 1
