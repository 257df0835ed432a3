"""Each syntax diagnostic (E101-E107) with its exact position and wording.

Messages speak the language's terms: no lark terminal name (`RBRACE`, `$END`)
or class name (`UnexpectedToken`) may ever reach a user.
"""

from __future__ import annotations

import re

import pytest
from tideflow.dsl.diagnostics import CODES, Diagnostic
from tideflow.dsl.parser import MAX_NESTING, ParseResult, parse, parse_bytes

_LARK_WORDS = re.compile(
    r"\$END|__ANON|\b(?:RBRACE|LBRACE|RSQB|LSQB|RPAR|LPAR|EQUAL|COMMA|NAME|STRING|NUMBER"
    r"|DURATION|SIZE|REFERENCE|INCLUDE|TRUE|FALSE|COMMENT|BLOCK_COMMENT|WS|Token|Tree)\b"
    r"|Unexpected|lark|Lark|VisitError|[Ee]xpected one of"
)
# what the user wrote, which a message quotes in backticks or as a string literal
_QUOTED = re.compile(r"`[^`]*`|\"(?:[^\"\\]|\\.)*\"")


def assert_user_facing(diagnostic: Diagnostic) -> None:
    """No parser internals in the text a user reads; rustc style (lower-case message)."""
    assert diagnostic.code in CODES
    for text in (diagnostic.message, diagnostic.label, diagnostic.help):
        if text is None:
            continue
        assert _LARK_WORDS.search(_QUOTED.sub("", text)) is None, text
    assert diagnostic.message[:1] == diagnostic.message[:1].lower(), diagnostic.message


def only(result: ParseResult) -> Diagnostic:
    assert len(result.diagnostics) == 1, result.diagnostics
    (diagnostic,) = result.diagnostics
    assert_user_facing(diagnostic)
    return diagnostic


def where(diagnostic: Diagnostic) -> tuple[int, int, int, int]:
    assert diagnostic.span is not None
    return (
        diagnostic.span.line,
        diagnostic.span.column,
        diagnostic.span.end_line,
        diagnostic.span.end_column,
    )


def test_e101_not_utf8_points_at_the_bad_byte_in_characters() -> None:
    # the é before the bad byte is two bytes but one column
    data = b'job "a" {\n  x = "\xc3\xa9\xff"\n}\n'
    result = parse_bytes(data, "bad.flow")
    assert result.file is None
    diagnostic = only(result)
    assert diagnostic.code == "E101"
    assert diagnostic.message == "file is not valid UTF-8 (byte 0xff at offset 19)"
    assert where(diagnostic) == (2, 9, 2, 10)
    assert diagnostic.span is not None
    assert diagnostic.span.path == "bad.flow"
    assert diagnostic.span.start == 18
    assert diagnostic.label is None
    assert diagnostic.help == "save the file as UTF-8"


def test_e101_on_the_first_line() -> None:
    diagnostic = only(parse_bytes(b"\x80job", "x.flow"))
    assert diagnostic.code == "E101"
    assert where(diagnostic) == (1, 1, 1, 2)


def test_valid_utf8_bytes_parse() -> None:
    result = parse_bytes('job "café" {}'.encode(), "x.flow")
    assert result.ok
    assert result.file is not None
    assert result.file.blocks[0].label is not None
    assert result.file.blocks[0].label.value == "café"


def test_e102_unexpected_character() -> None:
    diagnostic = only(parse('job "a" {\n  x = @\n}', "f.flow"))
    assert diagnostic.code == "E102"
    assert diagnostic.message == "unexpected character `@`"
    assert where(diagnostic) == (2, 7, 2, 8)
    assert diagnostic.label is None
    assert diagnostic.help is None


def test_e102_single_quotes_suggest_double_quotes() -> None:
    diagnostic = only(parse("job 'extract' {}", "f.flow"))
    assert diagnostic.code == "E102"
    assert diagnostic.message == "unexpected character `'`"
    assert where(diagnostic) == (1, 5, 1, 6)
    assert diagnostic.help == "strings use double quotes"


def test_e102_control_character_is_shown_escaped() -> None:
    diagnostic = only(parse('job "a" {\x01}', "f.flow"))
    assert diagnostic.message == "unexpected character `\\x01`"
    assert where(diagnostic) == (1, 10, 1, 11)


