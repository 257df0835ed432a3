"""What the passes share while one flow is checked: the catalog, the diagnostics found so
far, and the blocks and declarations by kind and name."""

from __future__ import annotations

from collections.abc import Container, Mapping
from datetime import date
from typing import Final, final

from tideflow.compiler import schema as s
from tideflow.dsl.ast import Block, Span
from tideflow.dsl.diagnostics import Diagnostic, Related
from tideflow.dsl.suggest import suggest
from tideflow.plugins.api import options as o

from .model import INVALID, Declaration, Invalid

__all__ = ["CheckContext"]

_NAME_CHARACTERS: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


@final
class CheckContext:
    """The state of one check of one flow; each pass reads and adds to it."""

    def __init__(self, catalog: o.Catalog, today: date) -> None:
        self.catalog = catalog
        self.today = today  # anchors the daylight-saving warnings
        self.found: list[Diagnostic] = []
        # kind -> name -> first block of that name, filled before any value is checked
        self.blocks: dict[str, dict[str, Block]] = {kind: {} for kind in s.BLOCKS}
        self.declarations: dict[str, dict[str, Declaration]] = {kind: {} for kind in s.BLOCKS}
        self._alphabets: dict[tuple[int, int], str] = {}  # see _alphabet

    def error(
        self,
        code: str,
        message: str,
        span: Span | None,
        *,
        label: str | None = None,
        help: str | None = None,
        related: tuple[Related, ...] = (),
        notes: tuple[str, ...] = (),
    ) -> Invalid:
        self.found.append(
            Diagnostic(code, message, span, label=label, help=help, notes=notes, related=related)
        )
        return INVALID

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.found)

    def suggest_name(self, word: str, names: Mapping[str, object], template: str) -> str | None:
        """`suggest` for the names of a flow, which may be tens of thousands.

        difflib compares the word with every name (about 20 µs each); past a
        thousand names only names one edit away are looked up, so that a flow
        whose references are all misspelt is still reported in seconds.
        """
        if len(names) <= 1000:
            return suggest(word, names, template, fold_case=True)
        close = _one_edit_away(word, names, self._alphabet(names))
        return f"did you mean {template.format(close)}?" if close else None

    def _alphabet(self, names: Mapping[str, object]) -> str:
        """The name characters that occur in `names`, in `_NAME_CHARACTERS` order (a
        generated flow uses a dozen of the 64): computed once per set of names."""
        key = (id(names), len(names))
        found = self._alphabets.get(key)
        if found is None:
            used = set().union(*map(set, names))
            found = self._alphabets[key] = "".join(c for c in _NAME_CHARACTERS if c in used)
        return found


def _one_edit_away(
    word: str, choices: Container[str], alphabet: str = _NAME_CHARACTERS
) -> str | None:
    """A choice one transposition, deletion, replacement or insertion away from `word`.

    Replacements and insertions try the characters of `alphabet`, in its order: pass
    only those that occur in `choices` (`_alphabet`) to try far fewer strings.
    """
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    for head, tail in splits:
        if len(tail) > 1 and (near := head + tail[1] + tail[0] + tail[2:]) in choices:
            return near
    for head, tail in splits:
        if tail and (near := head + tail[1:]) in choices:
            return near
    for head, tail in splits:
        for character in alphabet:
            if tail and (near := head + character + tail[1:]) in choices:
                return near
            if (near := head + character + tail) in choices:
                return near
    return None
