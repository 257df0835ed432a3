"""Property-based tests of the front end: the parser never raises, `fmt` is safe.

Generated `.flow` files (random blocks, attributes and values, with random
whitespace and comments between any two tokens) must parse; formatting them must
keep the syntax tree and every comment, and formatting twice must change nothing.
Broken input (truncated or spliced files, random bytes and text, absurd nesting)
must only ever give diagnostics in the language's words, never an exception.

Set TIDEFLOW_DSL_EXAMPLES to run more examples than the quick default.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tideflow.dsl import ast
from tideflow.dsl.diagnostics import CODES, Diagnostic
from tideflow.dsl.formatter import format_source
from tideflow.dsl.parser import MAX_NESTING, ParseResult, parse, parse_bytes

from .front_end_checks import check_formatting

settings.register_profile(
    "tideflow-dsl",
    max_examples=int(os.environ.get("TIDEFLOW_DSL_EXAMPLES", "100")),
    deadline=None,
    database=None,  # nothing written into the work tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DSL = settings.get_profile("tideflow-dsl")
# generating whole files is the slow part: fewer examples for the tests that do
DSL_FILES = settings(DSL, max_examples=max(1, DSL.max_examples // 2))

SAMPLES = [p.read_text("utf-8") for p in sorted((Path(__file__).parent / "samples").glob("*.flow"))]

# --- generating valid files, token by token -------------------------------------------

_KEYWORDS = {"include", "true", "false"}
_PUNCTUATION = set("{}[](),=")

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,7}", fullmatch=True).filter(
    lambda n: n not in _KEYWORDS
)
block_types = st.sampled_from(
    ["flow", "broker", "topic", "pool", "job", "consumer", "notify", "retry", "scale", "resources"]
)
_string_piece = st.one_of(
    st.text(
        st.characters(exclude_characters='"\\\n', exclude_categories=["Cs"]),
        max_size=6,
    ),
    st.sampled_from(
        ["\\n", "\\t", "\\r", '\\"', "\\\\", "\\/", "\\0", "\\u00e9", "\\u{1F600}", "#", "//", "/*"]
    ),
)
strings = st.lists(_string_piece, max_size=4).map(lambda parts: '"' + "".join(parts) + '"')
numbers = st.from_regex(
    r"-?[0-9][0-9_]{0,4}(\.[0-9][0-9_]{0,3})?([eE][+-]?[0-9]{1,2})?", fullmatch=True
)
_amount = st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,2})?", fullmatch=True)
durations = st.lists(
    st.tuples(_amount, st.sampled_from(["ms", "us", "s", "m", "h", "d", "w"])),
    min_size=1,
    max_size=3,
).map(lambda parts: "".join(a + u for a, u in parts))
sizes = st.tuples(
    _amount,
    st.sampled_from(["Ki", "Mi", "Gi", "Ti", "KB", "MB", "GB", "TB", "K", "M", "G", "T", "B"]),
).map("".join)
references = st.lists(names, min_size=2, max_size=3).map(".".join)
scalars = st.one_of(
    strings,
    numbers,
    durations,
    sizes,
    st.sampled_from(["true", "false"]),
    names,
    references,
).map(lambda token: [token])


def _concat(token_lists: list[list[str]]) -> list[str]:
    return list(itertools.chain.from_iterable(token_lists))


def _separated(items: list[list[str]], trailing_comma: bool) -> list[str]:
    tokens: list[str] = []
    for index, item in enumerate(items):
        tokens += item
        if index < len(items) - 1 or trailing_comma:
            tokens.append(",")
    return tokens


def _compound(children: st.SearchStrategy[list[str]]) -> st.SearchStrategy[list[str]]:
    lists = st.builds(
        lambda items, comma: ["[", *_separated(items, comma and bool(items)), "]"],
        st.lists(children, max_size=4),
        st.booleans(),
    )
    entry = st.builds(
        lambda key, value, comma: [key, "=", *value, *([","] if comma else [])],
        names | strings,
        children,
        st.booleans(),
    )
    maps = st.lists(entry, max_size=4).map(lambda entries: ["{", *_concat(entries), "}"])
    argument = children | st.builds(lambda name, value: [name, "=", *value], names, children)
    calls = st.builds(
        lambda name, args, comma: [name, "(", *_separated(args, comma and bool(args)), ")"],
        names,
        st.lists(argument, max_size=3),
        st.booleans(),
    )
    return st.one_of(lists, maps, calls)


values = st.recursive(scalars, _compound, max_leaves=10)
attributes = st.builds(lambda name, value: [name, "=", *value], names, values)


def _blocks(body: st.SearchStrategy[list[str]]) -> st.SearchStrategy[list[str]]:
    return st.builds(
        lambda kind, label, items: [kind, *label, "{", *_concat(items), "}"],
        block_types,
        st.lists(strings, max_size=1),
        st.lists(body, max_size=5),
    )


body_items = st.recursive(attributes, lambda inner: _blocks(inner) | attributes, max_leaves=8)
includes = strings.map(lambda path: ["include", path])
files = st.lists(_blocks(body_items) | includes, max_size=5).map(_concat)

_line_comment_text = st.text(
    st.characters(exclude_characters="\n", exclude_categories=["Cs"]), max_size=12
)
_block_comment_text = st.text(
    st.characters(exclude_categories=["Cs"]) | st.just("\n"), max_size=12
).filter(lambda t: "*/" not in t and not t.endswith("*"))
trivia = st.one_of(
    st.sampled_from([" ", "\n", "  ", "\t", "\n\n", "\n\n\n", "\r\n", " \n  "]),
    _line_comment_text.map(lambda t: f" #{t}\n"),
    _line_comment_text.map(lambda t: f"//{t}\n"),
    _block_comment_text.map(lambda t: f"/*{t}*/"),
    _block_comment_text.map(lambda t: f" /*{t}*/ "),
)


@st.composite
def flow_texts(draw: Callable[..., Any]) -> str:
    """A valid file: generated tokens with random whitespace and comments around each."""
    tokens: list[str] = draw(files)
    parts = [draw(trivia | st.just(""))]
    for index, token in enumerate(tokens):
        parts.append(token)
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        glue_ok = following is None or token in _PUNCTUATION or following in _PUNCTUATION
        parts.append(draw(trivia | st.just("")) if glue_ok else draw(trivia))
    return "".join(parts)


# --- what must hold ---------------------------------------------------------------------

_LARK_WORDS = re.compile(
    r"\$END|__ANON|\b(?:RBRACE|LBRACE|RSQB|LSQB|RPAR|LPAR|EQUAL|COMMA|NAME|STRING|NUMBER"
    r"|DURATION|SIZE|REFERENCE|INCLUDE|TRUE|FALSE|COMMENT|BLOCK_COMMENT|WS|Token|Tree)\b"
    r"|Unexpected|lark|Lark|VisitError|[Ee]xpected one of"
)
_QUOTED = re.compile(r"`[^`]*`|\"(?:[^\"\\]|\\.)*\"")


def assert_clean_diagnostics(result: ParseResult, text: str) -> None:
    """Diagnostics a user can read: known codes, valid spans, no parser internals."""
    if result.file is None:
        assert len(result.diagnostics) == 1
    for diagnostic in result.diagnostics:
        assert diagnostic.code in CODES
        assert diagnostic.code.startswith("E1")
        _assert_words(diagnostic)
        assert diagnostic.span is not None
        assert 0 <= diagnostic.span.start <= diagnostic.span.end <= max(len(text), 1)
        assert diagnostic.span.line >= 1
        assert diagnostic.span.column >= 1


def _assert_words(diagnostic: Diagnostic) -> None:
    for words in (diagnostic.message, diagnostic.label, diagnostic.help):
        if words is not None:
            assert _LARK_WORDS.search(_QUOTED.sub("", words)) is None, words


# --- valid files --------------------------------------------------------------------------


@DSL_FILES
@given(text=flow_texts())
def test_generated_files_parse_and_format_safely(text: str) -> None:
    result = parse(text, "gen.flow")
    assert result.ok, (text, result.diagnostics)
    check_formatting(text)


@DSL
@given(data=st.data())
def test_samples_with_comments_inserted_anywhere(data: st.DataObject) -> None:
    """A comment between any two tokens of a real file is kept, in order."""
    text = data.draw(st.sampled_from(SAMPLES))
    result = parse(text, "s.flow")
    assert result.file is not None
    boundaries = sorted({0, len(text), *_token_boundaries(result.file.items)})
    chosen = data.draw(st.lists(st.sampled_from(boundaries), min_size=1, max_size=6, unique=True))
    for offset in sorted(chosen, reverse=True):
        comment = data.draw(trivia.filter(lambda t: "/*" in t or "#" in t or "//" in t))
        text = text[:offset] + comment + text[offset:]
    assert parse(text, "s.flow").ok
    check_formatting(text)


def _token_boundaries(node: object) -> set[int]:
    """Where the code's tokens start and end (never inside a comment)."""
    found: set[int] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Span):
            found.update((current.start, current.end))
        elif isinstance(current, tuple):
            stack.extend(current)
        elif dataclasses.is_dataclass(current) and not isinstance(current, type):
            stack.extend(getattr(current, f.name) for f in dataclasses.fields(current))
    return found


