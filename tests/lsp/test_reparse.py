"""Parsing only the edited blocks gives the tree a full parse gives."""

from __future__ import annotations

import random

import pytest
from tideflow.dsl.parser import parse

from tideflow.lsp.reparse import Reparser

FLOW = """\
# orders
flow "orders" {
  timezone = "Europe/Lisbon"
}

broker "main" {
  kind = "embedded"   # on SQLite
}

/* a block comment
   over two lines */
topic "orders" {
  broker     = broker.main
  partitions = 4
}

job "extract" {
  schedule  = cron("0 3 * * *", timezone = "UTC")
  run       = "shop.jobs:extract"
  publishes = topic.orders
  retry { attempts = 3  backoff = exponential(10s, 5m) }
  resources = { cpu = 1, memory = 512Mi }
}

job "report" {
  after   = [job.extract]
  command = ["python", "-m", "shop.report"]
}
"""

PIECES = ["x", "\\n", "\\n\\n", "}", "{", '"', "#", "/*", " ", 'job "n" {}\\n', "=", "1"]


def test_edits_anywhere_give_the_full_parse() -> None:
    rnd = random.Random(7)
    reparser = Reparser()
    text = FLOW
    reparser.parse(text, "/x/a.flow")
    for _ in range(200):
        start = rnd.randrange(len(text) + 1)
        end = min(len(text), start + rnd.choice((0, 0, 1, 3)))
        piece = rnd.choice(PIECES).encode().decode("unicode_escape")
        edited = text[:start] + piece + text[end:]
        assert reparser.parse(edited, "/x/a.flow") == parse(edited, "/x/a.flow")
        # keep editing from a text that parses, as a user mostly does
        if parse(edited, "/x/a.flow").ok:
            text = edited
    assert reparser.partial_parses > 25


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("  partitions = 4\n", "  partitions = 12\n"),
        ('job "report" {', 'job "reports" {'),
        ("# orders\n", ""),
        ("  after   = [job.extract]\n", "  after   = [job.extract]\n\n\n"),
    ],
)
def test_an_edit_inside_a_block_reuses_the_others(old: str, new: str) -> None:
    reparser = Reparser()
    reparser.parse(FLOW, "/x/a.flow")
    edited = FLOW.replace(old, new)
    assert reparser.parse(edited, "/x/a.flow") == parse(edited, "/x/a.flow")
    assert reparser.partial_parses == 1


def test_a_broken_edit_keeps_the_blocks_it_did_not_touch() -> None:
    rnd = random.Random(11)
    full = parse(FLOW, "/x/a.flow").file
    assert full is not None
    broken_edits = 0
    for _ in range(100):
        start = rnd.randrange(len(FLOW) + 1)
        piece = rnd.choice(PIECES).encode().decode("unicode_escape")
        edited = FLOW[:start] + piece + FLOW[start:]
        reparser = Reparser()  # its last clean text is FLOW
        reparser.parse(FLOW, "/x/a.flow")
        if reparser.parse(edited, "/x/a.flow").file is not None:
            continue
        broken_edits += 1
        tree = reparser.recover(edited, "/x/a.flow")
        assert tree is not None
        # every block kept is where the text says it is
        for block in tree.blocks:
            alone = parse(edited[block.span.start : block.span.end], "/x/a.flow").file
            assert alone is not None
            assert [b.type for b in alone.blocks] == [block.type]
        # and the blocks far from the edit are all there
        touched = {b.describe() for b in full.blocks if b.span.start <= start <= b.span.end}
        kept = {b.describe() for b in tree.blocks}
        assert {b.describe() for b in full.blocks} - touched <= kept
    assert broken_edits > 10
