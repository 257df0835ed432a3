"""`# tideflow: allow W411`: a warning that a block knowingly accepts.

Some warnings cannot see everything (W411 cannot read the job's Python), so a
correct flow may still draw one, and `lint --strict` would fail on it for ever.
A comment of the form `# tideflow: allow CODE[, CODE...]` on the line above a
block's header, or at the end of that line, drops those warnings inside the
block (nested blocks included). Errors are never dropped: a flow that does not
compile cannot be allowed to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence

from tideflow.dsl.ast import Block, Comment, FlowFile
from tideflow.dsl.diagnostics import Diagnostic

__all__ = ["drop_allowed"]

_ALLOW = re.compile(r"^(?:#|//)\s*tideflow:\s*allow\s+([A-Za-z0-9_, ]+?)\s*$")


def drop_allowed(diagnostics: Sequence[Diagnostic], files: Iterable[FlowFile]) -> list[Diagnostic]:
    """`diagnostics` without the warnings that an allow comment accepts."""
    regions: list[tuple[str, int, int, frozenset[str]]] = []  # path, start, end, codes
    for file in files:
        allowed_on_line = _allow_comments(file.comments)
        if not allowed_on_line:
            continue
        for block in _blocks(file.blocks):
            header = block.span.line
            codes = allowed_on_line.get(header, frozenset()) | allowed_on_line.get(
                header - 1, frozenset()
            )
            if codes:
                regions.append((block.span.path, block.span.start, block.span.end, codes))
    if not regions:
        return list(diagnostics)
    return [d for d in diagnostics if d.is_error or not _allowed(d, regions)]


def _allow_comments(comments: Iterable[Comment]) -> dict[int, frozenset[str]]:
    found: dict[int, frozenset[str]] = {}
    for comment in comments:
        match = _ALLOW.match(comment.text.strip())
        if match:
            codes = frozenset(c.strip().upper() for c in match[1].split(",") if c.strip())
            found[comment.span.line] = found.get(comment.span.line, frozenset()) | codes
    return found


def _blocks(blocks: Iterable[Block]) -> Iterator[Block]:
    for block in blocks:
        yield block
        yield from _blocks(block.blocks)


def _allowed(diagnostic: Diagnostic, regions: list[tuple[str, int, int, frozenset[str]]]) -> bool:
    span = diagnostic.span
    if span is None:
        return False
    return any(
        path == span.path and start <= span.start < end and diagnostic.code in codes
        for path, start, end, codes in regions
    )
