"""The lark wrapper: `.flow` text in, a `FlowFile` and diagnostics out.

lark's exceptions never reach a user: they are turned into diagnostics that
speak the language's terms ("expected `=` or `{`"), never terminal names.
The AST is built while parsing (LALR with an inline transformer), which never
raises; problems it notices (a bad escape) are collected as diagnostics.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import lark
from lark import Token
from lark.common import LexerConf
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternRE, PatternStr

from . import ast
from .diagnostics import Diagnostic
from .durations import seconds_in
from .gc_pause import gc_paused

__all__ = ["MAX_NESTING", "ParseResult", "decode_source", "parse", "parse_bytes"]

# Blocks, lists, maps and calls nest at most this deep. The parser itself is
# iterative, but every consumer of the AST (the formatter, the compiler, repr)
# walks it recursively; a limit far above any real file keeps them all clear of
# RecursionError and turns a pathological file into a diagnostic.
MAX_NESTING = 100


@dataclass(frozen=True, slots=True)
class ParseResult:
    file: ast.FlowFile | None  # None when the text could not be parsed at all
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return self.file is not None and not any(d.is_error for d in self.diagnostics)


def parse_bytes(data: bytes, path: str) -> ParseResult:
    """Decode `data` as UTF-8 (a clear diagnostic if it is not) and parse it."""
    text, problem = decode_source(data, path)
    if problem is not None:
        return ParseResult(None, (problem,))
    return parse(text, path)


def decode_source(data: bytes, path: str) -> tuple[str, Diagnostic | None]:
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        good = data[: exc.start].decode("utf-8")
        line = good.count("\n") + 1
        column = len(good) - good.rfind("\n")  # in characters, like every other span
        offset = len(good)
        span = ast.Span(path, line, column, line, column + 1, offset, offset + 1)
        return "", Diagnostic(
            "E101",
            f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            span,
            help="save the file as UTF-8",
        )


def parse(text: str, path: str) -> ParseResult:
    with _LOCK, gc_paused():
        _SINK.comments = []
        _SINK.diagnostics = []
        _SINK.path = path
        try:
            tree: Any = _parser().parse(text)
        except UnexpectedInput as exc:
            return ParseResult(None, (_syntax_error(exc, text, path),))
        except _NestingTooDeep as exc:
            return ParseResult(None, (_too_deep(exc.token),))
        finally:
            comments = tuple(_SINK.comments)
            found = tuple(_SINK.diagnostics)
    items: tuple[ast.Block | ast.Include, ...] = tree  # the builder's `start` returns a tuple
    return ParseResult(ast.FlowFile(path, text, items, comments), found)


# --- building the AST ------------------------------------------------------------


class _Sink(threading.local):
    """Per-parse side channel: comments from the lexer, problems from the builder."""

    path: str = ""
    comments: list[ast.Comment]
    diagnostics: list[Diagnostic]


_SINK = _Sink()
_LOCK = threading.Lock()


def _span(tok: Token) -> ast.Span:
    # lark's tokens always carry positions; its stubs say `int | None`
    return ast.Span(
        _SINK.path,
        tok.line or 0,
        tok.column or 0,
        tok.end_line or 0,
        tok.end_column or 0,
        tok.start_pos or 0,
        tok.end_pos or 0,
    )


def _first_last(children: list[Any]) -> ast.Span:
    spans = [c.span if not isinstance(c, Token) else _span(c) for c in children if c is not None]
    return spans[0].to(spans[-1])


# a duration, then blanks up to the end of the searched text (`1h 30m` split in two)
_SPACED_DURATION = re.compile(r"(?<![\w.])((?:\d+(?:\.\d+)?(?:ms|us|s|m|h|d|w))+)[ \t]+\Z")


_SIZE = re.compile(r"(\d+(?:\.\d+)?)([A-Za-z]+)")
_SIZE_UNITS = {
    "B": 1,
    "K": 1000,
    "KB": 1000,
    "M": 1000**2,
    "MB": 1000**2,
    "G": 1000**3,
    "GB": 1000**3,
    "T": 1000**4,
    "TB": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}
_ESCAPE = re.compile(r"\\(u\{[0-9A-Fa-f]{1,6}\}|u[0-9A-Fa-f]{4}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "/": "/", "0": "\0"}


def _decode_string(tok: Token) -> str:
    raw: str = tok.value[1:-1]
    if "\\" not in raw:
        return raw

    def replace(match: re.Match[str]) -> str:
        body = match.group(1)
        if body in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[body]
        if body.startswith("u") and len(body) > 1:
            code = int(body[2:-1] if body.startswith("u{") else body[1:], 16)
            if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
                return chr(code)
        where = _span(tok)
        start = where.start + 1 + match.start()
        column = where.column + 1 + match.start()
        width = len(match.group(0))
        span = ast.Span(
            _SINK.path, where.line, column, where.line, column + width, start, start + width
        )
        _SINK.diagnostics.append(
            Diagnostic(
                "E106",
                f"invalid escape sequence `{match.group(0)}` in a string",
                span,
                help='valid escapes: \\n \\t \\r \\" \\\\ \\uXXXX \\u{X…}',
            )
        )
        return match.group(0)

    return _ESCAPE.sub(replace, raw)


def _values(children: list[Any]) -> tuple[Any, ...]:
    """The non-punctuation children of a rule."""
    return tuple(c for c in children if c is not None and not isinstance(c, Token))


class _Builder(lark.Transformer[Token, Any]):
    """Builds `dsl.ast` nodes while parsing. Never raises: see `_SINK`."""

    def start(self, children: list[Any]) -> tuple[Any, ...]:
        return tuple(children)

    def include(self, children: list[Token]) -> ast.Include:
        keyword, path = children
        string = ast.String(_decode_string(path), path.value, _span(path))
        return ast.Include(string, _span(keyword).to(string.span))

    def block(self, children: list[Any]) -> ast.Block:
        name = children[0]
        label = None
        if isinstance(children[1], Token) and children[1].type == "STRING":
            label = ast.String(_decode_string(children[1]), children[1].value, _span(children[1]))
        body = _values(children)
        return ast.Block(name.value, _span(name), label, body, _span(name).to(_span(children[-1])))

    def attribute(self, children: list[Any]) -> ast.Attribute:
        name, _, value = children
        return ast.Attribute(name.value, _span(name), value, _span(name).to(value.span))

    def string(self, children: list[Token]) -> ast.String:
        (tok,) = children
        return ast.String(_decode_string(tok), tok.value, _span(tok))

    def number(self, children: list[Token]) -> ast.Number:
        (tok,) = children
        raw = tok.value
        digits = raw.replace("_", "")
        value: int | float = float(digits) if any(c in digits for c in ".eE") else int(digits)
        return ast.Number(value, raw, _span(tok))

    def duration(self, children: list[Token]) -> ast.Duration:
        (tok,) = children
        seconds = seconds_in(tok.value)
        return ast.Duration(seconds, tok.value, _span(tok))

    def size(self, children: list[Token]) -> ast.Size:
        (tok,) = children
        match = _SIZE.fullmatch(tok.value)
        assert match is not None  # the SIZE terminal guarantees the shape
        return ast.Size(
            round(float(match.group(1)) * _SIZE_UNITS[match.group(2)]), tok.value, _span(tok)
        )

    def true(self, children: list[Token]) -> ast.Bool:
        return ast.Bool(True, _span(children[0]))

    def false(self, children: list[Token]) -> ast.Bool:
        return ast.Bool(False, _span(children[0]))

    def name(self, children: list[Token]) -> ast.Name:
        (tok,) = children
        return ast.Name(tok.value, _span(tok))

    def reference(self, children: list[Token]) -> ast.Reference:
        (tok,) = children
        return ast.Reference(tuple(tok.value.split(".")), _span(tok))

    def call(self, children: list[Any]) -> ast.Call:
        name = children[0]
        args = _values(children)
        return ast.Call(
            name.value,
            _span(name),
            tuple(a for a in args if not isinstance(a, ast.KeywordArgument)),
            tuple(a for a in args if isinstance(a, ast.KeywordArgument)),
            _span(name).to(_span(children[-1])),
        )

    def argument(self, children: list[Any]) -> Any:
        return children[0]

    def keyword_argument(self, children: list[Any]) -> ast.KeywordArgument:
        name, _, value = children
        return ast.KeywordArgument(name.value, _span(name), value, _span(name).to(value.span))

    def list_expr(self, children: list[Any]) -> ast.ListExpr:
        return ast.ListExpr(_values(children), _first_last([children[0], children[-1]]))

    def map_expr(self, children: list[Any]) -> ast.MapExpr:
        return ast.MapExpr(_values(children), _first_last([children[0], children[-1]]))

    def map_entry(self, children: list[Any]) -> ast.MapEntry:
        key, _, value = children[:3]
        quoted = key.type == "STRING"
        text = _decode_string(key) if quoted else key.value
        return ast.MapEntry(text, _span(key), quoted, value, _span(key).to(value.span))


def _collect_comment(tok: Token) -> Token:
    _SINK.comments.append(ast.Comment(tok.value.rstrip("\r"), _span(tok)))
    return tok


class _FastLexer(lark.lexer.Lexer):
    """lark's own lexer, walked by `re.finditer` in C instead of token by token in Python.

    It uses the grammar's terminals in the order lark's basic lexer uses them, with
    the same keyword rule (a string terminal that its regexp terminal also matches,
    such as `true` for NAME, is recognised after the match). This roughly halves the
    parse time of a large flow (bench/compile_bench.py); tests/dsl/test_lexer.py
    checks that both lexers produce the same tokens.
    """

    def __init__(self, conf: LexerConf) -> None:
        terminals = sorted(
            conf.terminals,
            key=lambda t: (-t.priority, -t.pattern.max_width, -len(t.pattern.value), t.name),
        )
        strings = [t for t in terminals if isinstance(t.pattern, PatternStr)]
        self._keywords: dict[str, dict[str, str]] = {}
        kept = []
        for term in terminals:
            if isinstance(term.pattern, PatternRE):
                regexp = re.compile(term.pattern.to_regexp())
                words = {
                    s.pattern.value: s.name
                    for s in strings
                    if s.priority == term.priority and regexp.fullmatch(s.pattern.value)
                }
                if words:
                    self._keywords[term.name] = words
            elif any(term.pattern.value in kw for kw in self._keywords.values()):
                continue
            kept.append(term)
        self._master = re.compile("|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in kept))
        self._ignore = frozenset(conf.ignore)
        self._callbacks = dict(conf.callbacks)
        self._multiline = frozenset(t.name for t in kept if _may_span_lines(t.pattern.to_regexp()))
        self._nesting = {"LBRACE": 1, "LSQB": 1, "LPAR": 1, "RBRACE": -1, "RSQB": -1, "RPAR": -1}

    def lex(self, text: str) -> Iterator[Token]:  # type: ignore[override]
        keywords, ignore, callbacks = self._keywords, self._ignore, self._callbacks
        multiline, nesting = self._multiline, self._nesting
        line, line_start, pos, depth = 1, 0, 0, 0
        for match in self._master.finditer(text):
            start = match.start()
            if start != pos:
                break
            kind = match.lastgroup or ""
            pos = match.end()
            value = match.group()
            column = start - line_start + 1
            if kind in multiline and "\n" in value:
                end_line = line + value.count("\n")
                end_column = pos - text.rindex("\n", start, pos)
            else:
                end_line, end_column = line, column + len(value)
            if kind in keywords:
                kind = keywords[kind].get(value, kind)
            if kind in ignore:
                if kind in callbacks:
                    callbacks[kind](
                        Token(kind, value, start, line, column, end_line, end_column, pos)
                    )
            else:
                token = Token(kind, value, start, line, column, end_line, end_column, pos)
                step = nesting.get(kind)
                if step is not None:
                    depth += step
                    if depth > MAX_NESTING:
                        raise _NestingTooDeep(token)
                yield token
            if end_line != line:
                line, line_start = end_line, pos - end_column + 1
        if pos != len(text):
            raise UnexpectedCharacters(text, pos, line, pos - line_start + 1)  # type: ignore[no-untyped-call]


class _NestingTooDeep(Exception):
    """Raised by the lexer (lark lets it through) when a bracket opens level MAX_NESTING + 1."""

    def __init__(self, token: Token) -> None:
        super().__init__(token)
        self.token = token


def _too_deep(token: Token) -> Diagnostic:
    return Diagnostic(
        "E108",
        "nesting too deep",
        _span(token),
        label=f"more than {MAX_NESTING} levels of nested blocks, lists, maps and calls",
    )


def _may_span_lines(regexp: str) -> bool:
    # lark's own test for terminals that can contain a newline
    return "\n" in regexp or "\\n" in regexp or "\\s" in regexp or "[^" in regexp


@cache
def _parser() -> lark.Lark:
    grammar = resources.files("tideflow.grammars").joinpath("flow.lark").read_text("utf-8")
    return lark.Lark(
        grammar,
        parser="lalr",
        lexer=_FastLexer,
        transformer=_Builder(),
        maybe_placeholders=False,
        lexer_callbacks={"COMMENT": _collect_comment, "BLOCK_COMMENT": _collect_comment},
    )


@cache
def reference_parser() -> lark.Lark:
    """The same grammar with lark's own lexer, as the reference the fast lexer is tested against."""
    grammar = resources.files("tideflow.grammars").joinpath("flow.lark").read_text("utf-8")
    return lark.Lark(grammar, parser="lalr", lexer="basic")


