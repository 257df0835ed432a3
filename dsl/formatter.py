"""`tideflow fmt`: one canonical layout for `.flow` files, every comment kept.

Layout rules (in the spirit of `terraform fmt` and `gofmt`):

- 2-space indentation; one attribute or nested block per line. A block with no
  body and no comment inside is written `pool "p" {}`.
- In a run of consecutive single-line attributes (or map entries) the `=` signs
  are aligned. A blank line, a nested block or a multi-line attribute ends the
  run; a comment on its own line does not.
- Trailing comments on consecutive single-line items start in one column, one
  space after the longest of those lines (a line without one ends the group).
- Includes come first, in the order written, then the blocks with exactly one
  blank line between top-level blocks. Comments at the top of the file that are
  separated from the first item by a blank line are a file header and stay on top.
- Inside blocks, lists, maps and calls at most one blank line is kept where the
  user had blank lines between items; none after an opening or before a closing
  bracket.
- A list, map or call is written on one line when it holds no comment and the
  line fits in 100 columns, alignment padding included (a trailing comment is
  not counted); otherwise one item per line, each followed by a comma, and the
  same rule applies to each item. A flat map is written `{ key = value, b = 2 }`,
  a flat list `[1, 2]`, a call `f(1, key = 2)`.
- Literals are written as the user wrote them: strings, labels and quoted map
  keys keep their quotes and escapes, numbers, durations and sizes their spelling.
- The file ends with exactly one newline (an empty file stays empty); CRLF line
  endings become LF and trailing whitespace is removed, from line comments too.

Comments (`#`, `//` and `/* */`) are never dropped, duplicated or reordered,
except that a comment attached to an `include` moves with it. Each one keeps
its place relative to the code:

- a comment on the same line after an item (and nothing but comments after it
  on that line) trails that item; one right after an opening `{`, `[` or `(` stays
  there;
- any other comment between items goes on its own line before the item that
  follows it, or before the closing bracket if no item follows;
- a comment inside an item where no line can break (`timeout = /* s */ 15m`,
  `job /* x */ "a" {`) moves to its own line right before that item.

Multi-line block comments are copied verbatim: only their first line is indented.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from . import ast
from .diagnostics import Diagnostic
from .parser import parse

__all__ = ["LINE_WIDTH", "FormatResult", "format_file", "format_source"]

LINE_WIDTH = 100
_INDENT = "  "


@dataclass(frozen=True)
class FormatResult:
    """The formatted text (None when the source does not parse) and the parser's diagnostics."""

    text: str | None
    diagnostics: tuple[Diagnostic, ...]
    source: str = field(default="", repr=False)  # the input, to tell whether anything changed

    @property
    def changed(self) -> bool:
        return self.text is not None and self.text != self.source


def format_source(text: str, path: str = "<string>") -> FormatResult:
    """Parse and format `text`.

    Text is returned whenever the file parses, even with an invalid escape: the
    formatter writes literals as written, so it cannot make such a file worse.
    """
    result = parse(text, path)
    if result.file is None:
        return FormatResult(None, result.diagnostics, text)
    return FormatResult(format_file(result.file), result.diagnostics, text)


def format_file(file: ast.FlowFile) -> str:
    """The canonical text of a parsed file (its `source` and `comments` place the comments)."""
    return _Formatter(file).format()


# --- where comments go ---------------------------------------------------------------

_Entry: TypeAlias = (
    ast.Block | ast.Include | ast.Attribute | ast.MapEntry | ast.KeywordArgument | ast.Expr
)


@dataclass(slots=True)
class _Slot:
    """The comments that belong to one item of a sequence."""

    leading: list[ast.Comment | None] = field(default_factory=list)
    trailing: list[ast.Comment] = field(default_factory=list)


@dataclass(slots=True)
class _Arrangement:
    """The comments of one sequence (a file, a block body, a list, map or call)."""

    after_opener: list[ast.Comment]
    slots: list[_Slot]
    dangling: list[ast.Comment | None]  # after the last item, before the closer


@dataclass(frozen=True, slots=True)
class _Region:
    """The inside of a sequence: from after its opener to its closer."""

    start: int  # offset just after the opener (0 for a file)
    end: int  # offset of the closer (the length of the text for a file)
    opener_line: int | None  # None for a file, which has no opener