def test_e102_unterminated_block_comment() -> None:
    diagnostic = only(parse('job "a" {}\n/* never closed\n', "f.flow"))
    assert diagnostic.code == "E102"
    assert diagnostic.message == "unterminated block comment"
    assert where(diagnostic) == (2, 1, 2, 3)
    assert diagnostic.label == "this `/*` has no closing `*/`"
    assert diagnostic.help is None


def test_e103_missing_comma_in_a_list() -> None:
    diagnostic = only(parse('job "a" {\n  after = [job.x job.y]\n}', "f.flow"))
    assert diagnostic.code == "E103"
    assert diagnostic.message == "unexpected reference `job.y`"
    assert where(diagnostic) == (2, 18, 2, 23)
    assert diagnostic.label == "expected `,` or `]`"
    assert diagnostic.help == "separate list items with `,`"


@pytest.mark.parametrize(
    ("value", "help_"),
    [
        ("1h 30m", "no spaces in a duration: write `1h30m`"),
        ("2m\t1.5s", "no spaces in a duration: write `2m1.5s`"),
    ],
)
def test_e103_a_duration_with_a_space_says_to_drop_it(value: str, help_: str) -> None:
    diagnostic = only(parse(f'job "a" {{\n  timeout = {value}\n}}', "f.flow"))
    assert diagnostic.code == "E103"
    assert diagnostic.message.startswith("unexpected duration")
    assert diagnostic.help == help_


def test_e103_two_values_that_are_not_one_duration_get_no_duration_hint() -> None:
    diagnostic = only(parse('job "a" {\n  timeout = x 30m\n}', "f.flow"))
    assert diagnostic.help is None
    in_a_list = only(parse('job "a" {\n  x = [1h 30m]\n}', "f.flow"))
    assert in_a_list.help == "separate list items with `,`"


def test_e103_missing_comma_in_a_call() -> None:
    diagnostic = only(parse('job "a" { backoff = exponential(10s 5m) }', "f.flow"))
    assert diagnostic.message == "unexpected duration `5m`"
    assert where(diagnostic) == (1, 37, 1, 39)
    assert diagnostic.label == "expected `)` or `,`"
    assert diagnostic.help == "separate call arguments with `,`"


def test_e103_attribute_outside_a_block() -> None:
    diagnostic = only(parse("timeout = 5m\n", "f.flow"))
    assert diagnostic.code == "E103"
    assert diagnostic.message == "unexpected `=`"
    assert where(diagnostic) == (1, 9, 1, 10)
    assert diagnostic.label == "expected `{` to open the block"
    assert diagnostic.help == 'attributes go inside a block: `job "name" { key = value }`'


def test_e103_unquoted_label() -> None:
    diagnostic = only(parse("job extract {}", "f.flow"))
    assert diagnostic.message == "unexpected name `extract`"
    assert where(diagnostic) == (1, 5, 1, 12)
    assert diagnostic.label == "expected `{` to open the block"
    assert diagnostic.help == 'block labels are strings: `"extract"`'


def test_e103_value_where_an_attribute_should_start() -> None:
    diagnostic = only(parse('job "a" {\n  "run" = 1\n}', "f.flow"))
    assert diagnostic.message == 'unexpected string "run"'
    assert where(diagnostic) == (2, 3, 2, 8)
    assert diagnostic.label == "expected an attribute, a nested block, or `}` to close the block"
    assert diagnostic.help is None


def test_e103_map_entry_without_equals() -> None:
    diagnostic = only(parse('job "a" { env = { A = "1" B } }', "f.flow"))
    assert diagnostic.message == "unexpected `}`"
    assert where(diagnostic) == (1, 29, 1, 30)
    assert diagnostic.label == "expected `=`"


def test_e103_stray_closing_brace() -> None:
    diagnostic = only(parse('job "a" {}\n}\n', "f.flow"))
    assert diagnostic.message == "unexpected `}`"
    assert where(diagnostic) == (2, 1, 2, 2)
    assert diagnostic.label == 'expected a block (such as `job "name" { … }`) or `include`'


def test_e103_keywords_are_reserved() -> None:
    diagnostic = only(parse('job "a" { include = 1 }', "f.flow"))
    assert diagnostic.message == "unexpected `include`"
    assert where(diagnostic) == (1, 11, 1, 18)


