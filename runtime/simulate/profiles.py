"""Load profiles: the rate at which messages arrive, piecewise constant, plus bursts.

A profile is written compactly, `"0-5m:100/s,5m-6m:5000/s,6m-30m:50/s,
burst@10m:20000"`, or as a JSON or CSV file (`load_profile`).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tideflow.dsl import durations
from tideflow.runtime.decide import format_seconds

__all__ = [
    "EPS",
    "Burst",
    "LoadProfile",
    "ProfileError",
    "Segment",
    "load_profile",
    "parse_duration",
    "parse_profile",
    "parse_rate",
]

EPS: Final = 1e-9  # seconds: instants closer than this are the same instant


class ProfileError(ValueError):
    """A load profile that cannot be read; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Segment:
    """Messages arrive at `rate` per second from `start` until `end` (seconds)."""

    start: float
    end: float  # math.inf: until the end of the simulation
    rate: float


@dataclass(frozen=True, slots=True)
class Burst:
    """`messages` messages arrive at once, at `at` seconds."""

    at: float
    messages: int


@dataclass(frozen=True, slots=True)
class LoadProfile:
    """Arrivals over time: segments (no overlaps; no arrivals between them) and bursts."""

    segments: tuple[Segment, ...] = ()
    bursts: tuple[Burst, ...] = ()

    def __post_init__(self) -> None:
        ordered = sorted(self.segments, key=lambda s: s.start)
        for segment in ordered:
            if segment.start < 0 or segment.end <= segment.start:
                raise ProfileError(
                    f"segment {_span(segment)} must start at 0 or later and end after it starts"
                )
            if segment.rate < 0 or not math.isfinite(segment.rate):
                raise ProfileError(f"segment {_span(segment)} has a negative or infinite rate")
        for before, after in itertools.pairwise(ordered):
            if after.start < before.end - EPS:
                raise ProfileError(f"segments {_span(before)} and {_span(after)} overlap")
        for burst in self.bursts:
            if burst.at < 0 or burst.messages < 0:
                raise ProfileError(f"a burst at {burst.at:g}s of {burst.messages} messages")
        object.__setattr__(self, "segments", tuple(ordered))
        object.__setattr__(self, "bursts", tuple(sorted(self.bursts, key=lambda b: b.at)))

    def rate_at(self, t: float) -> float:
        """Arrivals per second at `t` (a segment covers [start, end))."""
        for segment in self.segments:
            if segment.start <= t + EPS and t < segment.end - EPS:
                return segment.rate
        return 0.0

    def changes(self) -> list[float]:
        """The instants at which the rate may change."""
        points = {s.start for s in self.segments} | {s.end for s in self.segments}
        return sorted(p for p in points if math.isfinite(p))

    @property
    def end(self) -> float:
        """When the last written arrival happens (inf when the last rate lasts forever)."""
        ends = [s.end for s in self.segments] + [b.at for b in self.bursts]
        return max(ends, default=0.0)

    def describe(self) -> str:
        """The profile in words: "0s-5m 100/s, 5m-6m 5,000/s; burst at 10m: 20,000"."""
        parts = []
        for segment in self.segments:
            end = "end" if math.isinf(segment.end) else format_seconds(segment.end)
            parts.append(f"{format_seconds(segment.start)}-{end} {_rate_text(segment.rate)}")
        text = ", ".join(parts) or "no steady arrivals"
        bursts = [f"burst at {format_seconds(b.at)}: {b.messages:,}" for b in self.bursts]
        return "; ".join([text, *bursts])

    def last_spike(self) -> float | None:
        """The last burst or rise of the rate: where "time to drain" is measured from."""
        spikes = [b.at for b in self.bursts if b.messages > 0]
        for segment in self.segments:
            if segment.rate > self.rate_at(segment.start - 2 * EPS):
                spikes.append(segment.start)
        return max(spikes, default=None)


def _rate_text(rate: float) -> str:
    return f"{rate:,.0f}/s" if rate == int(rate) else f"{rate:,.2f}/s"


def _span(segment: Segment) -> str:
    end = "end" if math.isinf(segment.end) else f"{segment.end:g}s"
    return f"{segment.start:g}s-{end}"


_RATE = re.compile(r"(?P<number>[0-9][0-9_]*(?:\.[0-9]+)?)\s*(?:/\s*(?P<unit>s|sec|m|min|h))?")
_RATE_UNITS: Final = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """`"1h30m"`, `"90s"`, `"500ms"` or a bare number of seconds, in seconds."""
    seconds = durations.parse_duration(text, bare_seconds=True)
    if seconds is None:
        raise ProfileError(f"`{text}` is not a duration (write 90s, 5m, 1h30m or 500ms)")
    return seconds


def parse_rate(text: str) -> float:
    """`"100/s"`, `"6000/m"`, `"360000/h"` or a bare number, in messages per second."""
    match = _RATE.fullmatch(text.strip())
    if not match:
        raise ProfileError(f"`{text}` is not a rate (write 100/s, 6000/m or 100)")
    per = _RATE_UNITS[match["unit"]] if match["unit"] else 1.0
    try:
        return float(match["number"]) / per
    except ValueError:  # misplaced underscores, as in 1__000
        raise ProfileError(f"`{text}` is not a rate (write 100/s, 6000/m or 100)") from None


