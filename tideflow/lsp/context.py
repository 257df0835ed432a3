"""Where the cursor is, in the language's terms, even while the file does not parse.

`cursor_context(text, offset)` reads the tokens of the real lexer (the grammar's
terminals, through `tideflow.dsl.parser.reference_parser`) around the cursor and
follows the brackets: the stack of enclosing blocks (and the map form of a nested
block, `retry = { ... }`), whether the cursor is where an attribute or block name
goes, where a value goes (after `name =`, in a list or a call), inside a string,
or in a comment, and the partial word being typed (`job.ex` gives the qualifier
`("job",)` and the prefix `ex`). It never builds a syntax tree: a half-typed
file is the normal case here, so every token it does not expect is skipped.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import final

from lark import Token
from lark.exceptions import UnexpectedCharacters

from tideflow.compiler import schema
from tideflow.dsl.parser import reference_parser
from tideflow.plugins.api import options as o

__all__ = [
    "BlockFrame",
    "CursorContext",
    "Position",
    "backend_name",
    "block_schema",
    "cursor_context",
    "field_named",
    "fields_of",
    "tokens",
]

_BLANK = frozenset({"WS", "COMMENT", "BLOCK_COMMENT"})
_LITERALS = frozenset({"STRING", "NUMBER", "DURATION", "SIZE", "TRUE", "FALSE", "REFERENCE"})
# the word being typed: names, dotted references and half-typed numbers
_WORD_BEFORE = re.compile(r"[A-Za-z0-9_.-]*\Z")
_WORD_AFTER = re.compile(r"[A-Za-z0-9_-]*")


class Position(enum.Enum):
    """What may be written at the cursor."""

    TOP = "top"  # a top-level block or `include`
    BODY = "body"  # an attribute or a nested block of the innermost block
    VALUE = "value"  # a value of `attribute` (maybe inside a list or a call)
    STRING = "string"  # inside a string value of `attribute`
    NONE = "none"  # a comment, a label, a number: nothing to offer


@dataclass(frozen=True, slots=True)
class BlockFrame:
    """An enclosing block, or the map form of a nested block (`retry = { ... }`).

    `attributes` maps each attribute set in it (before or after the cursor) to its
    value when that is a plain word or string (`kind = "redis"` gives "redis"),
    else None.
    """

    type: str
    label: str | None
    attributes: dict[str, str | None]
    is_map: bool = False


@dataclass(frozen=True, slots=True)
class CursorContext:
    """The cursor's place. `blocks` are outermost first; `attribute` is the attribute
    whose value holds the cursor (VALUE, STRING); `function` the innermost call the
    cursor is an argument of; `keyword` the call's keyword argument it is the value of.
    The word being typed spans [`start`, `end`) of the text: `qualifier.prefix`."""

    position: Position
    blocks: tuple[BlockFrame, ...] = ()
    attribute: str | None = None
    function: str | None = None
    keyword: str | None = None
    qualifier: tuple[str, ...] = ()
    prefix: str = ""
    start: int = 0
    end: int = 0


def tokens(text: str, base: int = 0) -> Iterator[Token]:
    """The lexer's tokens of `text` (blanks and comments included, offsets + `base`),
    resuming after any character the lexer refuses instead of stopping.

    An unterminated string is yielded as a STRING token without its closing quote,
    running to the end of its line: that is what a user is typing.
    """
    at = 0
    while at < len(text):
        try:
            for tok in reference_parser().lex(text[at:], dont_ignore=True):
                yield _shifted(tok, base + at)
            return
        except UnexpectedCharacters as exc:
            bad = at + (exc.pos_in_stream or 0)
            if text[bad] == '"':
                line_end = text.find("\n", bad)
                line_end = len(text) if line_end == -1 else line_end
                yield Token(
                    "STRING", text[bad:line_end], start_pos=base + bad, end_pos=base + line_end
                )
                at = line_end
            else:
                at = bad + 1


def _shifted(tok: Token, by: int) -> Token:
    if not by:
        return tok
    start = (tok.start_pos or 0) + by
    return Token(tok.type, tok.value, start_pos=start, end_pos=start + len(tok.value))


@final
class _Frame:
    """A bracket being scanned: the file, a block body, a map, a list or a call."""

    __slots__ = (
        "attr",
        "attributes",
        "key",
        "keyword",
        "kind",
        "label",
        "name",
        "pending_label",
        "state",
        "word_of",
    )

    def __init__(
        self, kind: str, name: str, label: str | None = None, attr: str | None = None
    ) -> None:
        self.kind = kind  # "file", "block", "map", "list", "call"
        self.name = name  # block type, function name, or the attribute a map/list is for
        self.label = label  # a block's label
        self.attr = attr  # lists and calls: the attribute whose value they are
        self.attributes: dict[str, str | None] = {}
        # body: start, include, name, label, equal, word; list/call: value, word, keyword
        self.state = "value" if kind in ("list", "call") else "start"
        self.key: str | None = None  # the name, map key or bare word just read
        self.pending_label: str | None = None  # a label read after a block name
        self.word_of: str | None = None  # the attribute a bare word is the value of
        self.keyword: str | None = None  # calls: the keyword argument being given


def _unquote(raw: str) -> str:
    return raw[1:-1] if len(raw) >= 2 and raw.endswith('"') else raw[1:]


@final
class _Scanner:
    """Follows brackets and `name = value` over a token stream, tolerating anything."""

    def __init__(self) -> None:
        self.stack: list[_Frame] = [_Frame("file", "")]

    def feed_all(self, toks: Iterable[Token], stop_below: int | None = None) -> None:
        """Feed `toks`; with `stop_below`, stop once the stack is shallower than that."""
        for tok in toks:
            if tok.type in _BLANK:
                continue
            self.feed(tok)
            if stop_below is not None and len(self.stack) < stop_below:
                return

    def feed(self, tok: Token) -> None:
        frame = self.stack[-1]
        if frame.kind in ("list", "call"):
            self._in_sequence(frame, tok)
        else:
            self._in_body(frame, tok)

    def _in_body(self, frame: _Frame, tok: Token) -> None:
        kind = tok.type
        state = frame.state
        frame.state = "start"
        if state == "word":  # after `name = word`: a function call, or the next item
            if kind == "LPAR":
                self.stack.append(_Frame("call", frame.key or "", attr=frame.word_of))
                return
            state = "start"
        if state == "start":
            if kind == "NAME" or (kind == "STRING" and frame.kind == "map"):
                frame.key = tok.value if kind == "NAME" else _unquote(tok.value)
                frame.state = "name"
            elif kind == "RBRACE" and frame.kind != "file":
                self._pop()
            elif kind == "INCLUDE":
                frame.state = "include"
        elif state in ("name", "label"):
            if kind == "EQUAL" and state == "name":
                frame.state = "equal"
                frame.attributes[frame.key or ""] = None
            elif kind == "STRING" and state == "name" and frame.kind != "map":
                frame.pending_label = _unquote(tok.value)
                frame.state = "label"
            elif kind == "LBRACE" and frame.kind != "map":
                label = frame.pending_label if state == "label" else None
                if frame.kind == "block":  # a nested block sets its attribute
                    frame.attributes[frame.key or ""] = None
                self.stack.append(_Frame("block", frame.key or "", label))
            elif kind == "NAME":  # the previous word was a stray: start again here
                frame.key = tok.value
                frame.state = "name"
            elif kind == "RBRACE":
                self._in_body(frame, tok)
        elif state == "equal":
            name = frame.key or ""
            if kind in _LITERALS:
                frame.attributes[name] = _unquote(tok.value) if kind == "STRING" else tok.value
            elif kind == "NAME":
                frame.attributes[name] = tok.value
                frame.key = tok.value
                frame.word_of = name  # `name = cron(`: the call is the value of `name`
                frame.state = "word"
            elif kind == "LBRACE":
                self.stack.append(_Frame("map", name))
            elif kind == "LSQB":
                self.stack.append(_Frame("list", name, attr=name))
            elif kind == "RBRACE":
                self._in_body(frame, tok)

    def _in_sequence(self, frame: _Frame, tok: Token) -> None:
        kind = tok.type
        if frame.state == "word":
            frame.state = "value"
            if kind == "LPAR":
                self.stack.append(_Frame("call", frame.key or "", attr=frame.attr))
                return
            if kind == "EQUAL" and frame.kind == "call":
                frame.state = "keyword"
                frame.keyword = frame.key
                return
        if kind == "NAME":
            frame.key = tok.value
            frame.state = "word"
        elif kind == "LBRACE":
            self.stack.append(_Frame("map", frame.attr or ""))
        elif kind == "LSQB":
            self.stack.append(_Frame("list", frame.attr or "", attr=frame.attr))
        elif (kind == "RSQB" and frame.kind == "list") or (kind == "RPAR" and frame.kind == "call"):
            self._pop()
        elif kind == "COMMA":
            frame.state = "value"
            frame.keyword = None
        elif kind == "RBRACE":  # a list or call left open inside a block: close up to it
            self._pop()
            self.feed(tok)
        elif frame.state != "keyword":
            frame.state = "value"

    def _pop(self) -> None:
        if len(self.stack) > 1:
            self.stack.pop()
        parent = self.stack[-1]
        parent.state = "value" if parent.kind in ("list", "call") else "start"


def cursor_context(text: str, offset: int) -> CursorContext:
    """The context of the cursor at character `offset` of `text` (clamped)."""
    offset = max(0, min(offset, len(text)))
    word = _WORD_BEFORE.search(text, 0, offset)
    start = word.start() if word else offset
    after = _WORD_AFTER.match(text, offset)
    end = after.end() if after else offset
    typed = text[start:offset]
    scanner = _Scanner()
    restart = _restart(text, start)
    toks = list(tokens(text[restart:start], base=restart))
    last = toks[-1] if toks else None
    if last is not None and last.type == "COMMENT":
        return CursorContext(Position.NONE)  # a line comment runs to the cursor
    if last is not None and last.type == "BLOCK_COMMENT" and not last.value.endswith("*/"):
        return CursorContext(Position.NONE)
    if last is not None and last.type == "STRING" and _unterminated(last.value):
        return _in_string(scanner, toks, text, offset)
    scanner.feed_all(toks)
    if typed[:1].isdigit() or typed[:1] == "-":
        return CursorContext(Position.NONE)  # a number, a duration or a size
    qualifier: tuple[str, ...] = ()
    prefix = typed
    if "." in typed:
        *parts, prefix = typed.split(".")
        qualifier = tuple(parts)
        start = offset - len(prefix)
    frames = list(scanner.stack)
    frame = frames[-1]
    attribute: str | None = None
    if frame.kind in ("list", "call"):
        position = Position.VALUE
        attribute = frame.attr
    elif frame.state == "start":
        position = Position.TOP if frame.kind == "file" else Position.BODY
    elif frame.state == "equal":
        position = Position.VALUE
        attribute = frame.key
    else:
        position = Position.NONE
    if position is Position.BODY:
        # attributes set after the cursor, up to the end of its block, count as set too
        scanner.feed_all(tokens(text[end:], base=end), stop_below=len(frames))
    in_call = frame.kind == "call"
    return CursorContext(
        position,
        _blocks(frames),
        attribute=attribute,
        function=frame.name if in_call else None,
        keyword=frame.keyword if in_call and frame.state == "keyword" else None,
        qualifier=qualifier,
        prefix=prefix,
        start=start,
        end=end,
    )


# a top-level block's header as `tideflow fmt` writes it: at the start of a line
_HEADER = re.compile(r'^[A-Za-z_][\w-]*(?:[ \t]+"(?:[^"\\\n]|\\.)*")?[ \t]*\{', re.MULTILINE)
_WHOLE_BELOW = 20_000  # characters: smaller texts are read from their start


def _restart(text: str, start: int) -> int:
    """Where to start reading tokens for a cursor at `start`: the text's start, or in a
    large text the last block header at the start of a line before the cursor. Only
    the enclosing blocks matter, and a header at column 0 opens a top-level block in
    any formatted file; this keeps completion in a 1,000-job file quick."""
    if start < _WHOLE_BELOW:
        return 0
    found = 0
    for match in _HEADER.finditer(text, max(0, start - _WHOLE_BELOW), start):
        found = match.start()
    return found


def _unterminated(raw: str) -> bool:
    body = raw[1:]
    if not body.endswith('"'):
        return True
    # a closing quote preceded by an odd number of backslashes is escaped
    backslashes = len(body[:-1]) - len(body[:-1].rstrip("\\"))
    return backslashes % 2 == 1


def _in_string(scanner: _Scanner, toks: list[Token], text: str, offset: int) -> CursorContext:
    """The cursor is inside the string that `toks` ends with."""
    string = toks.pop()
    scanner.feed_all(toks)
    frame = scanner.stack[-1]
    value_start = (string.start_pos or 0) + 1
    close = text.find('"', offset)
    line_end = text.find("\n", offset)
    on_line = close != -1 and (line_end == -1 or close < line_end)
    attribute: str | None = None
    if frame.kind in ("list", "call"):
        attribute = frame.attr
    elif frame.state == "equal":
        attribute = frame.key
    in_call = frame.kind == "call"
    return CursorContext(
        Position.STRING if attribute else Position.NONE,
        _blocks(scanner.stack),
        attribute=attribute,
        function=frame.name if in_call else None,
        keyword=frame.keyword if in_call and frame.state == "keyword" else None,
        prefix=text[value_start:offset],
        start=value_start,
        end=close if on_line else offset,
    )


def _blocks(stack: list[_Frame]) -> tuple[BlockFrame, ...]:
    return tuple(
        BlockFrame(f.name, f.label, dict(f.attributes), is_map=f.kind == "map")
        for f in stack
        if f.kind in ("block", "map")
    )


# --- what the schema says about a place --------------------------------------------------


def block_schema(types: Sequence[str]) -> o.BlockSchema | None:
    """The schema of the innermost of `types` (block types, or attribute names of
    nested blocks, outermost first), or None when the path leaves the schema."""
    if not types:
        return None
    found = schema.BLOCKS.get(types[0])
    for name in types[1:]:
        if found is None:
            return None
        field_ = found.by_name.get(name)
        found = field_.type.schema if field_ and isinstance(field_.type, o.ObjectType) else None
    return found


def backend_name(block: o.BlockSchema, attributes: Mapping[str, str | None]) -> str | None:
    """The backend a block names (`kind = "redis"`), or its field's default."""
    if block.backend_field is None:
        return None
    written = attributes.get(block.backend_field)
    if written is not None:
        return written
    default = block.by_name[block.backend_field].default
    return default if isinstance(default, str) else None


def fields_of(
    block: o.BlockSchema, attributes: Mapping[str, str | None], catalog: o.Catalog
) -> tuple[tuple[o.Field, ...], o.BackendSpec | None]:
    """The block's own fields, and the backend whose options it also accepts."""
    backend = None
    name = backend_name(block, attributes)
    if block.backend_kind is not None and name is not None:
        backend = catalog.get(block.backend_kind, name)
    return block.fields, backend


def field_named(
    block: o.BlockSchema, attributes: Mapping[str, str | None], catalog: o.Catalog, name: str
) -> tuple[o.Field, o.BackendSpec | None] | None:
    """The field `name` of a block, or of its backend's options (with that backend)."""
    own, backend = fields_of(block, attributes, catalog)
    for candidate in own:
        if candidate.name == name:
            return candidate, None
    if backend is not None:
        for candidate in backend.options:
            if candidate.name == name:
                return candidate, backend
    return None
