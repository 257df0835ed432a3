"""The one "did you mean ...?" of tideflow: a close name among the ones that exist.

The compiler, the loader, the CLI, the dashboard, the scheduler and the plugin
manager, and backends rejecting an unknown option, all suggest names the same way
(difflib's closest match, ratio 0.6 or more). It lives in the plugin API, the
lowest room, so that every room may use it; `tideflow.dsl.suggest` re-exports it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["closest", "suggest"]


def closest(word: str, choices: Iterable[str], *, fold_case: bool = False) -> str | None:
    """The choice most like `word`, or None when none is close.

    With `fold_case`, a choice that differs from `word` only in case is offered
    when difflib finds nothing (difflib rates `EXTRACT` and `extract` far apart).
    """
    return _closest(word, tuple(choices), fold_case)


def suggest(
    word: str, choices: Iterable[str], template: str = "`{}`", *, fold_case: bool = False
) -> str | None:
    """`did you mean `close`?` (the name shown through `template`), or None."""
    close = closest(word, choices, fold_case=fold_case)
    return f"did you mean {template.format(close)}?" if close is not None else None


@lru_cache(maxsize=4096)
def _closest(word: str, pool: tuple[str, ...], fold_case: bool) -> str | None:
    # cached: a generated flow may repeat one misspelling thousands of times, and
    # difflib takes a fraction of a millisecond for each
    close = difflib.get_close_matches(word, pool, n=1)
    if close:
        return close[0]
    return {c.lower(): c for c in pool}.get(word.lower()) if fold_case else None
