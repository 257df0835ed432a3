"""The syntax tree: spans (1-based, end exclusive), literal conversions, comments."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from tideflow.dsl import ast
from tideflow.dsl.parser import parse

SAMPLES = Path(__file__).parent / "samples"


def parse_ok(text: str, path: str = "t.flow") -> ast.FlowFile:
    result = parse(text, path)
    assert result.ok, result.diagnostics
    assert result.file is not None
    return result.file


def value_of(text: str) -> ast.Expr:
    """The value of `x` in a one-attribute job."""
    return parse_ok(f'job "j" {{ x = {text} }}').blocks[0].attributes[0].value


def covered(source: str, span: ast.Span) -> str:
    """The text a span covers, found through its line and columns (not its offsets)."""
    lines = source.split("\n")
    if span.line == span.end_line:
        return lines[span.line - 1][span.column - 1 : span.end_column - 1]
    head = lines[span.line - 1][span.column - 1 :]
    middle = lines[span.line : span.end_line - 1]
    tail = lines[span.end_line - 1][: span.end_column - 1]
    return "\n".join([head, *middle, tail])


def test_block_attribute_and_value_spans() -> None:
    text = 'job "extract" {\n  timeout = 15m\n  retry {\n    attempts = 3\n  }\n}\n'
    file = parse_ok(text, "orders.flow")
    (job,) = file.blocks
    assert job.span == ast.Span("orders.flow", 1, 1, 6, 2, 0, len(text) - 1)
    assert job.type_span == ast.Span("orders.flow", 1, 1, 1, 4, 0, 3)
    assert job.label is not None
    assert job.label.span == ast.Span("orders.flow", 1, 5, 1, 14, 4, 13)
    timeout, retry = job.body
    assert isinstance(timeout, ast.Attribute)
    assert timeout.name_span == ast.Span("orders.flow", 2, 3, 2, 10, 18, 25)
    assert timeout.span == ast.Span("orders.flow", 2, 3, 2, 16, 18, 31)
    assert timeout.value.span == ast.Span("orders.flow", 2, 13, 2, 16, 28, 31)
    assert isinstance(retry, ast.Block)
    assert retry.label is None
    assert (retry.span.line, retry.span.column, retry.span.end_line, retry.span.end_column) == (
        3,
        3,
        5,
        4,
    )
    assert text[retry.span.start : retry.span.end] == "retry {\n    attempts = 3\n  }"


def test_spans_agree_with_offsets_everywhere() -> None:
    """For every node of a realistic file, line/column and offsets cover the same text."""
    for sample in sorted(SAMPLES.glob("*.flow")):
        text = sample.read_text("utf-8")
        file = parse_ok(text, sample.name)
        spans = list(_all_spans(file))
        assert len(spans) > 20
        for span in spans:
            assert span.path == sample.name
            assert (span.line, span.column) < (span.end_line, span.end_column)
            assert covered(text, span) == text[span.start : span.end], span


def _all_spans(node: object) -> list[ast.Span]:
    found: list[ast.Span] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Span):
            found.append(current)
        elif isinstance(current, tuple):
            stack.extend(current)
        elif hasattr(current, "__slots__") or hasattr(current, "__dataclass_fields__"):
            for name in getattr(current, "__dataclass_fields__", {}):
                stack.append(getattr(current, name))
    return found


def test_list_map_call_spans() -> None:
    text = 'job "j" {\n  x = [1, 2]\n  y = { a = "b" }\n  z = f(1, k = 2)\n}'
    file = parse_ok(text)
    x, y, z = file.blocks[0].attributes
    assert text[x.value.span.start : x.value.span.end] == "[1, 2]"
    assert text[y.value.span.start : y.value.span.end] == '{ a = "b" }'
    assert isinstance(y.value, ast.MapExpr)
    (entry,) = y.value.entries
    assert entry.key_span == ast.Span("t.flow", 3, 9, 3, 10, 31, 32)
    assert text[entry.span.start : entry.span.end] == 'a = "b"'
    assert isinstance(z.value, ast.Call)
    assert text[z.value.span.start : z.value.span.end] == "f(1, k = 2)"
    assert z.value.function_span == ast.Span("t.flow", 4, 7, 4, 8, 47, 48)
    (kwarg,) = z.value.kwargs
    assert text[kwarg.span.start : kwarg.span.end] == "k = 2"
    assert kwarg.name_span.column == 12


def test_include_span() -> None:
    file = parse_ok('\n  include "common.flow"\n')
    (include,) = file.includes
    assert include.path.value == "common.flow"
    assert include.path.raw == '"common.flow"'
    assert include.span == ast.Span("t.flow", 2, 3, 2, 24, 3, 24)


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("1.5s", 1.5),
        ("15m", 900.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("250us", 0.00025),
        ("1h0m30s", 3630.0),
    ],
)
def test_durations(written: str, seconds: float) -> None:
    value = value_of(written)
    assert isinstance(value, ast.Duration)
    assert math.isclose(value.seconds, seconds)
    assert value.raw == written


@pytest.mark.parametrize(
    ("written", "size"),
    [
        ("512Mi", 512 * 1024**2),
        ("2GB", 2 * 1000**3),
        ("1Ki", 1024),
        ("1.5Gi", 1536 * 1024**2),
        ("10B", 10),
        ("3K", 3000),
        ("1Ti", 1024**4),
    ],
)
def test_sizes(written: str, size: int) -> None:
    value = value_of(written)
    assert isinstance(value, ast.Size)
    assert value.bytes == size
    assert value.raw == written


@pytest.mark.parametrize(
    ("written", "number"),
    [
        ("1_000", 1000),
        ("-3", -3),
        ("2.5e3", 2500.0),
        ("0.5", 0.5),
        ("12", 12),
        ("1E-2", 0.01),
        ("-0.25", -0.25),
    ],
)
def test_numbers(written: str, number: int | float) -> None:
    value = value_of(written)
    assert isinstance(value, ast.Number)
    assert value.value == number
    assert type(value.value) is type(number)
    assert value.raw == written


@pytest.mark.parametrize(
    ("written", "decoded"),
    [
        (r'"a\nb"', "a\nb"),
        (r'"a\tb"', "a\tb"),
        (r'"say \"hi\""', 'say "hi"'),
        (r'"C:\\dir"', "C:\\dir"),
        (r'"caf\u00e9"', "café"),
        (r'"\u{1F600}!"', "😀!"),
        (r'"\r\/\0"', "\r/\0"),
        ('"plain # not a comment // nor this"', "plain # not a comment // nor this"),
        ('""', ""),
    ],
)
def test_string_escapes(written: str, decoded: str) -> None:
    value = value_of(written)
    assert isinstance(value, ast.String)
    assert value.value == decoded
    assert value.raw == written


def test_other_values() -> None:
    assert value_of("true") == ast.Bool(True, value_of("true").span)
    assert isinstance(value_of("false"), ast.Bool)
    name = value_of("all_success")
    assert isinstance(name, ast.Name)
    assert name.name == "all_success"
    reference = value_of("topic.orders-eu")
    assert isinstance(reference, ast.Reference)
    assert reference.parts == ("topic", "orders-eu")
    assert (reference.kind, reference.target, str(reference)) == (
        "topic",
        "orders-eu",
        "topic.orders-eu",
    )
    call = value_of('cron("0 2 * * *", timezone = "UTC")')
    assert isinstance(call, ast.Call)
    assert call.function == "cron"
    assert [a.value for a in call.args] == ["0 2 * * *"]  # type: ignore[union-attr]
    assert [k.name for k in call.kwargs] == ["timezone"]
    listing = value_of("[1, 2s, 3Mi,]")
    assert isinstance(listing, ast.ListExpr)
    assert [type(i).__name__ for i in listing.items] == ["Number", "Duration", "Size"]
    mapping = value_of('{ A = 1 "b c" = 2, }')
    assert isinstance(mapping, ast.MapExpr)
    assert [(e.key, e.quoted) for e in mapping.entries] == [("A", False), ("b c", True)]


def test_comments_are_collected_with_spans() -> None:
    text = (
        "# head\r\n"
        'job "a" { // after brace\n'
        "  x = 1 /* inline */\n"
        "  /* two\n     lines */\n"
        '}\n# "end"'
    )
    file = parse_ok(text)
    assert [c.text for c in file.comments] == [
        "# head",  # the \r of a CRLF line end is not part of the comment
        "// after brace",
        "/* inline */",
        "/* two\n     lines */",
        '# "end"',
    ]
    head, brace, inline, multi, end = file.comments
    assert head.span[1:5] == (1, 1, 1, 8)  # the span still covers the \r
    assert brace.span[1:5] == (2, 11, 2, 25)
    assert inline.span[1:5] == (3, 9, 3, 21)
    assert multi.span[1:5] == (4, 3, 5, 14)
    assert end.span[1:5] == (7, 1, 7, 8)
    for comment in (brace, inline, multi, end):
        assert text[comment.span.start : comment.span.end] == comment.text


def test_comment_markers_inside_strings_are_not_comments() -> None:
    file = parse_ok('job "a" { url = "http://x/#y" }')
    assert file.comments == ()


def test_blocks_and_includes_keep_their_order() -> None:
    file = parse_ok('include "a.flow"\njob "x" {}\ninclude "b.flow"\npool "p" { slots = 1 }')
    assert [type(i).__name__ for i in file.items] == ["Include", "Block", "Include", "Block"]
    assert [i.path.value for i in file.includes] == ["a.flow", "b.flow"]
    assert [b.describe() for b in file.blocks] == ['job "x"', 'pool "p"']


def test_newlines_are_not_significant() -> None:
    one_line = parse_ok('job "a" { retry { attempts = 3  jitter = true } }')
    retry = one_line.blocks[0].blocks[0]
    assert [a.name for a in retry.attributes] == ["attempts", "jitter"]