# --- broken input -------------------------------------------------------------------------


def check_any_input(text: str) -> None:
    result = parse(text, "any.flow")
    assert_clean_diagnostics(result, text)
    if result.file is not None:
        check_formatting(text)
    else:
        assert format_source(text).text is None


@DSL_FILES
@given(text=flow_texts(), data=st.data())
def test_truncated_files(text: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(text)))
    check_any_input(text[:cut])


@DSL
@given(data=st.data())
def test_truncated_samples(data: st.DataObject) -> None:
    text = data.draw(st.sampled_from(SAMPLES))
    check_any_input(text[: data.draw(st.integers(0, len(text)))])


@DSL_FILES
@given(first=flow_texts(), second=flow_texts() | st.sampled_from(SAMPLES), data=st.data())
def test_spliced_files(first: str, second: str, data: st.DataObject) -> None:
    head = data.draw(st.integers(0, len(first)))
    tail = data.draw(st.integers(0, len(second)))
    check_any_input(first[:head] + second[tail:])


@DSL
@given(data=st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    result = parse_bytes(data, "bytes.flow")
    text = data.decode("utf-8", errors="replace")
    assert_clean_diagnostics(result, text)
    if result.file is None and result.diagnostics[0].code == "E101":
        assert result.diagnostics[0].help == "save the file as UTF-8"


@DSL
@given(text=st.text(max_size=200))
def test_random_text(text: str) -> None:
    check_any_input(text)


@DSL
@given(
    text=st.lists(
        st.sampled_from([*'{}[]()=,"#/*\n ', "job", "x", "1", "1s", "include", '"a"']),
        max_size=60,
    ).map("".join)
)
def test_random_language_punctuation(text: str) -> None:
    check_any_input(text)


@DSL
@given(
    pieces=st.lists(
        st.sampled_from(
            ["job", '"a"', "{", "}", "[", "]", "(", ")", "=", ",", "x", "f", "1", "true", "include"]
        ),
        max_size=30,
    )
)
def test_token_soup(pieces: list[str]) -> None:
    check_any_input(" ".join(pieces))


_OPENERS = {"list": ("[", "]"), "map": ("{ k = ", " }"), "call": ("f(", ")"), "block": ("b {", "}")}


def _nest(kinds: list[str], closed: bool) -> str:
    """Values nested in the order of `kinds` inside one job (a block always holds a block)."""
    opening, closing = ['job "deep" { '], [" }"]
    inside_block = True
    for kind in kinds:
        if inside_block and kind != "block":
            opening.append("x = ")
        elif not inside_block and kind == "block":
            kind = "map"
        start, end = _OPENERS[kind]
        opening.append(start)
        closing.append(end)
        inside_block = kind == "block"
    if inside_block:
        opening.append("y = 1")
    else:
        opening.append("1")
    return "".join(opening) + ("".join(reversed(closing)) if closed else "")


@settings(DSL, max_examples=min(DSL.max_examples, 40))
@given(
    kinds=st.lists(st.sampled_from(sorted(_OPENERS)), min_size=1, max_size=500),
    closed=st.booleans(),
)
def test_deep_nesting(kinds: list[str], closed: bool) -> None:
    text = _nest(kinds, closed)
    result = parse(text, "deep.flow")
    assert_clean_diagnostics(result, text)
    depth = len(kinds) + 1  # the job block is a level too
    if depth > MAX_NESTING:
        assert result.file is None
        assert result.diagnostics[0].message == "nesting too deep"
    elif closed:
        assert result.ok, result.diagnostics
        check_formatting(text)
    else:
        assert result.diagnostics[0].code == "E104"


@pytest.mark.parametrize("kind", sorted(_OPENERS))
@pytest.mark.parametrize("depth", [MAX_NESTING - 1, MAX_NESTING, 500, 5000])
def test_nesting_at_and_past_the_limit(kind: str, depth: int) -> None:
    text = _nest([kind] * depth, closed=True)
    result = parse(text, "deep.flow")
    assert_clean_diagnostics(result, text)
    if depth + 1 > MAX_NESTING:
        assert result.diagnostics[0].message == "nesting too deep"
    else:
        output = check_formatting(text)
        assert output.count("\n") > depth  # one opener per line once broken