# --- syntax errors in the language's words ---------------------------------------

_TERMINAL_WORDS = {
    "NAME": "a name",
    "STRING": "a string",
    "NUMBER": "a number",
    "DURATION": "a duration",
    "SIZE": "a size",
    "TRUE": "`true`",
    "FALSE": "`false`",
    "INCLUDE": "`include`",
    "LBRACE": "`{`",
    "RBRACE": "`}`",
    "LSQB": "`[`",
    "RSQB": "`]`",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "EQUAL": "`=`",
    "COMMA": "`,`",
    "REFERENCE": "a reference",
    "$END": "the end of the file",
}
_VALUE_STARTS = {"STRING", "NUMBER", "DURATION", "SIZE", "NAME", "REFERENCE", "LSQB", "LBRACE"}

_LITERALS = _VALUE_STARTS | {"TRUE", "FALSE"}


def _describe_token(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type in {"NAME", "NUMBER", "DURATION", "SIZE", "REFERENCE"}:
        return f"{_TERMINAL_WORDS[tok.type].split()[-1]} `{tok}`"
    if tok.type == "STRING":
        text = str(tok) if len(tok) <= 30 else str(tok)[:27] + '…"'
        return f"string {text}"
    return _TERMINAL_WORDS.get(tok.type, f"`{tok}`")


def _describe_expected(expected: set[str]) -> str:
    """What the parser would have accepted, in the language's words (never terminal names)."""
    expected = {e for e in expected if e in _TERMINAL_WORDS}
    if expected == {"EQUAL", "STRING", "LBRACE"}:
        return "`=` (an attribute) or `{` (a block)"
    if expected == {"STRING", "LBRACE"} or expected == {"LBRACE"}:
        return "`{` to open the block"
    if {"INCLUDE", "NAME"} <= expected:
        return 'a block (such as `job "name" { … }`) or `include`'
    if expected == {"NAME", "RBRACE"}:
        return "an attribute, a nested block, or `}` to close the block"
    words: list[str] = []
    if expected >= _VALUE_STARTS:
        words.append("a value")
        expected -= _LITERALS
    elif {"NAME", "STRING", "RBRACE"} <= expected:
        words.append("a map entry (`key = value`)")
        expected -= {"NAME", "STRING"}
    elif {"NAME", "RBRACE"} <= expected:
        words += ["an attribute", "a nested block"]
        expected -= {"NAME"}
    words += sorted(_TERMINAL_WORDS[e] for e in expected)
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]