class _Formatter:
    def __init__(self, file: ast.FlowFile) -> None:
        self._source = file.source
        self._comments = sorted(file.comments, key=lambda c: c.span.start)
        self._starts = [c.span.start for c in self._comments]
        self._comment_end = {c.span.start: c.span.end for c in self._comments}
        self._line_starts: list[int] | None = None
        self._file = file

    # -- positions --

    def _line_of(self, offset: int) -> int:
        if self._line_starts is None:
            starts = [0]
            find = self._source.find
            nl = find("\n")
            while nl != -1:
                starts.append(nl + 1)
                nl = find("\n", nl + 1)
            self._line_starts = starts
        return bisect.bisect_right(self._line_starts, offset)

    def _next_code(self, offset: int) -> int:
        """The offset of the next character that is neither whitespace nor in a comment."""
        text, size = self._source, len(self._source)
        while offset < size:
            if text[offset].isspace() or text[offset] == "\ufeff":
                offset += 1
            elif offset in self._comment_end:
                offset = self._comment_end[offset]
            else:
                break
        return offset

    def _comments_in(self, start: int, end: int) -> list[ast.Comment]:
        lo = bisect.bisect_left(self._starts, start)
        hi = bisect.bisect_left(self._starts, end, lo)
        return self._comments[lo:hi]

    def _blank_between(self, start: int, end: int) -> bool:
        return self._source.count("\n", start, end) >= 2

    def _region(self, node: _Entry) -> _Region | None:
        """The inside of the sequence an item opens, if any (a block body, a list, ...)."""
        match node:
            case ast.Attribute() | ast.MapEntry() | ast.KeywordArgument():
                return self._region(node.value)
            case ast.Block():
                after_head = node.label.span.end if node.label else node.type_span.end
                brace = self._next_code(after_head)
                return _Region(brace + 1, node.span.end - 1, self._line_of(brace))
            case ast.ListExpr() | ast.MapExpr():
                return _Region(node.span.start + 1, node.span.end - 1, node.span.line)
            case ast.Call():
                paren = self._next_code(node.function_span.end)
                return _Region(paren + 1, node.span.end - 1, self._line_of(paren))
            case _:
                return None

    def _arrange(self, region: _Region, items: Sequence[_Entry]) -> _Arrangement:
        """Give each comment inside `region` to an item: see the module docstring."""
        slots = [_Slot() for _ in items]
        after_opener: list[ast.Comment] = []
        dangling: list[ast.Comment | None] = []
        previous_end = region.start
        previous_line = region.opener_line
        for index in range(len(items) + 1):
            next_start = items[index].span.start if index < len(items) else region.end
            gap = self._comments_in(previous_end, next_start)
            # comments that continue the line of the previous item (or the opener)
            # trail it, provided the next thing starts on a later line
            chain = 0
            line = previous_line
            while chain < len(gap) and line is not None and gap[chain].span.line == line:
                line = gap[chain].span.end_line
                chain += 1
            at_file_end = index == len(items) and region.opener_line is None
            if chain and line is not None and not at_file_end:
                next_line = gap[chain].span.line if chain < len(gap) else self._line_of(next_start)
                if next_line == line:
                    chain = 0
            trailing, rest = gap[:chain], gap[chain:]
            if index == 0:
                after_opener = trailing
            else:
                slots[index - 1].trailing = trailing
            leading: list[ast.Comment | None] = []
            cursor = trailing[-1].span.end if trailing else previous_end
            for comment in rest:
                if self._blank_between(cursor, comment.span.start):
                    leading.append(None)
                leading.append(comment)
                cursor = comment.span.end
            if index == len(items):
                dangling = leading
                break
            item = items[index]
            if self._blank_between(cursor, item.span.start):
                leading.append(None)
            # comments inside the item but outside the sequence it opens
            inner = self._region(item)
            for comment in self._comments_in(item.span.start, item.span.end):
                if inner is None or not inner.start <= comment.span.start < inner.end:
                    leading.append(comment)
            slots[index].leading = leading
            previous_end, previous_line = item.span.end, item.span.end_line
        return _Arrangement(after_opener, slots, dangling)

    # -- layout --

    def format(self) -> str:
        file = self._file
        items = file.items
        arrangement = self._arrange(_Region(0, len(self._source), None), items)
        lines: list[str] = []
        slots = arrangement.slots
        if items:
            # comments above the first item and a blank line are the file's header
            first = slots[0].leading
            cut = max((i for i, c in enumerate(first) if c is None), default=None)
            if cut is not None:
                header, slots[0].leading = first[:cut], first[cut + 1 :]
                self._leading_lines(header, 0, lines)
            includes = [
                (i, s) for i, s in zip(items, slots, strict=True) if isinstance(i, ast.Include)
            ]
            blocks = [(i, s) for i, s in zip(items, slots, strict=True) if isinstance(i, ast.Block)]
            for index, (include, slot) in enumerate(includes):
                if index == 0 and lines:
                    _blank(lines)
                self._leading_lines(slot.leading, 0, lines, keep_first_blank=index > 0)
                lines.append(f"include {include.path.raw}{_trail(slot.trailing)}")
            for block, slot in blocks:
                if lines:
                    _blank(lines)
                self._leading_lines(slot.leading, 0, lines, keep_first_blank=False)
                block_lines = self._block(block, 0)
                block_lines[-1] += _trail(slot.trailing)
                lines += block_lines
        self._leading_lines(arrangement.dangling, 0, lines, keep_first_blank=bool(lines))
        return "\n".join(lines) + "\n" if lines else ""

    def _leading_lines(
        self,
        leading: Sequence[ast.Comment | None],
        depth: int,
        lines: list[str],
        *,
        keep_first_blank: bool = True,
    ) -> None:
        for index, comment in enumerate(leading):
            if comment is None:
                if (index or keep_first_blank) and lines and lines[-1] != "":
                    lines.append("")
            else:
                lines.append(_INDENT * depth + _comment_text(comment))

    def _block(self, block: ast.Block, depth: int) -> list[str]:
        """A block's lines: the first without indentation, the rest with it."""
        head = block.type + (f" {block.label.raw}" if block.label else "")
        region = self._region(block)
        assert region is not None
        arrangement = self._arrange(region, block.body)
        if not block.body and not self._comments_in(region.start, region.end):
            return [f"{head} {{}}"]
        lines = [f"{head} {{{_trail(arrangement.after_opener)}"]
        rows: list[_Row] = []
        for item, slot in zip(block.body, arrangement.slots, strict=True):
            if isinstance(item, ast.Block):
                rows.append(_Row(slot, None, self._block(item, depth + 1)))
            else:
                width = len(_INDENT) * (depth + 1) + len(item.name) + 3
                value_lines = self._value(item.value, depth + 1, width, "")
                rows.append(_Row(slot, item.name, value_lines, item.value))
        self._rows(rows, depth + 1, "", arrangement.dangling, lines)
        lines.append(_INDENT * depth + "}")
        return lines

    def _rows(
        self,
        rows: Sequence[_Row],
        depth: int,
        suffix: str,
        dangling: Sequence[ast.Comment | None],
        lines: list[str],
    ) -> None:
        """Lay out the items of a block body, a broken list, map or call, aligning `=`."""
        indent = _INDENT * depth
        rows = list(rows)
        key_widths = _aligned_key_widths(rows)
        # Alignment pads keys, which can push a one-line list, map or call past the
        # width: write those broken and align again. Breaking only shortens runs, so
        # this ends, and it depends on the tree alone, so formatting stays idempotent.
        while True:
            too_wide = [
                index
                for index, row in enumerate(rows)
                if row.key is not None
                and len(row.value) == 1
                and isinstance(row.node, ast.ListExpr | ast.MapExpr | ast.Call)
                and len(indent) + key_widths[index] + 3 + len(row.value[0]) + len(suffix)
                > LINE_WIDTH
            ]
            if not too_wide:
                break
            for index in too_wide:
                node = rows[index].node
                assert node is not None
                broken = self._value(node, depth, 0, suffix, flat_ok=False)
                rows[index] = _Row(rows[index].slot, rows[index].key, broken, node)
            key_widths = _aligned_key_widths(rows)
        # trailing comments of consecutive single-line rows start in one column
        aligned: list[tuple[int, str]] = []  # (index in `lines`, the comments)
        for index, row in enumerate(rows):
            if row.slot.leading:
                _align_trailing(lines, aligned)
            self._leading_lines(row.slot.leading, depth, lines, keep_first_blank=index > 0)
            if row.key is None:
                first = indent + row.value[0]
            else:
                first = f"{indent}{row.key.ljust(key_widths[index])} = {row.value[0]}"
            item_lines = [first, *row.value[1:]]
            item_lines[-1] += suffix
            lines += item_lines
            if len(item_lines) == 1 and row.slot.trailing:
                aligned.append((len(lines) - 1, _trail(row.slot.trailing)))
            else:
                _align_trailing(lines, aligned)
                lines[-1] += _trail(row.slot.trailing)
        _align_trailing(lines, aligned)
        self._leading_lines(dangling, depth, lines, keep_first_blank=bool(rows))

    def _value(
        self, value: ast.Expr, depth: int, used: int, suffix: str, *, flat_ok: bool = True
    ) -> list[str]:
        """A value's lines: the first goes after what is already on the line (`used`
        columns), the others are whole lines; `suffix` will follow the last one."""
        if not isinstance(value, ast.ListExpr | ast.MapExpr | ast.Call):
            return [_flat(value, self._source)]
        region = self._region(value)
        assert region is not None
        # a comment before a call's `(` is not inside it: the enclosing item took it
        if flat_ok and not self._comments_in(region.start, region.end):
            flat = _flat(value, self._source)
            if used + len(flat) + len(suffix) <= LINE_WIDTH:
                return [flat]
        items: list[_Entry]
        rows: list[_Row] = []
        indent_width = len(_INDENT) * (depth + 1)
        if isinstance(value, ast.ListExpr):
            opener, closer = "[", "]"
            items = list(value.items)
        elif isinstance(value, ast.MapExpr):
            opener, closer = "{", "}"
            items = list(value.entries)
        else:
            opener, closer = f"{value.function}(", ")"
            items = sorted([*value.args, *value.kwargs], key=lambda a: a.span.start)
        arrangement = self._arrange(region, items)
        for item, slot in zip(items, arrangement.slots, strict=True):
            if isinstance(item, ast.MapEntry):
                key = _map_key(item, self._source)
                used_width = indent_width + len(key) + 3
                value_lines = self._value(item.value, depth + 1, used_width, ",")
                rows.append(_Row(slot, key, value_lines, item.value))
            elif isinstance(item, ast.KeywordArgument):
                used_width = indent_width + len(item.name) + 3
                value_lines = self._value(item.value, depth + 1, used_width, ",")
                rows.append(_Row(slot, item.name, value_lines, item.value))
            else:
                assert not isinstance(item, ast.Block | ast.Include | ast.Attribute)
                rows.append(_Row(slot, None, self._value(item, depth + 1, indent_width, ",")))
        lines = [opener + _trail(arrangement.after_opener)]
        self._rows(rows, depth + 1, ",", arrangement.dangling, lines)
        lines.append(_INDENT * depth + closer)
        return lines


