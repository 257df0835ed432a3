"""How the pages write times, durations, statuses and numbers (Jinja filters).

Times are shown on the wall clock of one display zone (the server's, unless
`tideflow serve --timezone` says otherwise), with how long ago they were.
"""

from __future__ import annotations

import functools
import os
import zoneinfo
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, Final

from tideflow.dsl.durations import format_duration
from tideflow.dsl.timetext import format_elapsed, human_delta

__all__ = ["STATUS_ORDER", "STATUS_TONES", "Display", "local_zone_name", "number", "tone"]

# one tone per meaning, so that a colour always says the same thing
STATUS_TONES: Final[Mapping[str, str]] = {
    "success": "good",
    "failed": "bad",
    "timeout": "bad",
    "crashed": "bad",
    "lost": "bad",
    "upstream_failed": "warn",
    "retrying": "warn",
    "running": "active",
    "queued": "active",
    "starting": "active",
    "draining": "warn",
    "pending": "muted",
    "skipped": "muted",
    "stopped": "muted",
    "cancelled": "muted",
    "interrupted": "muted",
    "failing": "bad",
    "ok": "good",
    "idle": "muted",
}
STATUS_ORDER: Final = (
    "failed",
    "upstream_failed",
    "retrying",
    "running",
    "queued",
    "pending",
    "success",
    "skipped",
    "cancelled",
)


def local_zone_name() -> str:
    """The server's IANA zone name ($TZ, else /etc/localtime), or UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            zoneinfo.ZoneInfo(name)
            return name
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    try:
        target = str(Path("/etc/localtime").resolve())
    except OSError:
        return "UTC"
    marker = "/zoneinfo/"
    if marker in target:
        name = target.split(marker, 1)[1]
        try:
            zoneinfo.ZoneInfo(name)
            return name
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    return "UTC"


class Display:
    """Formatting for one display zone; `filters()` gives them to Jinja."""

    def __init__(self, zone_name: str, now: Callable[[], datetime]) -> None:
        self.zone_name = zone_name
        self.zone: tzinfo = UTC if zone_name == "UTC" else zoneinfo.ZoneInfo(zone_name)
        self._now = now

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.zone)

    def when(self, moment: datetime | None) -> str:
        """`14:03:22` today, `Mon 3 Nov 14:03` otherwise; `-` for none."""
        if moment is None:
            return "-"
        local = self.local(moment)
        today = self.local(self._now()).date()
        if local.date() == today:
            return local.strftime("%H:%M:%S")
        if local.year == today.year:
            return f"{local:%a} {local.day} {local:%b %H:%M}"
        return local.strftime("%Y-%m-%d %H:%M")

    def clock(self, moment: datetime | None) -> str:
        """`14:03`; empty for none."""
        return self.local(moment).strftime("%H:%M") if moment else ""

    def ago(self, moment: datetime | None) -> str:
        if moment is None:
            return ""
        return human_delta((self._now() - moment).total_seconds())

    def full(self, moment: datetime | None) -> str:
        """The exact local time with its zone, for tooltips."""
        if moment is None:
            return ""
        local = self.local(moment)
        return f"{local:%Y-%m-%d %H:%M:%S}.{local.microsecond // 1000:03d} {local:%Z}"

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "when": self.when,
            "clock": self.clock,
            "ago": self.ago,
            "full_time": self.full,
            "duration": format_elapsed,
            "span": functools.partial(format_duration, zero="0ms"),  # as the graph shows zero
            "tone": tone,
            "number": number,
            "iso": lambda moment: moment.isoformat() if moment else "",
        }


def tone(status: str | None) -> str:
    return STATUS_TONES.get(status or "", "muted")


def number(value: float | None) -> str:
    """`12,345`; `-` for none."""
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"