def _accepted(exc: UnexpectedToken | UnexpectedEOF) -> set[str]:
    """The tokens that would have let the parse go on.

    lark's `expected` is the LALR state's lookahead set; when a reduction is pending
    it also names tokens that are only valid in other contexts (after `[1` it lists
    `}` and names), so ask the interactive parser, which tries each one.
    """
    interactive = getattr(exc, "interactive_parser", None)
    if interactive is not None:
        return set(interactive.accepts())
    return set(exc.expected)


def _point(path: str, text: str, offset: int, length: int = 1) -> ast.Span:
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    line_start = text.rfind("\n", 0, offset) + 1
    column = offset - line_start + 1
    end = min(offset + max(length, 1), max(len(text), offset + 1))
    return ast.Span(path, line, column, line, column + (end - offset), offset, end)


def _unclosed(exc: UnexpectedToken | UnexpectedEOF) -> str | None:
    """Which block, map, list or call is still open when the file ended, for the help."""
    interactive = getattr(exc, "interactive_parser", None)
    if interactive is None:
        return None
    # finished values are reduced to AST nodes, so a bracket token on the stack is open
    stack: list[Any] = interactive.parser_state.value_stack
    for index in range(len(stack) - 1, -1, -1):
        opener = stack[index]
        if not isinstance(opener, Token) or opener.type not in {"LBRACE", "LSQB", "LPAR"}:
            continue
        before = [v for v in stack[max(0, index - 2) : index] if isinstance(v, Token)]
        if opener.type == "LSQB":
            return f"the list opened at line {opener.line} is not closed"
        if opener.type == "LPAR" and before:
            return f"the call to `{before[-1]}` opened at line {opener.line} is not closed"
        if [t.type for t in before] == ["NAME", "STRING"]:
            block, label = before
            return f"the `{block} {label}` block opened at line {block.line} is not closed"
        if before and before[-1].type == "NAME":
            return f"the `{before[-1]}` block opened at line {before[-1].line} is not closed"
        return f"the map opened at line {opener.line} is not closed"
    return None


