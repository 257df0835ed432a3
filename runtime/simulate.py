"""`tideflow simulate`: a load profile replayed through the autoscaler, beside KEDA's defaults.

A *load profile* is the rate at which messages arrive, piecewise constant, plus
bursts (many messages at one instant): `"0-5m:100/s,5m-6m:5000/s,6m-30m:50/s,
burst@10m:20000"`, or the same as a JSON or CSV file (`load_profile`).

The *queueing model* is a fluid queue on a virtual clock: each ready instance
handles `service_rate` messages per second; a started instance becomes ready
`startup` seconds later; a removed instance stops at once (one still starting goes
first, as a ReplicaSet deletes unready pods first); on a partitioned broker at most
one instance per partition does work. Between two events (a decision, a change of
rate, a burst, an instance becoming ready) the backlog moves linearly, so the
figures are exact for the model rather than sampled.

Two policies run on the same load:

- **tideflow**: `runtime.decide.decide()` every `poll` of the consumer's `scale`
  rule, exactly as the live loop calls it;
- **KEDA defaults**: the KEDA operator polls every 30 s (`pollingInterval`) and
  decides 0 <-> 1 (active while the lag is above `activationLagThreshold`; back to
  zero `cooldownPeriod` = 300 s after it was last active); the HPA syncs every 15 s
  (`--horizontal-pod-autoscaler-sync-period`) on the lag as an `AverageValue`
  external metric with target `lagThreshold` (the rule's `lag_per_instance`),
  capped at partitions x lagThreshold on partitioned brokers (KEDA's Kafka scaler
  without `allowIdleConsumers`), tolerance 0.1, a 300 s scale-down stabilization
  window, no scale-up window, and the default rate policies (up: the larger of 4
  pods and 100 % per 15 s; down: 100 % per 15 s). The HPA's floor is
  max(1, min) and it does nothing at zero replicas (KEDA owns 0 <-> 1). The HPA is
  modelled reading a fresh metric on each sync (KEDA's default, `useCachedMetrics:
  false`), which is the faster of KEDA's two behaviours.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

from tideflow.compiler.ir import ScaleRule
from tideflow.dsl import durations
from tideflow.plugins.backends import BacklogReading

from .decide import ScaleState, decide, format_seconds

__all__ = [
    "Burst",
    "Comparison",
    "KedaDefaultPolicy",
    "LoadProfile",
    "PlotUnavailableError",
    "PolicyRun",
    "ProfileError",
    "Sample",
    "Segment",
    "SimulationSettings",
    "TideflowPolicy",
    "compare",
    "load_profile",
    "parse_duration",
    "parse_profile",
    "parse_rate",
    "render_plot",
    "run_policy",
]

# The virtual clock's origin: decisions see SIM_EPOCH + t. Any aware instant would do.
SIM_EPOCH: Final = datetime(2026, 1, 1, tzinfo=UTC)
_EPS: Final = 1e-9  # seconds: instants closer than this are the same instant

# KEDA's and the HPA's defaults (ScaledObject spec; kube-controller-manager flags;
# HPAScalingRules defaults).
KEDA_POLLING_INTERVAL: Final = 30.0
KEDA_COOLDOWN_PERIOD: Final = 300.0
HPA_SYNC_PERIOD: Final = 15.0
HPA_TOLERANCE: Final = 0.1
HPA_SCALE_DOWN_WINDOW: Final = 300.0
HPA_SCALE_UP_PODS: Final = 4
HPA_SCALE_UP_FACTOR: Final = 2.0  # 100 % more
HPA_POLICY_PERIOD: Final = 15.0
MAX_SAMPLES: Final = 3600


# --- load profiles ---------------------------------------------------------------------------


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
            if after.start < before.end - _EPS:
                raise ProfileError(f"segments {_span(before)} and {_span(after)} overlap")
        for burst in self.bursts:
            if burst.at < 0 or burst.messages < 0:
                raise ProfileError(f"a burst at {burst.at:g}s of {burst.messages} messages")
        object.__setattr__(self, "segments", tuple(ordered))
        object.__setattr__(self, "bursts", tuple(sorted(self.bursts, key=lambda b: b.at)))

    def rate_at(self, t: float) -> float:
        """Arrivals per second at `t` (a segment covers [start, end))."""
        for segment in self.segments:
            if segment.start <= t + _EPS and t < segment.end - _EPS:
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
            if segment.rate > self.rate_at(segment.start - 2 * _EPS):
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


# --- policies ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimulationSettings:
    """The consumer's environment: how fast instances work and start, how long to run."""

    service_rate: float  # messages per second one ready instance handles
    startup: float = 2.0  # seconds from starting an instance to its first message
    duration: float = 1800.0
    partitions: int = 1  # the topic's
    partitioned: bool = False  # whether instances beyond `partitions` idle
    sample_every: float | None = None  # default: 1 s, coarser past MAX_SAMPLES samples

    def __post_init__(self) -> None:
        if not self.service_rate > 0 or not math.isfinite(self.service_rate):
            raise ValueError("the service rate must be a positive number of messages per second")
        if self.startup < 0 or not self.duration > 0 or self.partitions < 1:
            raise ValueError("startup must be >= 0, duration > 0 and partitions >= 1")

    @property
    def partitions_cap(self) -> int | None:
        return self.partitions if self.partitioned else None

    @property
    def sample_interval(self) -> float:
        if self.sample_every is not None:
            return self.sample_every
        return max(1.0, self.duration / MAX_SAMPLES)


