"""Charts drawn on the server as inline SVG: no JavaScript, no chart library.

`scaling_chart` draws a consumer's backlog (an area, left axis) and its instance
counts (steps, right axis: running solid, desired dashed) over a time window,
from the autoscaler's decisions. Hovering a point shows its numbers (SVG `<title>`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from html import escape
from typing import Final

from .models import HistoryPoint

__all__ = ["downsample", "nice_ceiling", "scaling_chart"]

_WIDTH: Final = 1000
_HEIGHT: Final = 240
_LEFT: Final = 58
_RIGHT: Final = 42
_TOP: Final = 14
_BOTTOM: Final = 30
MAX_POINTS: Final = 360

_BACKLOG_LINE: Final = "#d97706"
_BACKLOG_FILL: Final = "#fde68a"
_CURRENT_LINE: Final = "#16a34a"
_DESIRED_LINE: Final = "#1e293b"
_GRID: Final = "#e2e8f0"
_TEXT: Final = "#64748b"
_FAILED: Final = "#dc2626"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `value` (>= 1)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def downsample(points: Sequence[HistoryPoint], limit: int = MAX_POINTS) -> list[HistoryPoint]:
    """At most about `limit` points: per slice of time, the highest backlog and the
    last instance counts (so a spike is never averaged away)."""
    if len(points) <= limit:
        return list(points)
    first, last = points[0].at, points[-1].at
    span = (last - first).total_seconds() or 1.0
    buckets: dict[int, list[HistoryPoint]] = {}
    for point in points:
        index = min(limit - 1, int((point.at - first).total_seconds() / span * limit))
        buckets.setdefault(index, []).append(point)
    reduced = []
    for index in sorted(buckets):
        group = buckets[index]
        backlogs = [p.backlog for p in group if p.backlog is not None]
        tail = group[-1]
        reduced.append(
            HistoryPoint(
                at=tail.at,
                backlog=max(backlogs) if backlogs else None,
                current=tail.current,
                desired=tail.desired,
            )
        )
    return reduced


@dataclass(frozen=True, slots=True)
class _Frame:
    start: datetime
    end: datetime
    backlog_top: float
    instances_top: int

    @property
    def plot_width(self) -> float:
        return _WIDTH - _LEFT - _RIGHT

    @property
    def plot_height(self) -> float:
        return _HEIGHT - _TOP - _BOTTOM

    def x(self, moment: datetime) -> float:
        span = (self.end - self.start).total_seconds() or 1.0
        share = (moment - self.start).total_seconds() / span
        return _LEFT + max(0.0, min(1.0, share)) * self.plot_width

    def y_backlog(self, value: float) -> float:
        return _TOP + self.plot_height * (1 - value / self.backlog_top)

    def y_instances(self, value: float) -> float:
        return _TOP + self.plot_height * (1 - value / self.instances_top)


def scaling_chart(
    points: Sequence[HistoryPoint],
    *,
    start: datetime,
    end: datetime,
    zone: tzinfo,
    max_instances: int | None = None,
) -> str:
    """An SVG element (markup) of backlog and instances between `start` and `end`."""
    shown = downsample([p for p in points if start <= p.at <= end])
    backlogs = [p.backlog for p in shown if p.backlog is not None]
    counts = [max(p.current, p.desired) for p in shown]
    frame = _Frame(
        start=start,
        end=end,
        backlog_top=nice_ceiling(max(backlogs, default=0)),
        instances_top=max(1, max(counts, default=0), max_instances or 0),
    )
    parts = [
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        f'aria-label="backlog and instances over time" xmlns="http://www.w3.org/2000/svg">'
    ]
    parts += _grid(frame, zone)
    if not shown:
        parts.append(
            f'<text x="{_WIDTH / 2}" y="{_HEIGHT / 2}" text-anchor="middle" fill="{_TEXT}" '
            f'font-size="13">no autoscaler decisions in this window</text>'
        )
    else:
        parts += _backlog(frame, shown)
        parts += _steps(frame, shown, lambda p: p.desired, _DESIRED_LINE, dashed=True)
        parts += _steps(frame, shown, lambda p: p.current, _CURRENT_LINE, dashed=False)
        parts += _hover_marks(frame, shown, zone)
    parts.append("</svg>")
    return "".join(parts)


def _grid(frame: _Frame, zone: tzinfo) -> list[str]:
    out = []
    bottom = _TOP + frame.plot_height
    for i in range(5):
        value = frame.backlog_top * i / 4
        y = frame.y_backlog(value)
        out.append(
            f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{_GRID}" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="{_BACKLOG_LINE}">{_short(value)}</text>'
        )
    step = max(1, math.ceil(frame.instances_top / 4))
    for count in range(0, frame.instances_top + 1, step):
        y = frame.y_instances(count)
        out.append(
            f'<text x="{_WIDTH - _RIGHT + 6}" y="{y + 4:.1f}" font-size="11" '
            f'fill="{_CURRENT_LINE}">{count}</text>'
        )
    span = (frame.end - frame.start).total_seconds()
    label = "%H:%M" if span <= 2 * 86400 else "%d %b"
    for i in range(7):
        moment = frame.start + timedelta(seconds=span * i / 6)
        x = frame.x(moment)
        anchor = "start" if i == 0 else "end" if i == 6 else "middle"
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="{_TEXT}"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{bottom + 17}" text-anchor="{anchor}" font-size="11" '
            f'fill="{_TEXT}">{escape(moment.astimezone(zone).strftime(label))}</text>'
        )
    out.append(
        f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{bottom}" y2="{bottom}" stroke="{_TEXT}"/>'
    )
    return out


def _backlog(frame: _Frame, points: Sequence[HistoryPoint]) -> list[str]:
    """The backlog as filled areas; a failed reading breaks the area and is marked."""
    out = []
    bottom = _TOP + frame.plot_height
    runs: list[list[HistoryPoint]] = [[]]
    for point in points:
        if point.backlog is None:
            runs.append([])
            x = frame.x(point.at)
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom - 8}" y2="{bottom}" '
                f'stroke="{_FAILED}" stroke-width="2"><title>backlog reading failed</title></line>'
            )
        else:
            runs[-1].append(point)
    for run in runs:
        if not run:
            continue
        line = " ".join(f"{frame.x(p.at):.1f},{frame.y_backlog(p.backlog or 0):.1f}" for p in run)
        if len(run) == 1:
            cx, cy = line.split(",")
            out.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{_BACKLOG_LINE}"/>')
            continue
        area = f"{frame.x(run[0].at):.1f},{bottom} {line} {frame.x(run[-1].at):.1f},{bottom}"
        out.append(f'<polygon points="{area}" fill="{_BACKLOG_FILL}" opacity="0.7"/>')
        out.append(
            f'<polyline points="{line}" fill="none" stroke="{_BACKLOG_LINE}" stroke-width="1.5"/>'
        )
    return out


def _steps(
    frame: _Frame,
    points: Sequence[HistoryPoint],
    value: Callable[[HistoryPoint], int],
    color: str,
    *,
    dashed: bool,
) -> list[str]:
    coords: list[str] = []
    previous: float | None = None
    for point in points:
        x = frame.x(point.at)
        y = frame.y_instances(value(point))
        if previous is not None:
            coords.append(f"{x:.1f},{previous:.1f}")
        coords.append(f"{x:.1f},{y:.1f}")
        previous = y
    if previous is not None:
        coords.append(f"{frame.x(frame.end):.1f},{previous:.1f}")
    dash = ' stroke-dasharray="5 4"' if dashed else ""
    width = "1.5" if dashed else "2.2"
    return [
        f'<polyline points="{" ".join(coords)}" fill="none" stroke="{color}" '
        f'stroke-width="{width}"{dash} stroke-linejoin="round"/>'
    ]


def _hover_marks(frame: _Frame, points: Sequence[HistoryPoint], zone: tzinfo) -> list[str]:
    out = []
    for point in points:
        backlog = "failed reading" if point.backlog is None else f"backlog {point.backlog:,}"
        instances = (
            f"{point.current} running"
            if point.current == point.desired
            else f"{point.current} → {point.desired} instances"
        )
        text = f"{point.at.astimezone(zone):%H:%M:%S} · {backlog} · {instances}"
        y = frame.y_backlog(point.backlog or 0)
        out.append(
            f'<circle cx="{frame.x(point.at):.1f}" cy="{y:.1f}" r="5" fill="transparent">'
            f"<title>{escape(text)}</title></circle>"
        )
    return out


def _short(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"
