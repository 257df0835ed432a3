"""The fast lexer must produce exactly the tokens of lark's own lexer.

`_FastLexer` re-implements lark's basic lexer with one `re.finditer`; these tests
compare the two token by token (type, value, line, column, end line, end column),
comments included, and check that both stop at the same character on bad input.
"""

from __future__ import annotations

import os
from copy import copy
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark import Token
from lark.exceptions import UnexpectedCharacters
from tideflow.dsl.parser import _FastLexer, _parser, reference_parser

SAMPLES = Path(__file__).parent / "samples"
COMMENT_TYPES = frozenset({"COMMENT", "BLOCK_COMMENT"})

LEXER_SETTINGS = settings(
    max_examples=int(os.environ.get("TIDEFLOW_DSL_EXAMPLES", "150")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

Shape = tuple[str, str, int | None, int | None, int | None, int | None]
Outcome = tuple[list[Shape], int | None]  # the tokens, and where lexing failed (or None)


def shape(token: Token) -> Shape:
    return (
        token.type,
        token.value,
        token.line,
        token.column,
        token.end_line,
        token.end_column,
    )


def reference_tokens(text: str) -> Outcome:
    tokens: list[Shape] = []
    try:
        for token in reference_parser().lex(text, dont_ignore=True):
            if token.type != "WS":
                tokens.append(shape(token))
    except UnexpectedCharacters as exc:
        return tokens, exc.pos_in_stream
    return tokens, None


def fast_tokens(text: str) -> Outcome:
    tokens: list[Shape] = []

    def keep(token: Token) -> Token:
        tokens.append(shape(token))
        return token

    conf = copy(_parser().lexer_conf)
    conf.callbacks = dict.fromkeys(COMMENT_TYPES, keep)
    try:
        for token in _FastLexer(conf).lex(text):
            tokens.append(shape(token))
    except UnexpectedCharacters as exc:
        return tokens, exc.pos_in_stream
    return tokens, None


def assert_same_tokens(text: str) -> list[Shape]:
    expected, expected_stop = reference_tokens(text)
    actual, actual_stop = fast_tokens(text)
    assert actual == expected
    assert actual_stop == expected_stop
    return actual


@pytest.mark.parametrize("sample", sorted(SAMPLES.glob("*.flow")), ids=lambda p: p.name)
def test_samples_lex_the_same(sample: Path) -> None:
    tokens = assert_same_tokens(sample.read_text("utf-8"))
    assert len(tokens) > 50
    assert any(t[0] in COMMENT_TYPES for t in tokens)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "job",
        "include includes include_ true truex false-y",
        "1 1_000 -3 2.5e3 1E+9 0.5 1.5.3",
        "500ms 1h30m 1.5s 10us 2d 3w 5mx 5m5",
        "512Mi 2GB 3K 1.5Gi 10B 2Bi 7KiB",
        "topic.orders job.a-b.c a. .b a..b",
        '"a" "\\"" "\\\\" "a\\nb" "unterminated',
        "# line\n// also\n/* block\n spanning */ x /* a */ /**/ /*/ */",
        "a\r\nb\r\n# crlf comment\r\n",
        "\ufeffjob \t\f x",
        "{[(,=)]}",
        "é",
        "a @ b",
        "/* never closed",
        "x-1 x_1 _ __ -",
    ],
)
def test_edge_cases_lex_the_same(text: str) -> None:
    assert_same_tokens(text)


# Pieces of the language and near misses, so that generated text is mostly lexable
_PIECES = [
    "job",
    "include",
    "true",
    "false",
    "x",
    "a_b",
    "a-b",
    "topic.orders",
    "a.b.c",
    "1",
    "1_000",
    "-3",
    "2.5e3",
    "1e",
    "500ms",
    "1h30m",
    "1.5s",
    "512Mi",
    "2GB",
    "5x",
    '"s"',
    '"a\\"b"',
    '"\\u{1F600}"',
    '"',
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "=",
    ",",
    ".",
    "-",
    "# c",
    "// c",
    "/* c */",
    "/*\n*/",
    "/*",
    "*/",
    "/",
    "*",
    " ",
    "\n",
    "\t",
    "\r\n",
    "é",
]


token_soup = st.lists(st.sampled_from(_PIECES), max_size=40)
random_text = st.text(
    st.sampled_from('abz_AZ09.-"\\#/*{}[]()=,\n\t\r ueEmshiMGK') | st.characters(), max_size=60
)


@pytest.mark.parametrize("joiner", [" ", ""], ids=["spaced", "glued"])
@LEXER_SETTINGS
@given(pieces=token_soup)
def test_generated_token_soup_lexes_the_same(joiner: str, pieces: list[str]) -> None:
    assert_same_tokens(joiner.join(pieces))


@LEXER_SETTINGS
@given(text=random_text)
def test_random_text_lexes_the_same(text: str) -> None:
    assert_same_tokens(text)
