"""`# tideflow: allow CODE`: a block accepts a warning it knowingly draws; errors stay."""

from __future__ import annotations

from tideflow.compiler import compile_source

FLOW = """
broker "nc" {
  kind    = "nats"
  servers = ["nats://127.0.0.1:4222"]
}

topic "orders" {
  broker   = broker.nc
  subjects = ["shop.orders.>"]
}

%(comment_above)s
job "export" {%(comment_trailing)s
  run       = "shop.jobs:export"
  publishes = topic.orders
}

job "other" {
  run       = "shop.jobs:other"
  publishes = topic.orders
}
"""


def codes(comment_above: str = "", comment_trailing: str = "") -> list[tuple[str, int]]:
    text = FLOW % {"comment_above": comment_above, "comment_trailing": comment_trailing}
    result = compile_source(text, "allow.flow")
    return [(d.code, d.span.line if d.span else 0) for d in result.diagnostics]


def w411_lines(found: list[tuple[str, int]]) -> list[int]:
    return [line for code, line in found if code == "W411"]


def test_without_a_comment_both_jobs_warn() -> None:
    assert len(w411_lines(codes())) == 2


def test_a_comment_above_the_block_allows_its_warning_only() -> None:
    before = w411_lines(codes())
    after = w411_lines(codes(comment_above="# tideflow: allow W411"))
    assert len(after) == 1
    assert after[0] == before[1]  # the other job still warns


def test_a_trailing_comment_on_the_header_line_allows_it_too() -> None:
    assert len(w411_lines(codes(comment_trailing="  # tideflow: allow W411, W405"))) == 1


def test_a_comment_naming_another_code_allows_nothing() -> None:
    assert len(w411_lines(codes(comment_above="# tideflow: allow W401"))) == 2


def test_an_error_cannot_be_allowed() -> None:
    text = '# tideflow: allow E207\njob "a" {\n  run = "m:f"\n  after = [job.nope]\n}\n'
    assert [d.code for d in compile_source(text, "a.flow").diagnostics] == ["E207"]
