"""The lark wrapper: `.flow` text in, a `FlowFile` and diagnostics out.

lark's exceptions never reach a user: they are turned into diagnostics that
speak the language's terms ("expected `=` or `{`"), never terminal names.
The AST is built while parsing (LALR with an inline transformer), which never
raises; problems it notices (a bad escape) are collected as diagnostics.
"""

from __future__ import annotations

import contextlib
import gc
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

__all__ = ["ParseResult", "decode_source", "parse", "parse_bytes"]


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
        column = exc.start - (good.rfind("\n") + 1 if "\n" in good else 0) + 1
        offset = len(good)
        span = ast.Span(path, line, column, line, column + 1, offset, offset + 1)
        return "", Diagnostic(
            "E101",
            f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            span,
            help="save the file as UTF-8",
        )


def parse(text: str, path: str) -> ParseResult:
    with _LOCK, _gc_paused():
        _SINK.comments = []
        _SINK.diagnostics = []
        _SINK.path = path
        try:
            tree: Any = _parser().parse(text)
        except UnexpectedInput as exc:
            return ParseResult(None, (_syntax_error(exc, text, path),))
        finally:
            comments = tuple(_SINK.comments)
            found = tuple(_SINK.diagnostics)
    items: tuple[ast.Block | ast.Include, ...] = tree  # the builder's `start` returns a tuple
    return ParseResult(ast.FlowFile(path, text, items, comments), found)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while parsing.

    A large flow makes hundreds of thousands of tokens and nodes, none in a
    reference cycle; the collector would walk them again and again (about 40%
    of parse time on a 10,000-job flow) and find nothing.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|s|m|h|d|w)")
_DURATION_UNITS = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
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
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(tok.value))
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

    def lex(self, text: str) -> Iterator[Token]:  # type: ignore[override]
        keywords, ignore, callbacks = self._keywords, self._ignore, self._callbacks
        multiline = self._multiline
        line, line_start, pos = 1, 0, 0
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
                yield Token(kind, value, start, line, column, end_line, end_column, pos)
            if end_line != line:
                line, line_start = end_line, pos - end_column + 1
        if pos != len(text):
            raise UnexpectedCharacters(text, pos, line, pos - line_start + 1)  # type: ignore[no-untyped-call]


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
    expected = {e for e in expected if not e.startswith("__")}
    if expected == {"EQUAL", "STRING", "LBRACE"}:
        return "`=` (an attribute) or `{` (a block)"
    if expected == {"STRING", "LBRACE"}:
        return "`{` to open the block"
    if "RBRACE" in expected and "NAME" in expected and "EQUAL" not in expected:
        if expected >= _VALUE_STARTS:
            return "a value or `}`"
        return "an attribute, a nested block, or `}` to close the block"
    if {"INCLUDE", "NAME"} <= expected:
        return 'a block (such as `job "name" { … }`) or `include`'
    if expected >= _VALUE_STARTS:
        rest = sorted(
            _TERMINAL_WORDS[e]
            for e in expected - _VALUE_STARTS - {"TRUE", "FALSE"}
            if e in _TERMINAL_WORDS
        )
        return " or ".join(["a value", *rest])
    words = sorted(_TERMINAL_WORDS.get(e, f"`{e}`") for e in expected)
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]


def _point(path: str, text: str, offset: int, length: int = 1) -> ast.Span:
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    line_start = text.rfind("\n", 0, offset) + 1
    column = offset - line_start + 1
    end = min(offset + max(length, 1), max(len(text), offset + 1))
    return ast.Span(path, line, column, line, column + (end - offset), offset, end)


def _open_block(exc: UnexpectedToken | UnexpectedEOF) -> Token | None:
    """The name token of the innermost block or brace still open when the parse stopped."""
    try:
        stack: list[Any] = exc.interactive_parser.parser_state.value_stack
    except AttributeError:
        return None
    open_braces = [i for i, v in enumerate(stack) if isinstance(v, Token) and v.type == "LBRACE"]
    if not open_braces:
        return None
    index = open_braces[-1]
    for value in reversed(stack[:index]):
        if isinstance(value, Token) and value.type == "NAME":
            return value
    first: Token = stack[index]
    return first


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
        shown = repr(char)[1:-1] if not char.isprintable() or char == " " else char
        helped = "strings use double quotes" if char == "'" else None
        return Diagnostic(
            "E102", f"unexpected character `{shown}`", _point(path, text, offset), help=helped
        )
    if isinstance(exc, UnexpectedToken) and exc.token.type != "$END":
        tok = exc.token
        expected = _describe_expected(set(exc.expected))
        span = _span(tok)
        help_ = None
        if tok.type == "EQUAL" and "EQUAL" not in exc.expected:
            help_ = 'attributes go inside a block: `job "name" { key = value }`'
        elif tok.type == "NAME" and set(exc.expected) == {"STRING", "LBRACE"}:
            help_ = f'block labels are strings: `"{tok}"`'
        elif tok.type == "NAME" and "COMMA" in exc.expected:
            help_ = "separate list items and call arguments with `,`"
        return Diagnostic(
            "E103",
            f"unexpected {_describe_token(tok)}",
            span,
            label=f"expected {expected}",
            help=help_,
        )
    # end of input, as UnexpectedEOF or as an UnexpectedToken on $END
    opened = _open_block(exc) if isinstance(exc, UnexpectedToken | UnexpectedEOF) else None
    span = _point(path, text, max(len(text.rstrip()) - 1, 0))
    if opened is not None:
        return Diagnostic(
            "E104",
            "unexpected end of file",
            span,
            label="expected `}`",
            help=f"`{opened}` opened at line {opened.line} is not closed",
        )
    return Diagnostic("E104", "unexpected end of file", span)