@dataclass(frozen=True, slots=True)
class _Row:
    """One laid-out item: its comments, its `key =` if it has one, and its lines."""

    slot: _Slot
    key: str | None
    value: list[str]  # the first line without indentation or key, the others whole
    node: ast.Expr | None = None  # the value, to write it broken if alignment makes it too wide


def _aligned_key_widths(rows: Sequence[_Row]) -> list[int]:
    """The width each row's key is padded to, so that `=` lines up within a run of
    single-line `key = value` rows. A blank line starts a new run; a comment line does
    not (as in gofmt, documenting one attribute should not break the alignment)."""
    widths = [0] * len(rows)
    run: list[int] = []
    for index, row in enumerate([*rows, None]):
        single = row is not None and row.key is not None and len(row.value) == 1
        if run and (not single or (row is not None and None in row.slot.leading)):
            width = max(len(rows[i].key or "") for i in run)
            for i in run:
                widths[i] = width
            run = []
        if single:
            run.append(index)
    return widths


def _align_trailing(lines: list[str], aligned: list[tuple[int, str]]) -> None:
    """Append trailing comments to their lines, all starting in one column; empty `aligned`."""
    if aligned:
        width = max(len(lines[index]) for index, _ in aligned)
        for index, comments in aligned:
            lines[index] = lines[index].ljust(width) + comments
        aligned.clear()


