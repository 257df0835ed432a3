"""The queueing model: a fluid queue on a virtual clock, driven by a scaling policy.

Each ready instance handles `service_rate` messages per second; a started
instance becomes ready `startup` seconds later; a removed instance stops at once
(one still starting goes first, as a ReplicaSet deletes unready pods first); on a
partitioned broker at most one instance per partition does work. Between two events
(a decision, a change of rate, a burst, an instance becoming ready) the backlog
moves linearly, so the figures are exact for the model rather than sampled.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from .profiles import EPS, LoadProfile

__all__ = ["PolicyRun", "Sample", "ScalingPolicy", "SimulationSettings", "run_policy"]

MAX_SAMPLES: Final = 3600


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
    bursts = [b for b in profile.bursts if b.at <= duration + EPS]
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
        while next_burst < len(bursts) and bursts[next_burst].at <= t + EPS:
            backlog += bursts[next_burst].messages
            next_burst += 1
            trace.append((t, backlog))
        while policy.next_at() <= t + EPS:
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
        ready = sum(1 for r in ready_at if r <= t + EPS)
        if samples_taken * interval <= t + EPS:
            samples.append(Sample(t, profile.rate_at(t), backlog, len(ready_at), ready))
            samples_taken += 1
        if t >= duration - EPS:
            break

        upcoming = [duration, policy.next_at(), samples_taken * interval]
        upcoming += [c for c in changes if c > t + EPS][:1]
        upcoming += [b.at for b in bursts[next_burst : next_burst + 1]]
        upcoming += [r for r in ready_at if r > t + EPS][:1]
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
    after = [(t, b) for t, b in trace if t >= spike - EPS]
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