def _parse_count(text: str) -> int:
    cleaned = text.strip()
    if not re.fullmatch(r"[0-9][0-9_]*", cleaned):
        raise ProfileError(f"`{text}` is not a number of messages")
    return int(cleaned)


def parse_profile(text: str) -> LoadProfile:
    """A profile from its compact form: comma-separated `START-END:RATE` segments and
    `burst@AT:MESSAGES` bursts, e.g. `"0-5m:100/s,5m-6m:5000/s,burst@10m:20000"`."""
    segments: list[Segment] = []
    bursts: list[Burst] = []
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise ProfileError("the profile is empty (write e.g. 0-5m:100/s,burst@1m:5000)")
    for item in items:
        if not item:
            continue
        try:
            if item.startswith("burst@"):
                at, sep, count = item[len("burst@") :].partition(":")
                if not sep:
                    raise ProfileError("write burst@AT:MESSAGES, e.g. burst@10m:20000")
                bursts.append(Burst(parse_duration(at), _parse_count(count)))
                continue
            span, sep, rate = item.partition(":")
            start, dash, end = span.partition("-")
            if not sep or not dash:
                raise ProfileError("write START-END:RATE, e.g. 0-5m:100/s, or burst@AT:MESSAGES")
            segments.append(Segment(parse_duration(start), parse_duration(end), parse_rate(rate)))
        except ProfileError as exc:
            raise ProfileError(f"in `{item}`: {exc}") from None
    return LoadProfile(tuple(segments), tuple(bursts))


def load_profile(argument: str) -> LoadProfile:
    """A profile from a `.json` or `.csv` file, or from its compact form.

    JSON: `{"segments": [{"start": "0", "end": "5m", "rate": "100/s"}, ...],
    "bursts": [{"at": "10m", "messages": 20000}]}` (numbers are seconds and
    messages per second). CSV: a header `time,rate` (and optionally `burst`), each
    row setting the rate from its time until the next row's (the last one lasts to
    the end); an empty rate keeps the previous one; `burst` adds messages at once.
    """
    suffix = Path(argument).suffix.lower()
    if suffix not in {".json", ".csv"}:
        return parse_profile(argument)
    try:
        text = Path(argument).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ProfileError(f"cannot read `{argument}`: {reason.lower()}") from None
    try:
        return _profile_from_json(text) if suffix == ".json" else _profile_from_csv(text)
    except ProfileError as exc:
        raise ProfileError(f"`{argument}`: {exc}") from None


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool):
        raise ProfileError(f"{what} must be a duration, not {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return parse_duration(value)
    raise ProfileError(f"{what} must be a duration, not {value!r}")


def _rate(value: object, what: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return parse_rate(value)
    raise ProfileError(f"{what} must be a rate, not {value!r}")


def _profile_from_json(text: str) -> LoadProfile:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(f"not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict) or not set(data) <= {"segments", "bursts"}:
        raise ProfileError('write an object with "segments" and "bursts" lists')
    segments, bursts = [], []
    for index, item in enumerate(_list(data.get("segments", []), "segments")):
        where = f"segments[{index}]"
        if not isinstance(item, dict) or not {"start", "end", "rate"} <= set(item):
            raise ProfileError(f'{where} needs "start", "end" and "rate"')
        segments.append(
            Segment(
                _seconds(item["start"], f"{where}.start"),
                _seconds(item["end"], f"{where}.end"),
                _rate(item["rate"], f"{where}.rate"),
            )
        )
    for index, item in enumerate(_list(data.get("bursts", []), "bursts")):
        where = f"bursts[{index}]"
        if not isinstance(item, dict) or not {"at", "messages"} <= set(item):
            raise ProfileError(f'{where} needs "at" and "messages"')
        count = item["messages"]
        if isinstance(count, bool) or not isinstance(count, int | str):
            raise ProfileError(f"{where}.messages must be a whole number")
        messages = count if isinstance(count, int) else _parse_count(count)
        bursts.append(Burst(_seconds(item["at"], f"{where}.at"), messages))
    return LoadProfile(tuple(segments), tuple(bursts))


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ProfileError(f'"{what}" must be a list')
    return value


def _profile_from_csv(text: str) -> LoadProfile:
    rows = list(csv.DictReader(io.StringIO(text)))
    header = {name.strip() for name in (rows[0].keys() if rows else ())} - {""}
    if not rows or "time" not in header or not header <= {"time", "rate", "burst"}:
        raise ProfileError("write a header `time,rate` (or `time,rate,burst`) and rows under it")
    steps: list[tuple[float, float]] = []
    bursts: list[Burst] = []
    for number, row in enumerate(rows, start=2):
        cells = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        try:
            at = parse_duration(cells["time"])
            if cells.get("rate"):
                steps.append((at, parse_rate(cells["rate"])))
            if cells.get("burst"):
                bursts.append(Burst(at, _parse_count(cells["burst"])))
        except ProfileError as exc:
            raise ProfileError(f"line {number}: {exc}") from None
    steps.sort()
    segments = [
        Segment(start, steps[i + 1][0] if i + 1 < len(steps) else math.inf, rate)
        for i, (start, rate) in enumerate(steps)
        if i + 1 == len(steps) or steps[i + 1][0] > start
    ]
    return LoadProfile(tuple(segments), tuple(bursts))
