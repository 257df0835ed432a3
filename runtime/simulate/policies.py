"""The two scaling policies a simulation compares, on the same load.

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

import math
from datetime import UTC, datetime, timedelta
from typing import Final

from tideflow.compiler.ir import ScaleRule
from tideflow.plugins.api import BacklogReading
from tideflow.runtime.decide import ScaleState, decide

from .profiles import EPS
from .queue_model import SimulationSettings

__all__ = ["KedaDefaultPolicy", "TideflowPolicy"]

# The virtual clock's origin: decisions see SIM_EPOCH + t. Any aware instant would do.
SIM_EPOCH: Final = datetime(2026, 1, 1, tzinfo=UTC)

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
        if self._polls * KEDA_POLLING_INTERVAL <= t + EPS:
            self._polls += 1
            count = self._operator(t, backlog, count)
        if self._syncs * HPA_SYNC_PERIOD <= t + EPS:
            self._syncs += 1
            count = self._hpa(t, backlog, count)
        return count

    def _operator(self, t: float, backlog: int, current: int) -> int:
        rule = self.rule
        if rule.min >= 1 or backlog > rule.activation_lag:
            self._last_active = t
            return max(current, rule.min, 1)
        idle_since = self._last_active if self._last_active is not None else -math.inf
        if current > 0 and t - idle_since >= KEDA_COOLDOWN_PERIOD - EPS:
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
        self._recommendations = [(at, n) for at, n in self._recommendations if at > cutoff + EPS]
        down_ceiling = max([recommendation, *(n for _, n in self._recommendations)])
        self._recommendations.append((t, recommendation))
        desired = current
        if desired < recommendation:  # no scale-up window: the latest recommendation
            desired = recommendation
        if desired > down_ceiling:
            desired = down_ceiling

        period = [(at, d) for at, d in self._scale_events if at > t - HPA_POLICY_PERIOD + EPS]
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