def _syntax_error(exc: UnexpectedInput, text: str, path: str) -> Diagnostic:
    if isinstance(exc, UnexpectedCharacters):
        offset = exc.pos_in_stream or 0
        char = text[offset]
        if char == '"':
            end = text.find("\n", offset)
            end = len(text) if end == -1 else end
            return Diagnostic(
                "E105",
                "unterminated string",
                _point(path, text, offset, end - offset),
                label='this string has no closing `"` on its line',
                help="close the string on the same line; use \\n for a line break",
            )
        if char.isdigit() or (char == "-" and text[offset + 1 : offset + 2].isdigit()):
            word = re.match(r"-?[\w.]+", text[offset:])
            length = len(word.group(0)) if word else 1
            return Diagnostic(
                "E107",
                f"invalid number, duration or size `{text[offset : offset + length]}`",
                _point(path, text, offset, length),
                help="durations use ms, s, m, h, d, w (`1h30m`); sizes use Ki, Mi, Gi, KB, MB, GB",
            )
        if text.startswith("/*", offset):
            return Diagnostic(
                "E102",
                "unterminated block comment",
                _point(path, text, offset, 2),
                label="this `/*` has no closing `*/`",
            )
        shown = repr(char)[1:-1] if not char.isprintable() or char == " " else char
        helped = "strings use double quotes" if char == "'" else None
        return Diagnostic(
            "E102", f"unexpected character `{shown}`", _point(path, text, offset), help=helped
        )
    if isinstance(exc, UnexpectedToken) and exc.token.type != "$END":
        tok = exc.token
        expected = _accepted(exc)
        help_ = None
        if tok.type == "EQUAL" and expected == {"STRING", "LBRACE"}:
            help_ = 'attributes go inside a block: `job "name" { key = value }`'
        elif tok.type == "NAME" and expected == {"STRING", "LBRACE"}:
            help_ = f'block labels are strings: `"{tok}"`'
        elif tok.type in _LITERALS and "COMMA" in expected and "RSQB" in expected:
            help_ = "separate list items with `,`"
        elif tok.type in _LITERALS and "COMMA" in expected and "RPAR" in expected:
            help_ = "separate call arguments with `,`"
        # in a list or a call, `10s 5m` more likely lacks a comma than has a space
        if help_ is None and tok.type == "DURATION" and tok.start_pos is not None:
            before = _SPACED_DURATION.search(text, 0, tok.start_pos)
            if before is not None:  # `1h 30m`: two durations where one was meant
                help_ = f"no spaces in a duration: write `{before.group(1)}{tok}`"
        return Diagnostic(
            "E103",
            f"unexpected {_describe_token(tok)}",
            _span(tok),
            label=f"expected {_describe_expected(expected)}",
            help=help_,
        )
    # end of input, as UnexpectedEOF or as an UnexpectedToken on $END
    span = _point(path, text, max(len(text.rstrip()) - 1, 0))
    if not isinstance(exc, UnexpectedToken | UnexpectedEOF):
        return Diagnostic("E104", "unexpected end of file", span)
    expected = _accepted(exc) - {"$END"}
    return Diagnostic(
        "E104",
        "unexpected end of file",
        span,
        label=f"expected {_describe_expected(expected)}" if expected else None,
        help=_unclosed(exc),
    )
