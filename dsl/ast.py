"""The syntax tree of a `.flow` file: frozen dataclasses, each with its source span.

The tree is deliberately generic (blocks, attributes, expressions): which block
types and attribute names exist is the compiler's schema, not the grammar's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, TypeAlias


class Span(NamedTuple):
    """A region of a source file. Lines and columns are 1-based; ends are exclusive.

    A named tuple rather than a dataclass: the parser makes hundreds of thousands.
    """

    path: str
    line: int
    column: int
    end_line: int
    end_column: int
    start: int  # character offsets into the source text
    end: int

    def to(self, other: Span) -> Span:
        """The span from the start of `self` to the end of `other`."""
        return Span(
            self.path,
            self.line,
            self.column,
            other.end_line,
            other.end_column,
            self.start,
            other.end,
        )


@dataclass(frozen=True, slots=True)
class String:
    value: str
    raw: str  # as written, quotes and escapes included
    span: Span


@dataclass(frozen=True, slots=True)
class Number:
    value: int | float
    raw: str
    span: Span


@dataclass(frozen=True, slots=True)
class Duration:
    seconds: float
    raw: str
    span: Span


@dataclass(frozen=True, slots=True)
class Size:
    """A byte size such as `512Mi` or `2GB`."""

    bytes: int
    raw: str
    span: Span


@dataclass(frozen=True, slots=True)
class Bool:
    value: bool
    span: Span


@dataclass(frozen=True, slots=True)
class Name:
    """A bare word used as a value, such as `all_success` or `failure`."""

    name: str
    span: Span


@dataclass(frozen=True, slots=True)
class Reference:
    """A dotted reference such as `topic.orders` or `job.extract`."""

    parts: tuple[str, ...]
    span: Span

    @property
    def kind(self) -> str:
        return self.parts[0]

    @property
    def target(self) -> str:
        return ".".join(self.parts[1:])

    def __str__(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, slots=True)
class KeywordArgument:
    name: str
    name_span: Span
    value: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Call:
    """A function call such as `cron("0 2 * * *")`, `env("X", "d")` or `every(10m)`."""

    function: str
    function_span: Span
    args: tuple[Expr, ...]
    kwargs: tuple[KeywordArgument, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class ListExpr:
    items: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class MapEntry:
    key: str
    key_span: Span
    quoted: bool  # the key was written as a string
    value: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class MapExpr:
    entries: tuple[MapEntry, ...]
    span: Span


Expr: TypeAlias = (
    String | Number | Duration | Size | Bool | Name | Reference | Call | ListExpr | MapExpr
)


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    name_span: Span
    value: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Block:
    type: str
    type_span: Span
    label: String | None
    body: tuple[Attribute | Block, ...]
    span: Span

    @property
    def attributes(self) -> tuple[Attribute, ...]:
        return tuple(item for item in self.body if isinstance(item, Attribute))

    @property
    def blocks(self) -> tuple[Block, ...]:
        return tuple(item for item in self.body if isinstance(item, Block))

    def describe(self) -> str:
        """How a message names this block: `job "extract"` or `retry`."""
        return f'{self.type} "{self.label.value}"' if self.label else self.type


@dataclass(frozen=True, slots=True)
class Include:
    path: String
    span: Span


@dataclass(frozen=True, slots=True)
class Comment:
    text: str  # as written, markers included
    span: Span


@dataclass(frozen=True, slots=True)
class FlowFile:
    path: str
    source: str
    items: tuple[Block | Include, ...]
    comments: tuple[Comment, ...]

    @property
    def blocks(self) -> tuple[Block, ...]:
        return tuple(item for item in self.items if isinstance(item, Block))

    @property
    def includes(self) -> tuple[Include, ...]:
        return tuple(item for item in self.items if isinstance(item, Include))


def expr_kind(expr: Expr) -> str:
    """A user-facing word for what an expression is, for type-error messages."""
    match expr:
        case String():
            return "a string"
        case Number(value=int()):
            return "an integer"
        case Number():
            return "a number"
        case Duration():
            return "a duration"
        case Size():
            return "a size"
        case Bool():
            return "a boolean"
        case Name():
            return "a name"
        case Reference():
            return "a reference"
        case Call():
            return f"a call to {expr.function}()"
        case ListExpr():
            return "a list"
        case MapExpr():
            return "a map"
