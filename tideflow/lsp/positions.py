"""Between the compiler's spans and LSP positions.

The compiler counts 1-based lines and columns in characters (code points); LSP
counts 0-based lines and code units of the negotiated position encoding (UTF-16
unless client and server agreed on UTF-8 or UTF-32). `LineIndex` converts both
ways for one text; build it once per text (it is O(size of the text)).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import final

from lsprotocol import types as lsp

from tideflow.dsl.ast import Span

__all__ = ["LineIndex"]


def _char_units(ch: str, encoding: str) -> int:
    """How many code units of `encoding` one character takes."""
    if encoding == "utf-8":
        return len(ch.encode("utf-8"))
    if encoding == "utf-32":
        return 1
    return 2 if ord(ch) > 0xFFFF else 1


def _units(text: str, encoding: str) -> int:
    """How many code units of `encoding` `text` takes."""
    if text.isascii() or encoding == "utf-32":
        return len(text)
    if encoding == "utf-8":
        return len(text.encode("utf-8"))
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


@final
class LineIndex:
    """The line starts of one text, for character offset <-> LSP position lookups."""

    __slots__ = ("_starts", "encoding", "text")

    def __init__(self, text: str, encoding: str = "utf-16") -> None:
        self.text = text
        self.encoding = encoding
        starts = [0]
        find = text.find
        at = find("\n")
        while at != -1:
            starts.append(at + 1)
            at = find("\n", at + 1)
        self._starts = starts

    @property
    def line_count(self) -> int:
        return len(self._starts)

    def line_start(self, line: int) -> int:
        """The character offset where 0-based `line` starts (clamped to the text)."""
        if line < 0:
            return 0
        if line >= len(self._starts):
            return len(self.text)
        return self._starts[line]

    def line_text(self, line: int) -> str:
        """0-based `line`'s text, without its line break."""
        start = self.line_start(line)
        end = self.text.find("\n", start)
        return self.text[start : len(self.text) if end == -1 else end]

    def position(self, offset: int) -> lsp.Position:
        """The LSP position of a character offset (clamped to the text)."""
        offset = max(0, min(offset, len(self.text)))
        line = bisect_right(self._starts, offset) - 1
        start = self._starts[line]
        return lsp.Position(line=line, character=_units(self.text[start:offset], self.encoding))

    def offset(self, position: lsp.Position) -> int:
        """The character offset of an LSP position (clamped to its line)."""
        start = self.line_start(position.line)
        if position.line >= len(self._starts):
            return len(self.text)
        line = self.line_text(position.line)
        if line.isascii():
            return start + min(position.character, len(line))
        units = 0
        for index, ch in enumerate(line):
            if units >= position.character:
                return start + index
            units += _char_units(ch, self.encoding)
        return start + len(line)

    def range(self, span: Span) -> lsp.Range:
        """The LSP range of a compiler span of this text."""
        return lsp.Range(start=self.position(span.start), end=self.position(span.end))

    def range_of(self, start: int, end: int) -> lsp.Range:
        """The LSP range of the character offsets [start, end)."""
        return lsp.Range(start=self.position(start), end=self.position(end))

    def whole(self) -> lsp.Range:
        """The range of the whole text (for whole-document edits)."""
        return self.range_of(0, len(self.text))