def _blank(lines: list[str]) -> None:
    if lines and lines[-1] != "":
        lines.append("")


def _comment_text(comment: ast.Comment) -> str:
    text = comment.text.replace("\r\n", "\n")
    return text if text.startswith("/*") else text.rstrip()


def _trail(comments: Sequence[ast.Comment]) -> str:
    return "".join(" " + _comment_text(c) for c in comments)


def _map_key(entry: ast.MapEntry, source: str) -> str:
    return source[entry.key_span.start : entry.key_span.end] if entry.quoted else entry.key


def _flat(value: ast.Expr, source: str) -> str:
    """A value on one line (comments inside it are not written: callers check first)."""
    match value:
        case ast.String() | ast.Number() | ast.Duration() | ast.Size():
            return value.raw
        case ast.Bool():
            return "true" if value.value else "false"
        case ast.Name():
            return value.name
        case ast.Reference():
            return str(value)
        case ast.ListExpr():
            return "[" + ", ".join(_flat(item, source) for item in value.items) + "]"
        case ast.MapExpr():
            if not value.entries:
                return "{}"
            entries = (f"{_map_key(e, source)} = {_flat(e.value, source)}" for e in value.entries)
            return "{ " + ", ".join(entries) + " }"
        case ast.Call():
            arguments = sorted([*value.args, *value.kwargs], key=lambda a: a.span.start)
            return (
                f"{value.function}(" + ", ".join(_flat_argument(a, source) for a in arguments) + ")"
            )


def _flat_argument(argument: ast.Expr | ast.KeywordArgument, source: str) -> str:
    if isinstance(argument, ast.KeywordArgument):
        return f"{argument.name} = {_flat(argument.value, source)}"
    return _flat(argument, source)
