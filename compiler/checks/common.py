"""Where a message points and how it words things: helpers every pass shares."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from tideflow.dsl import ast
from tideflow.dsl.ast import Attribute, Block, MapEntry, Span

from .model import Item, Section

LABEL: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


def head_span(block: Block) -> Span:
    """`job "extract"`: where a message about a whole block points."""
    return block.type_span.to(block.label.span) if block.label else block.type_span


def value_span(item: Item) -> Span:
    """Where the value of an attribute or map entry is written (a block: its type)."""
    return item.type_span if type(item) is Block else item.value.span  # type: ignore[union-attr]


def item_parts(item: Item) -> tuple[str, Span]:
    """The name an attribute, map entry or nested block is written under, and its span."""
    if type(item) is MapEntry:
        return item.key, item.key_span
    if type(item) is Block:
        return item.type, item.type_span
    assert type(item) is Attribute
    return item.name, item.name_span


def reference_span(item: Item, target: str) -> Span:
    """The span of the reference to `target` in a list (or single) attribute."""
    value = item.value  # type: ignore[union-attr]
    candidates = value.items if type(value) is ast.ListExpr else (value,)
    for candidate in candidates:
        if type(candidate) is ast.Reference and candidate.target == target:
            return candidate.span
    return item.span


def inside(literal: ast.String, start: int, end: int) -> Span:
    """The span of characters [start, end) of a string literal's value."""
    span = literal.span
    if literal.raw[1:-1] != literal.value or span.line != span.end_line:
        return span  # escapes shift columns: point at the whole string
    offset = 1 + start
    width = max(end - start, 1)
    return Span(
        span.path,
        span.line,
        span.column + offset,
        span.line,
        span.column + offset + width,
        span.start + offset,
        span.start + offset + width,
    )


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S" if moment.second else "%H:%M")


def seconds(value: float) -> str:
    return f"{value:g}s"


def with_defaults(section: Section) -> Mapping[str, Any]:
    """The options of the backend a block names, as written, then its defaults for the
    ones left out."""
    backend = section.backend
    if backend is None:
        return dict(section.options)
    options = dict(section.options)
    for option in backend.options:
        if option.name not in options and option.default is not None:
            options[option.name] = option.default
    return options