class ScalingPolicy(Protocol):
    """Decides instance counts at instants of its own choosing."""

    name: str

    def next_at(self) -> float:
        """When (seconds) the policy next wants to decide."""
        ...

    def act(self, t: float, backlog: int, current: int) -> int:
        """The count to run from `t` on, given the backlog and the count running."""
        ...


class TideflowPolicy:
    """`decide()` every `poll`, as the live autoscaler calls it."""

    name = "tideflow"

    def __init__(self, rule: ScaleRule, settings: SimulationSettings) -> None:
        self.rule = rule
        self.settings = settings
        self.state = ScaleState()
        self._polls = 0

    def next_at(self) -> float:
        return self._polls * self.rule.poll

    def act(self, t: float, backlog: int, current: int) -> int:
        self._polls += 1
        now = SIM_EPOCH + timedelta(seconds=t)
        partitions = self.settings.partitions
        reading = BacklogReading(
            "simulated", "simulated", backlog, _spread(backlog, partitions), partitions, now
        )
        decision, self.state = decide(
            reading, current, self.rule, self.settings.partitions_cap, self.state, now, math.inf
        )
        return decision.desired


class KedaDefaultPolicy:
    """KEDA's operator (0 <-> 1) and the HPA it creates (1 <-> N), with their defaults,
    fed the same lag threshold, activation threshold and bounds as the rule."""

    name = "keda-default"

    def __init__(self, rule: ScaleRule, settings: SimulationSettings) -> None:
        self.rule = rule
        self.settings = settings
        self._polls = 0
        self._syncs = 0
        self._last_active: float | None = None
        self._recommendations: list[tuple[float, int]] = []
        self._scale_events: list[tuple[float, int]] = []  # the HPA's: (time, change)

    def next_at(self) -> float:
        return min(self._polls * KEDA_POLLING_INTERVAL, self._syncs * HPA_SYNC_PERIOD)

    def act(self, t: float, backlog: int, current: int) -> int:
        count = current
        if self._polls * KEDA_POLLING_INTERVAL <= t + _EPS:
            self._polls += 1
            count = self._operator(t, backlog, count)
        if self._syncs * HPA_SYNC_PERIOD <= t + _EPS:
            self._syncs += 1
            count = self._hpa(t, backlog, count)
        return count

    def _operator(self, t: float, backlog: int, current: int) -> int:
        rule = self.rule
        if rule.min >= 1 or backlog > rule.activation_lag:
            self._last_active = t
            return max(current, rule.min, 1)
        idle_since = self._last_active if self._last_active is not None else -math.inf
        if current > 0 and t - idle_since >= KEDA_COOLDOWN_PERIOD - _EPS:
            return 0
        return current

    def _hpa(self, t: float, backlog: int, current: int) -> int:
        if current == 0:
            return 0  # the HPA does not scale a target at zero replicas
        rule = self.rule
        target = rule.lag_per_instance
        metric = backlog
        if self.settings.partitioned:
            metric = min(metric, self.settings.partitions * target)
        share = target * current
        deviation, band = abs(metric - share), HPA_TOLERANCE * share
        within = deviation <= band or math.isclose(deviation, band)
        recommendation = current if within else -(-metric // target)

        cutoff = t - HPA_SCALE_DOWN_WINDOW
        self._recommendations = [(at, n) for at, n in self._recommendations if at > cutoff + _EPS]
        down_ceiling = max([recommendation, *(n for _, n in self._recommendations)])
        self._recommendations.append((t, recommendation))
        desired = current
        if desired < recommendation:  # no scale-up window: the latest recommendation
            desired = recommendation
        if desired > down_ceiling:
            desired = down_ceiling

        period = [(at, d) for at, d in self._scale_events if at > t - HPA_POLICY_PERIOD + _EPS]
        if desired > current:
            at_start = current - sum(d for _, d in period if d > 0)
            limit = max(at_start + HPA_SCALE_UP_PODS, math.ceil(at_start * HPA_SCALE_UP_FACTOR))
            desired = min(desired, limit)
        # scaling down: 100 % per period, i.e. no limit
        floor = max(1, rule.min)
        desired = min(max(desired, floor), rule.max)
        if desired != current:
            self._scale_events.append((t, desired - current))
            self._scale_events = [(at, d) for at, d in self._scale_events if at > t - 60]
        return desired


def _spread(total: int, partitions: int) -> dict[int, int]:
    """`total` spread evenly over the partitions (the empty ones left out)."""
    share, extra = divmod(total, partitions)
    spread = {p: share + (1 if p < extra else 0) for p in range(partitions)}
    return {p: n for p, n in spread.items() if n}


# --- the queue -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    arrival_rate: float
    backlog: float
    instances: int  # running or starting
    ready: int


@dataclass(frozen=True, slots=True)
class PolicyRun:
    """What one policy did with the load."""

    policy: str
    peak_backlog: float
    drain_seconds: float | None  # from the last spike until drained; None: never drained
    instance_seconds: float  # starting instances count: they are paid for
    scale_events: int
    max_instances: int
    decisions: int
    final_backlog: float
    samples: tuple[Sample, ...] = field(repr=False)


def run_policy(
    profile: LoadProfile,
    policy: ScalingPolicy,
    settings: SimulationSettings,
    *,
    initial: int = 0,
    drain_level: float = 0.0,
) -> PolicyRun:
    """Replay `profile` through `policy` for `settings.duration` seconds, starting with
    `initial` ready instances. "Drained" means the backlog is back to `drain_level`."""
    duration = settings.duration
    interval = settings.sample_interval
    bursts = [b for b in profile.bursts if b.at <= duration + _EPS]
    changes = [c for c in profile.changes() if 0 < c < duration]
    ready_at: list[float] = [0.0] * initial  # of each instance, ascending
    backlog = 0.0
    trace: list[tuple[float, float]] = [(0.0, 0.0)]
    samples: list[Sample] = []
    instance_seconds = 0.0
    scale_events = decisions = 0
    max_instances = initial
    t, samples_taken, next_burst = 0.0, 0, 0

    while True:
        while next_burst < len(bursts) and bursts[next_burst].at <= t + _EPS:
            backlog += bursts[next_burst].messages
            next_burst += 1
            trace.append((t, backlog))
        while policy.next_at() <= t + _EPS:
            decisions += 1
            current = len(ready_at)
            wanted = policy.act(t, round(backlog), current)
            if wanted > current:
                ready_at.extend([t + settings.startup] * (wanted - current))
            elif wanted < current:
                del ready_at[wanted:]  # the latest to be ready are the first to go
            if wanted != current:
                scale_events += 1
                max_instances = max(max_instances, wanted)
        ready = sum(1 for r in ready_at if r <= t + _EPS)
        if samples_taken * interval <= t + _EPS:
            samples.append(Sample(t, profile.rate_at(t), backlog, len(ready_at), ready))
            samples_taken += 1
        if t >= duration - _EPS:
            break

        upcoming = [duration, policy.next_at(), samples_taken * interval]
        upcoming += [c for c in changes if c > t + _EPS][:1]
        upcoming += [b.at for b in bursts[next_burst : next_burst + 1]]
        upcoming += [r for r in ready_at if r > t + _EPS][:1]
        until = min(upcoming)
        working = min(ready, settings.partitions) if settings.partitioned else ready
        net = profile.rate_at(t) - working * settings.service_rate
        elapsed = until - t
        if backlog + net * elapsed < 0:
            if backlog > 0:
                trace.append((t + backlog / -net, 0.0))  # emptied inside the interval
            backlog = 0.0
        else:
            backlog += net * elapsed
        instance_seconds += len(ready_at) * elapsed
        t = until
        trace.append((t, backlog))

    return PolicyRun(
        policy=policy.name,
        peak_backlog=max(b for _, b in trace),
        drain_seconds=_drain_seconds(trace, profile.last_spike(), drain_level),
        instance_seconds=instance_seconds,
        scale_events=scale_events,
        max_instances=max_instances,
        decisions=decisions,
        final_backlog=backlog,
        samples=tuple(samples),
    )


def _drain_seconds(
    trace: Sequence[tuple[float, float]], spike: float | None, level: float
) -> float | None:
    """Seconds from `spike` until the backlog, past its highest point since, is back to
    `level`; 0 when it never rose above it; None when it never came back."""
    if spike is None:
        return None
    after = [(t, b) for t, b in trace if t >= spike - _EPS]
    if not after:
        return None
    peak_index = max(range(len(after)), key=lambda i: (after[i][1], -i))
    if after[peak_index][1] <= level:
        return 0.0
    for (t0, b0), (t1, b1) in itertools.pairwise(after[peak_index:]):
        if b1 <= level < b0:
            crossed = t0 if t1 == t0 else t0 + (b0 - level) / (b0 - b1) * (t1 - t0)
            return crossed - spike
    return None


# --- the comparison -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Comparison:
    """The same load through tideflow's decision and through KEDA's defaults."""

    rule: ScaleRule
    settings: SimulationSettings
    profile: LoadProfile
    spike_at: float | None
    drain_level: float
    tideflow: PolicyRun
    keda: PolicyRun

    def ratio(self, figure: str) -> float | None:
        """tideflow's figure divided by KEDA's (below 1: tideflow's is smaller)."""
        ours, theirs = getattr(self.tideflow, figure), getattr(self.keda, figure)
        if ours is None or theirs is None or theirs == 0:
            return None
        return float(ours) / float(theirs)

    def series(self) -> Iterator[dict[str, float | int]]:
        """The time series of both policies, one row per sample instant."""
        for ours, theirs in zip(self.tideflow.samples, self.keda.samples, strict=True):
            yield {
                "t": ours.t,
                "arrival_rate": ours.arrival_rate,
                "tideflow_backlog": ours.backlog,
                "tideflow_instances": ours.instances,
                "tideflow_ready": ours.ready,
                "keda_backlog": theirs.backlog,
                "keda_instances": theirs.instances,
                "keda_ready": theirs.ready,
            }

    def summary(self) -> dict[str, Any]:
        """The figures of both policies and their ratios, JSON-ready."""
        figures = ("peak_backlog", "drain_seconds", "instance_seconds", "scale_events")
        return {
            "spike_at": self.spike_at,
            "drain_level": self.drain_level,
            "tideflow": _run_figures(self.tideflow),
            "keda_default": _run_figures(self.keda),
            "ratios": {name: self.ratio(name) for name in figures},
        }


def _run_figures(run: PolicyRun) -> dict[str, Any]:
    return {
        "peak_backlog": run.peak_backlog,
        "drain_seconds": run.drain_seconds,
        "instance_seconds": run.instance_seconds,
        "scale_events": run.scale_events,
        "max_instances": run.max_instances,
        "decisions": run.decisions,
        "final_backlog": run.final_backlog,
    }


def compare(profile: LoadProfile, rule: ScaleRule, settings: SimulationSettings) -> Comparison:
    """Run `profile` through both policies, each starting at the rule's `min` instances.
    Drained means back to the rule's `activation_lag` (an idle consumer's backlog)."""
    level = float(rule.activation_lag)
    runs = [
        run_policy(profile, policy, settings, initial=rule.min, drain_level=level)
        for policy in (TideflowPolicy(rule, settings), KedaDefaultPolicy(rule, settings))
    ]
    return Comparison(rule, settings, profile, profile.last_spike(), level, runs[0], runs[1])


# --- the picture ----------------------------------------------------------------------------


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed."""


def render_plot(comparison: Comparison, title: str) -> bytes:
    """A PNG: backlog (top) and instances (bottom) over time, for both policies."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: draw into memory
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError as exc:
        raise PlotUnavailableError(
            "drawing a plot needs matplotlib: pip install matplotlib"
        ) from exc

    runs = (
        (comparison.tideflow, "tideflow", "#1f77b4"),
        (comparison.keda, "KEDA defaults", "#d62728"),
    )
    minutes = comparison.settings.duration >= 600
    scale, unit = (60.0, "min") if minutes else (1.0, "s")
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.8), dpi=110)
    try:
        # the arrival rate, faint, behind the backlog: what the policies reacted to
        samples = comparison.tideflow.samples
        rates = top.twinx()
        rates.fill_between(
            [s.t / scale for s in samples],
            [s.arrival_rate for s in samples],
            step="post",
            color="grey",
            alpha=0.15,
            lw=0,
            label="arrivals (right axis)",
        )
        rates.set_ylabel("arrivals (messages/s)", color="grey")
        rates.tick_params(axis="y", colors="grey")
        rates.set_ylim(bottom=0)
        top.set_zorder(rates.get_zorder() + 1)
        top.patch.set_visible(False)
        for run, label, colour in runs:
            xs = [s.t / scale for s in run.samples]
            top.plot(xs, [s.backlog for s in run.samples], label=label, color=colour, lw=1.6)
            bottom.step(
                xs,
                [s.instances for s in run.samples],
                where="post",
                label=f"{label}: running or starting",
                color=colour,
                lw=1.6,
            )
            bottom.step(
                xs,
                [s.ready for s in run.samples],
                where="post",
                color=colour,
                lw=0.9,
                ls=":",
                label=f"{label}: ready",
            )
        for axis in (top, bottom):
            for burst in comparison.profile.bursts:
                if burst.at <= comparison.settings.duration:
                    axis.axvline(burst.at / scale, color="grey", lw=0.8, ls="--")
            axis.grid(True, alpha=0.3)
        handles, labels = top.get_legend_handles_labels()
        extra_handles, extra_labels = rates.get_legend_handles_labels()
        top.legend(handles + extra_handles, labels + extra_labels, loc="upper left", fontsize=8)
        bottom.legend(loc="upper left", fontsize=8, ncol=2)
        top.set_ylabel("backlog (messages)")
        top.set_ylim(bottom=0)
        top.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        rates.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        peak = max(max(s.instances for s in run.samples) for run, _, _ in runs)
        bottom.set_ylim(0, max(peak, 1) * 1.35)  # headroom for the legend
        bottom.set_ylabel("instances")
        bottom.yaxis.get_major_locator().set_params(integer=True)
        bottom.set_xlabel(f"time ({unit}); dashed lines: bursts")
        top.set_title(title, fontsize=10)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)


def csv_text(rows: Iterable[Mapping[str, float | int]]) -> str:
    """The time series as CSV with a header row."""
    out = io.StringIO()
    writer: csv.DictWriter[str] | None = None
    for row in rows:
        if writer is None:
            writer = csv.DictWriter(out, fieldnames=list(row), lineterminator="\n")
            writer.writeheader()
        writer.writerow({k: f"{v:g}" if isinstance(v, float) else v for k, v in row.items()})
    return out.getvalue()
