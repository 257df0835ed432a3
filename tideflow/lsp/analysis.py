"""Analysing a document: the compiler's pipeline on in-memory text, and recovery of
the blocks that parse when the whole file does not.

Recovery never parses by other rules than the compiler's parser: it hides (blanks
out, keeping line breaks so that every span stays where it was) the top-level
chunk around the syntax error and parses again, a few times at most. A top-level
chunk starts at a line whose first character begins a word (`job "x" {`,
`include "..."`), which is how `tideflow fmt` lays blocks out.
"""

from __future__ import annotations

import re

from tideflow.dsl import ast
from tideflow.dsl.parser import parse

__all__ = ["MAX_RECOVERY_PARSES", "recover"]

MAX_RECOVERY_PARSES = 6
"""Parses tried before giving up (each costs a parse of the whole text)."""

_TOP_LEVEL_START = re.compile(r"^[A-Za-z_]", re.MULTILINE)
_NOT_NEWLINE = re.compile(r"[^\n]")


def _chunk_around(text: str, offset: int) -> tuple[int, int]:
    """The top-level chunk holding `offset`: from the last line start at or before it
    that begins a word, to the next such line start after its line (or the end)."""
    start = 0
    for match in _TOP_LEVEL_START.finditer(text, 0, offset + 1):
        start = match.start()
    line_end = text.find("\n", offset)
    following = _TOP_LEVEL_START.search(text, len(text) if line_end == -1 else line_end + 1)
    end = following.start() if following is not None else len(text)
    return start, max(end, min(offset + 1, len(text)))


def recover(text: str, path: str) -> ast.FlowFile | None:
    """The tree of the parts of `text` that parse, with `text` as its source; None
    when nothing parses within `MAX_RECOVERY_PARSES` tries."""
    hidden = text
    for _ in range(MAX_RECOVERY_PARSES):
        result = parse(hidden, path)
        if result.file is not None:
            return ast.FlowFile(path, text, result.file.items, result.file.comments)
        located = [d.span for d in result.diagnostics if d.is_error and d.span is not None]
        if not located:
            return None
        start, end = _chunk_around(hidden, min(located[0].start, len(hidden)))
        if start >= end:
            return None
        hidden = hidden[:start] + _NOT_NEWLINE.sub(" ", hidden[start:end]) + hidden[end:]
    return None
