"""How long something took and how long ago it was, as tables and pages show them:
`850ms`, `12.3s`, `4m05s`, `1h02m`; `5m ago`, `in 2h`, `now`.

The one home of these words for the command line and the dashboard alike (a `.flow`
file's own way of writing a duration is `durations.format_duration`). Imports
nothing of tideflow, so every room may use it.
"""

from __future__ import annotations

__all__ = ["format_elapsed", "human_delta"]


def human_delta(seconds: float) -> str:
    """`seconds` ago (positive) or ahead (negative), roughly: `30s ago`, `in 10m`, `now`."""
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 1:
        text = "now"
    elif seconds < 90:
        text = f"{seconds:.0f}s"
    elif seconds < 5400:
        text = f"{seconds / 60:.0f}m"
    elif seconds < 129600:
        text = f"{seconds / 3600:.0f}h"
    else:
        text = f"{seconds / 86400:.0f}d"
    if text == "now":
        return text
    return f"in {text}" if future else f"{text} ago"


def format_elapsed(seconds: float | None) -> str:
    """How long a run took: `850ms`, `12.3s`, `4m05s`, `1h02m`; `-` for none."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
