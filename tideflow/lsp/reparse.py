"""Parsing an edited text again by parsing only the top-level blocks the edit touched.

An editor changes a few characters at a time; parsing a 1,000-job file again
takes most of the time to its diagnostics. `Reparser.parse` keeps each file's
last text and tree. For a new text it finds the changed region (the common prefix
and suffix), parses with the compiler's own parser only the top-level items
around it (the text before them blanked out, line breaks kept, so that every
span comes out where it belongs), keeps the items before as they were and moves
the items after by the edit's length and line count. The result equals a full
parse (tests/lsp/test_reparse.py compares them); whenever that is not certain (no
previous tree, a parser diagnostic before or after, an edit that touches the
first or last line of an untouched item) it parses the whole text.

`Reparser.recover` does the same for a text that does not parse: the last clean
tree, with the items the change touched left out, so that an editor keeps its
outline, completion and hover while a block is half written.
"""

from __future__ import annotations

import re
from typing import Any, final

from tideflow.dsl import ast
from tideflow.dsl.parser import ParseResult, parse

from .analysis import recover

__all__ = ["Reparser"]

_LINE_TEXT = re.compile(r"[^\n]+")
_new_tuple: Any = tuple.__new__


def _common_prefix(a: str, b: str) -> int:
    """The length of the longest common prefix (a binary search of C comparisons)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _common_suffix(a: str, b: str, limit: int) -> int:
    """The length of the longest common suffix, at most `limit`."""
    low, high = 0, limit
    while low < high:
        middle = (low + high + 1) // 2
        if a[len(a) - middle :] == b[len(b) - middle :]:
            low = middle
        else:
            high = middle - 1
    return low


def _blank(text: str) -> str:
    """`text` with every character but line breaks turned into a space."""
    return _LINE_TEXT.sub(lambda m: " " * len(m.group()), text)


@final
class _Shift:
    """Moves nodes `chars` characters and `lines` lines on (columns stay: every
    moved node starts on a line the edit did not touch)."""

    def __init__(self, chars: int, lines: int) -> None:
        self.chars = chars
        self.lines = lines

    def span(self, s: ast.Span) -> ast.Span:
        # tuple.__new__: a named tuple's own constructor costs twice as much, and a
        # large file has hundreds of thousands of spans
        path, line, column, end_line, end_column, start, end = s
        lines, chars = self.lines, self.chars
        moved: ast.Span = _new_tuple(
            ast.Span,
            (path, line + lines, column, end_line + lines, end_column, start + chars, end + chars),
        )
        return moved

    def expr(self, e: ast.Expr) -> ast.Expr:
        span = self.span(e.span)
        match e:
            case ast.String():
                return ast.String(e.value, e.raw, span)
            case ast.Number():
                return ast.Number(e.value, e.raw, span)
            case ast.Duration():
                return ast.Duration(e.seconds, e.raw, span)
            case ast.Size():
                return ast.Size(e.bytes, e.raw, span)
            case ast.Bool():
                return ast.Bool(e.value, span)
            case ast.Name():
                return ast.Name(e.name, span)
            case ast.Reference():
                return ast.Reference(e.parts, span)
            case ast.Call():
                return ast.Call(
                    e.function,
                    self.span(e.function_span),
                    tuple(self.expr(a) for a in e.args),
                    tuple(
                        ast.KeywordArgument(
                            k.name, self.span(k.name_span), self.expr(k.value), self.span(k.span)
                        )
                        for k in e.kwargs
                    ),
                    span,
                )
            case ast.ListExpr():
                return ast.ListExpr(tuple(self.expr(i) for i in e.items), span)
            case ast.MapExpr():
                return ast.MapExpr(
                    tuple(
                        ast.MapEntry(
                            m.key, self.span(m.key_span), m.quoted, self.expr(m.value),
                            self.span(m.span),
                        )
                        for m in e.entries
                    ),
                    span,
                )  # fmt: skip

    def string(self, s: ast.String) -> ast.String:
        return ast.String(s.value, s.raw, self.span(s.span))

    def block(self, b: ast.Block) -> ast.Block:
        body: list[ast.Attribute | ast.Block] = []
        for item in b.body:
            if isinstance(item, ast.Block):
                body.append(self.block(item))
            else:
                body.append(
                    ast.Attribute(
                        item.name, self.span(item.name_span), self.expr(item.value),
                        self.span(item.span),
                    )
                )  # fmt: skip
        label = self.string(b.label) if b.label is not None else None
        return ast.Block(b.type, self.span(b.type_span), label, tuple(body), self.span(b.span))

    def item(self, i: ast.Block | ast.Include) -> ast.Block | ast.Include:
        if isinstance(i, ast.Block):
            return self.block(i)
        return ast.Include(self.string(i.path), self.span(i.span))

    def comment(self, c: ast.Comment) -> ast.Comment:
        return ast.Comment(c.text, self.span(c.span))


@final
class Reparser:
    """`parse(text, path)` as the parser's, reusing the last tree of `path`."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, ParseResult]] = {}
        self._good: dict[str, tuple[str, ast.FlowFile]] = {}  # the last clean parse
        self.partial_parses = 0  # how many parses reused a tree (for tests)

    def forget(self, path: str) -> None:
        self._last.pop(path, None)
        self._good.pop(path, None)

    def parse(self, text: str, path: str) -> ParseResult:
        last = self._last.get(path)
        result = None
        if last is not None:
            result = last[1] if last[0] == text else self._reparse(last[0], last[1], text, path)
        if result is None:
            result = parse(text, path)
        else:
            self.partial_parses += 1
        self._last[path] = (text, result)
        if result.file is not None and not result.diagnostics:
            self._good[path] = (text, result.file)
        return result

    def recover(self, text: str, path: str) -> ast.FlowFile | None:
        """For a `text` that does not parse: the last tree of `path` that parsed
        without problems, its items untouched by the change kept (those after it
        moved) and the touched ones left out; None without such a tree."""
        good = self._good.get(path)
        if good is None:
            return None
        return self._splice(good[0], good[1], text, path, partial=True)

    def _reparse(self, old: str, previous: ParseResult, new: str, path: str) -> ParseResult | None:
        if previous.file is None or previous.diagnostics:
            return None
        file = self._splice(old, previous.file, new, path, partial=False)
        return ParseResult(file, ()) if file is not None else None

    def _splice(
        self, old: str, tree: ast.FlowFile, new: str, path: str, *, partial: bool
    ) -> ast.FlowFile | None:
        """`tree` (of `old`) made the tree of `new`: the items around the change parsed
        again (left out when they do not parse and `partial`), the others reused."""
        prefix = _common_prefix(old, new)
        suffix = _common_suffix(old, new, min(len(old), len(new)) - prefix)
        old_end, new_end = len(old) - suffix, len(new) - suffix
        chars = len(new) - len(old)
        # untouched items: those ending before the edit, and those starting on a
        # line after the edit's last line (so their columns do not move)
        line_after = old.find("\n", old_end)
        items = tree.items
        before = 0
        while before < len(items) and items[before].span.end < prefix:
            before += 1
        after = before
        while after < len(items) and (line_after == -1 or items[after].span.start <= line_after):
            after += 1
        chunk_start = items[before - 1].span.end if before else 0
        chunk_old_end = items[after].span.start if after < len(items) else len(old)
        chunk_new_end = chunk_old_end + chars
        if chunk_new_end < new_end or chunk_start > prefix:
            return None
        padded = _blank(new[:chunk_start]) + new[chunk_start:chunk_new_end]
        middle = parse(padded, path)
        if middle.file is None or middle.diagnostics:
            if not partial:
                return None
            # the blocks of the touched part that parse (a few parses of that part)
            rescued = recover(padded, path)
            middle_items = rescued.items if rescued is not None else ()
            middle_comments = rescued.comments if rescued is not None else ()
        else:
            middle_items, middle_comments = middle.file.items, middle.file.comments
        lines = new.count("\n", prefix, new_end) - old.count("\n", prefix, old_end)
        kept = [c for c in tree.comments if c.span.end <= chunk_start]
        moved = [c for c in tree.comments if c.span.start >= chunk_old_end]
        following = items[after:]
        if chars or lines:  # a replacement of as many characters and lines moves nothing
            shift = _Shift(chars, lines)
            moved = [shift.comment(c) for c in moved]
            following = tuple(shift.item(i) for i in following)
        return ast.FlowFile(
            path,
            new,
            (*items[:before], *middle_items, *following),
            (*kept, *middle_comments, *moved),
        )
