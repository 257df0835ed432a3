"""Durations as the language writes them (`500ms`, `90s`, `1h30m`), read and written.

The one home of the parser's duration literals, the CLI's duration options, the
simulator's profiles and every place that shows a number of seconds the way a
`.flow` file would. Imports nothing of tideflow (nor lark), so every room may use it.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["UNIT_SECONDS", "format_duration", "parse_duration", "seconds_in"]

UNIT_SECONDS: Final = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|s|m|h|d|w)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|us|s|m|h|d|w))+")
_BARE_SECONDS = re.compile(r"\d+(?:\.\d+)?")
_WRITTEN_UNITS: Final = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def seconds_in(text: str) -> float:
    """The seconds of a duration already known to be well formed (a lexed literal)."""
    return sum(float(n) * UNIT_SECONDS[u] for n, u in _PART.findall(text))


def parse_duration(text: str, *, bare_seconds: bool = False) -> float | None:
    """Seconds in a duration written as in the language (`500ms`, `10s`, `1h30m`);
    None when `text` is not one. With `bare_seconds`, a plain number (`90`, `2.5`)
    is read as seconds too."""
    text = text.strip()
    if _DURATION.fullmatch(text):
        return seconds_in(text)
    if bare_seconds and _BARE_SECONDS.fullmatch(text):
        return float(text)
    return None


def format_duration(seconds: float, *, zero: str = "0s", tenths: bool = False) -> str:
    """`90.0` → `1m30s`, `0.5` → `500ms`, `5400.0` → `1h30m`: as a duration is written.

    Whole seconds from one second up; `tenths` keeps one decimal under a minute
    (`2.5s`, where the default rounds to `2s`). `zero` is what zero reads as: the
    flow graph has always shown `0ms`, the other places `0s`.
    """
    if seconds < 0:
        return "-" + format_duration(-seconds, zero=zero, tenths=tenths)
    if seconds == 0:
        return zero
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if tenths and seconds < 60 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    remaining, parts = round(seconds), []
    for unit, size in _WRITTEN_UNITS:
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