def test_e104_unclosed_block() -> None:
    diagnostic = only(parse('job "extract" {\n  run = "shop.jobs:extract"\n', "f.flow"))
    assert diagnostic.code == "E104"
    assert diagnostic.message == "unexpected end of file"
    assert where(diagnostic) == (2, 27, 2, 28)  # the last character written
    assert diagnostic.label == "expected an attribute, a nested block, or `}` to close the block"
    assert diagnostic.help == 'the `job "extract"` block opened at line 1 is not closed'


def test_e104_unclosed_nested_block_without_label() -> None:
    diagnostic = only(parse('job "a" {\n  retry {\n    attempts = 3', "f.flow"))
    assert diagnostic.help == "the `retry` block opened at line 2 is not closed"
    assert where(diagnostic) == (3, 16, 3, 17)


def test_e104_unclosed_list() -> None:
    diagnostic = only(parse('job "a" {\n  after = [job.x,\n', "f.flow"))
    assert diagnostic.code == "E104"
    assert where(diagnostic) == (2, 17, 2, 18)
    assert diagnostic.label == "expected a value or `]`"
    assert diagnostic.help == "the list opened at line 2 is not closed"


def test_e104_unclosed_call_and_map() -> None:
    call = only(parse('job "a" {\n  schedule = cron("0 2 * * *",', "f.flow"))
    assert call.label == "expected a value or `)`"
    assert call.help == "the call to `cron` opened at line 2 is not closed"
    mapping = only(parse('job "a" {\n  env = {\n    A = "1"', "f.flow"))
    assert mapping.label == "expected a map entry (`key = value`), `,` or `}`"
    assert mapping.help == "the map opened at line 2 is not closed"


def test_e104_missing_value() -> None:
    diagnostic = only(parse('job "a" { timeout =', "f.flow"))
    assert diagnostic.label == "expected a value"
    assert where(diagnostic) == (1, 19, 1, 20)


def test_e104_outside_any_block() -> None:
    diagnostic = only(parse("job", "f.flow"))
    assert diagnostic.code == "E104"
    assert diagnostic.label == "expected `{` to open the block"
    assert diagnostic.help is None
    include = only(parse("include\n\n", "f.flow"))
    assert include.label == "expected a string"
    assert where(include) == (1, 7, 1, 8)


def test_e105_unterminated_string() -> None:
    diagnostic = only(parse('job "a" {\n  run = "shop.jobs:extract\n}\n', "f.flow"))
    assert diagnostic.code == "E105"
    assert diagnostic.message == "unterminated string"
    assert where(diagnostic) == (2, 9, 2, 27)  # to the end of the line
    assert diagnostic.label == 'this string has no closing `"` on its line'
    assert diagnostic.help == "close the string on the same line; use \\n for a line break"


def test_e105_at_the_end_of_the_file() -> None:
    diagnostic = only(parse('include "common', "f.flow"))
    assert diagnostic.code == "E105"
    assert where(diagnostic) == (1, 9, 1, 16)


@pytest.mark.parametrize(
    ("written", "column", "width"),
    [
        ("\\q", 10, 2),
        ("\\u{110000}", 10, 10),
        ("\\u{1234567}", 10, 2),
        ("\\uD800", 10, 6),
        ("\\x41", 10, 2),
    ],
)
def test_e106_invalid_escape(written: str, column: int, width: int) -> None:
    text = f'job "a" {{\n  x = "ab{written}cd"\n}}\n'
    result = parse(text, "f.flow")
    assert result.file is not None  # the file still parses; the string keeps the escape
    assert not result.ok
    diagnostic = only(result)
    assert diagnostic.code == "E106"
    shown = written[:width]
    assert diagnostic.message == f"invalid escape sequence `{shown}` in a string"
    assert where(diagnostic) == (2, column, 2, column + width)
    assert diagnostic.help == 'valid escapes: \\n \\t \\r \\" \\\\ \\uXXXX \\u{X…}'
    value = result.file.blocks[0].attributes[0].value
    assert value.raw == f'"ab{written}cd"'  # type: ignore[union-attr]


def test_e106_each_bad_escape_is_reported() -> None:
    result = parse('job "a" { x = "\\q\\w" y = "\\e" }', "f.flow")
    assert [where(d)[:2] for d in result.diagnostics] == [(1, 16), (1, 18), (1, 27)]
    assert all(d.code == "E106" for d in result.diagnostics)


@pytest.mark.parametrize(
    ("written", "shown"),
    [("10x", "10x"), ("1.2.3", "1.2.3"), ("5mins", "5mins"), ("2Xi", "2Xi"), ("-3s", "-3s")],
)
def test_e107_invalid_number(written: str, shown: str) -> None:
    diagnostic = only(parse(f'job "a" {{\n  timeout = {written}\n}}', "f.flow"))
    assert diagnostic.code == "E107"
    assert diagnostic.message == f"invalid number, duration or size `{shown}`"
    assert where(diagnostic) == (2, 13, 2, 13 + len(shown))
    assert diagnostic.label is None
    assert diagnostic.help == (
        "durations use ms, s, m, h, d, w (`1h30m`); sizes use Ki, Mi, Gi, KB, MB, GB"
    )


def _nested_lists(depth: int) -> str:
    # the block is one level, each list another
    return 'job "a" { x = ' + "[" * (depth - 1) + "]" * (depth - 1) + " }"


def test_nesting_up_to_the_limit_parses() -> None:
    assert parse(_nested_lists(MAX_NESTING), "f.flow").ok
    blocks = "b {" * MAX_NESTING + "}" * MAX_NESTING
    assert parse(blocks, "f.flow").ok


@pytest.mark.parametrize(
    "text",
    [
        _nested_lists(MAX_NESTING + 1),
        "b {" * 500 + "}" * 500,
        'job "a" { x = ' + "{ a = " * 500 + "1" + " }" * 500 + " }",
        'job "a" { x = ' + "f(" * 500 + ")" * 500 + " }",
        'job "a" { x = ' + "[" * 100_000,
    ],
    ids=["limit+1", "blocks", "maps", "calls", "unclosed-100k"],
)
def test_nesting_beyond_the_limit_is_a_diagnostic(text: str) -> None:
    result = parse(text, "f.flow")
    assert result.file is None
    diagnostic = only(result)
    assert diagnostic.code == "E108"
    assert diagnostic.message == "nesting too deep"
    assert diagnostic.label == (
        f"more than {MAX_NESTING} levels of nested blocks, lists, maps and calls"
    )
    assert diagnostic.span is not None
    assert text[diagnostic.span.start] in "{[("
    assert diagnostic.span.end - diagnostic.span.start == 1


# Inputs that go wrong in every state the parser can be in; none may leak lark's names.
_BROKEN = [
    "",
    "}",
    "{",
    "=",
    "job",
    "job =",
    'job "a"',
    'job "a" "b"',
    'job "a" {',
    'job "a" { x',
    'job "a" { x =',
    'job "a" { x = }',
    'job "a" { x = 1 2 }',
    'job "a" { x = [ }',
    'job "a" { x = [1, }',
    'job "a" { x = [1 }',
    'job "a" { x = ] }',
    'job "a" { x = f( }',
    'job "a" { x = f(1 }',
    'job "a" { x = f(a = }',
    'job "a" { x = f(,) }',
    'job "a" { x = { }',
    'job "a" { x = { a } }',
    'job "a" { x = { a = } }',
    'job "a" { x = { a = 1 ] }',
    'job "a" { x = { "a" } }',
    'job "a" { x = { 1 = 2 } }',
    'job "a" { x = true( }',
    'job "a" { true = 1 }',
    'job "a" { x.y = 1 }',
    'job "a" { x = 1 } }',
    'job "a" { retry "b" = 1 }',
    'job "a" { retry { } ',
    'include "a" "b"',
    "include job",
    "include {",
    'include "a" {',
    "job.x {}",
    "1",
    "1s",
    "[",
    '"a"',
    "job [",
    "job(",
    "job )",
    "job ,",
    'job "a" { x = (1) }',
    'job "a" { x = f(1)(2) }',
    'job "a" { x = y(1) = 2 }',
]


@pytest.mark.parametrize("text", _BROKEN)
def test_broken_inputs_speak_the_language(text: str) -> None:
    for candidate in (text, text + "\n", text + " # trailing\n"):
        result = parse(candidate, "f.flow")
        if not text:
            assert result.ok  # an empty file, or one with only a comment, is valid
            continue
        assert result.file is None
        diagnostic = only(result)
        assert diagnostic.code in {"E103", "E104"}
        assert diagnostic.span is not None
        assert 1 <= diagnostic.span.line <= candidate.count("\n") + 1
