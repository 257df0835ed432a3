"""The autoscaler's decision: how many instances a consumer should run, and why.

`decide()` is a pure function of (reading, current count, rule, history, clock):
the live loop (`runtime.autoscaler`), the tests and `tideflow simulate` call the
same function, so what the simulator shows is what the loop does. It returns a
`Decision` (the count, a reason word, the arithmetic in words) and the next
`ScaleState` (the history the following decision needs).

The rules, in the order they apply, and where they come from:

1. **A failed or stale reading never scales down and never to zero.** A
   `BacklogFailure`, or a reading older than `stale_after` seconds, holds the
   current count, or raises it to the rule's `fallback` when that is higher (KEDA's
   `fallback.replicas`, ScaledObject spec; KEDA may also lower the count to the
   fallback, tideflow never does on a reading it cannot trust). What the loop holds
   counts as a recommendation (rule 5), so after a recovery the scale-down window
   is waited out again.
2. **Recommendation = ceil(backlog / lag_per_instance)** (KEDA passes the lag as an
   `AverageValue` external metric; the HPA's `GetExternalPerPodMetricReplicas`
   computes `ceil(total / target)`).
3. **Activation decides 0 <-> 1.** With `min = 0` the consumer is *active* only
   while the backlog is strictly above `activation_lag`; an idle consumer is
   recommended 0 instances whatever rule 2 says (KEDA, "Activating and Scaling
   thresholds": activation only when the value is greater than the threshold, and
   activation takes priority over the scaling value). With `min >= 1` activation
   does not apply (KEDA: "the scaler is always active").
4. **Tolerance band.** With instances running, when backlog / (lag_per_instance x
   current) is within `tolerance` of 1 the recommendation is the current count (the
   HPA's `--horizontal-pod-autoscaler-tolerance`, 0.1 by default: no change for a
   ratio within [0.9, 1.1]); this is what stops a one-instance oscillation around a
   boundary. Then the recommendation is clamped to [min, max] and, for partitioned
   brokers, capped at the partition count: instances beyond it would idle (KEDA's
   Kafka scaler: "the number of replicas will not exceed the number of partitions",
   unless `allowIdleConsumers`). `min` wins over the partition cap.
5. **Stabilization windows** (HPA `behavior`, KEP-853, `stabilizeRecommendation-
   WithBehaviors`): every recommendation is kept with its time; a scale-up goes no
   higher than the lowest recommendation within `scale_up_window` (0 by default:
   immediate), a scale-down no lower than the highest within `scale_down_window`.
   Better than the HPA after a restart: the first decision counts the running
   instances as a recommendation made now, so a restarted loop waits a full window
   before it scales down.
6. **Steps.** A change is at most `max_step` instances per decision, in either
   direction (the HPA's scaling policies limit the rate the same way).
7. **Cooldown.** A scale-down comes at least `cooldown` after the previous
   scale-down, and the count reaches zero only `cooldown` after the backlog was
   last above `activation_lag` (KEDA's `cooldownPeriod`: "the period to wait after
   the last trigger reported active before scaling the resource back to 0"); until
   then a scale-down stops at one instance.
8. **Scale-downs that get undone wait longer next time** (better than KEDA). The
   backlog says how much work waits, not how much arrives: a steady load that N
   instances keep at an empty backlog looks like a load that needs none, so a
   lag-driven autoscaler (KEDA's too) scales down, the backlog grows, it scales back
   up, and so on for as long as the load lasts. Here a scale-down undone (by a
   scale-up) sooner than the window that allowed it doubles that window for the
   next scale-downs, and a consumer reactivated sooner after its scale-to-zero than
   the idle time that preceded it must be idle twice as long before the next one;
   both up to `MAX_HOLD` (or the rule's own setting when that is longer). A
   scale-down that holds for its window, or a zero that lasts its idle time, brings
   the rule's own setting back. A steady load then settles after a few cycles.
9. A count above `max` (or the partition cap) or below `min` is corrected at once,
   windows and cooldown notwithstanding (the HPA clamps to its bounds last, too).

KEDA's Kafka edge cases map onto this as follows. *No committed offset*: brokers
report every message published since the group was ensured as its backlog (see
`Broker.backlog`), KEDA's `offsetResetPolicy: earliest` behaviour, so a new group at
zero instances is activated rather than stuck at zero (kedacore/keda#2612).
*Persistent lag* (a partition whose backlog never moves): it keeps its instances, as
KEDA does by default; a reading carries backlog counts, not committed offsets, so
KEDA's opt-in `excludePersistentLag` (offset unchanged since the last poll) cannot
be told apart from a backlog that merely stays level, and is not offered.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from tideflow.compiler.ir import ScaleRule
from tideflow.dsl.durations import format_duration
from tideflow.plugins.api import BacklogFailure, BacklogReading

__all__ = [
    "MAX_HOLD",
    "Decision",
    "Reason",
    "Recommendation",
    "ScaleState",
    "decide",
    "format_seconds",
]

_ARROW: Final = " -> "
# The longest scale-down window and idle time rule 8 lengthens to (unless the rule's are longer).
MAX_HOLD: Final = 3600.0


class Reason(enum.StrEnum):
    """The one word that says why a decision came out as it did."""

    ACTIVATE = "activate"  # 0 -> n: the backlog went above activation_lag
    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"
    SCALE_TO_ZERO = "scale_to_zero"  # n -> 0: idle for the cooldown
    STEADY = "steady"  # the backlog asks for the instances that run
    HOLD_TOLERANCE = "hold_tolerance"  # close enough to the current count
    HOLD_WINDOW = "hold_window"  # a stabilization window holds the count
    HOLD_COOLDOWN = "hold_cooldown"  # a scale-down waits for the cooldown
    HOLD_FAILED_READING = "hold_failed_reading"  # the backlog could not be trusted
    FALLBACK = "fallback"  # the backlog could not be trusted; the rule's fallback count


@dataclass(frozen=True, slots=True)
class Recommendation:
    """What the backlog asked for at one instant (after the rule's bounds)."""

    at: datetime
    instances: int


@dataclass(frozen=True, slots=True)
class ScaleState:
    """What one decision leaves for the next. Start with `ScaleState()`."""

    recommendations: tuple[Recommendation, ...] = ()
    started_at: datetime | None = None  # the first decision
    last_active_at: datetime | None = None  # last backlog above activation_lag
    last_scale_up_at: datetime | None = None
    last_scale_down_at: datetime | None = None
    last_zero_at: datetime | None = None  # the last scale-to-zero
    idle_hold: float | None = None  # idle seconds before a scale-to-zero; None: `cooldown`
    down_window: float | None = None  # lengthened scale-down window; None: the rule's
    failures: int = 0  # consecutive failed or stale readings

    def idle_needed(self, rule: ScaleRule) -> float:
        """Seconds without backlog above `activation_lag` before a scale-to-zero."""
        return rule.cooldown if self.idle_hold is None else self.idle_hold

    def scale_down_window(self, rule: ScaleRule) -> float:
        """The scale-down stabilization window in force (rule 8 may have lengthened it)."""
        return rule.scale_down_window if self.down_window is None else self.down_window


@dataclass(frozen=True, slots=True)
class Decision:
    """How many instances to run, and why.

    `recommendation` is what the backlog alone asked for after the rule's bounds
    (None when the reading failed); `explanation` is the arithmetic in words, e.g.
    "backlog 3,412 / 500 per instance = 7; capped by 6 partitions -> 6".
    """

    current: int
    desired: int
    reason: Reason
    explanation: str
    recommendation: int | None = None
    reading_problem: str | None = None  # why the reading was not used, if it was not

    @property
    def changes(self) -> bool:
        """Whether acting on the decision changes the number of instances."""
        return self.desired != self.current


def decide(
    reading: BacklogReading | BacklogFailure,
    current: int,
    rule: ScaleRule,
    partitions_cap: int | None,
    state: ScaleState,
    now: datetime,
    stale_after: float,
) -> tuple[Decision, ScaleState]:
    """The decision for a consumer running `current` instances, given `reading`.

    `partitions_cap` is the topic's partition count when the broker is partitioned
    (instances beyond it would idle), else None. A reading older than `stale_after`
    seconds at `now` counts as failed. Deterministic: the same arguments always give
    the same result.
    """
    if current < 0:
        raise ValueError(f"a consumer cannot run {current} instances")
    if partitions_cap is not None and partitions_cap < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions_cap}")
    if state.started_at is None:
        # the running instances count as a recommendation made now (rule 5)
        state = replace(
            state,
            started_at=now,
            recommendations=(*state.recommendations, Recommendation(now, current)),
        )
    upper = _upper_bound(rule, partitions_cap)
    problem = _reading_problem(reading, now, stale_after)
    if problem is not None:
        return _decide_without_reading(problem, current, rule, upper, state, now)
    assert isinstance(reading, BacklogReading)  # a failure always has a problem
    return _decide_from_backlog(reading, current, rule, partitions_cap, upper, state, now)


# --- the two paths -------------------------------------------------------------------------


def _decide_without_reading(
    problem: str, current: int, rule: ScaleRule, upper: int, state: ScaleState, now: datetime
) -> tuple[Decision, ScaleState]:
    steps = [f"backlog unknown ({problem})"]
    desired, reason = current, Reason.HOLD_FAILED_READING
    if rule.fallback is not None:
        fallback = min(max(rule.fallback, rule.min), upper)
        if fallback > current:
            steps.append(f"fallback {rule.fallback:,}")
            if fallback != rule.fallback:
                steps.append(f"within [{rule.min:,}, {upper:,}] = {fallback:,}")
            desired, reason = fallback, Reason.FALLBACK
        else:
            steps.append(f"fallback {rule.fallback:,} is not above the {current:,} running: hold")
    else:
        steps.append("no fallback declared: hold")
    if desired < rule.min:
        steps.append(f"raised to min {rule.min:,}")
        desired, reason = rule.min, Reason.SCALE_UP
    decision = Decision(
        current=current,
        desired=desired,
        reason=reason,
        explanation=_explain(steps, desired),
        recommendation=None,
        reading_problem=problem,
    )
    next_state = replace(
        state,
        recommendations=_kept(state, Recommendation(now, desired), rule, now),
        last_scale_up_at=now if desired > current else state.last_scale_up_at,
        failures=state.failures + 1,
    )
    return decision, next_state


def _decide_from_backlog(
    reading: BacklogReading,
    current: int,
    rule: ScaleRule,
    partitions_cap: int | None,
    upper: int,
    state: ScaleState,
    now: datetime,
) -> tuple[Decision, ScaleState]:
    backlog = reading.total
    per_instance = rule.lag_per_instance
    wanted = -(-backlog // per_instance)  # ceil without floats
    active = backlog > rule.activation_lag
    steps: list[str] = []
    within_tolerance = False
    if rule.min == 0 and not active:
        steps.append(f"backlog {backlog:,} is not above activation lag {rule.activation_lag:,}")
        steps.append("idle = 0")
        wanted = 0
    else:
        steps.append(f"backlog {backlog:,} / {per_instance:,} per instance = {wanted:,}")
        if current > 0 and wanted != current:
            share = per_instance * current
            ratio = backlog / share
            # compared in messages, and with isclose: a deviation of exactly tolerance x
            # share is within the band (in floats 1100 / 1000 - 1 > 0.1, 0.29 x 100 < 29)
            deviation, band = abs(backlog - share), rule.tolerance * share
            if deviation <= band or math.isclose(deviation, band):
                within_tolerance = True
                steps.append(
                    f"{ratio:.2f} x the {current:,} running is within tolerance "
                    f"{rule.tolerance:g}: keep {current:,}"
                )
                wanted = current

    recommendation = wanted
    if recommendation > rule.max:
        recommendation = rule.max
        steps.append(f"capped by max {rule.max:,}")
    if partitions_cap is not None and recommendation > partitions_cap:
        recommendation = partitions_cap
        steps.append(f"capped by {partitions_cap:,} partitions")
    if recommendation < rule.min:
        recommendation = rule.min
        steps.append(f"raised to min {rule.min:,}")

    history = _kept(state, Recommendation(now, recommendation), rule, now)
    desired, reason = _stabilized(
        current, recommendation, history, rule, upper, state, now, steps, within_tolerance
    )
    next_state = ScaleState(
        recommendations=history,
        started_at=state.started_at,
        last_active_at=now if active else state.last_active_at,
        last_scale_up_at=now if desired > current else state.last_scale_up_at,
        last_scale_down_at=now if desired < current else state.last_scale_down_at,
        last_zero_at=now if desired == 0 < current else state.last_zero_at,
        idle_hold=_idle_hold(current, desired, rule, state, now, steps),
        down_window=_down_window(current, desired, rule, state, now, steps),
        failures=0,
    )
    decision = Decision(
        current=current,
        desired=desired,
        reason=reason,
        explanation=_explain(steps, desired),
        recommendation=recommendation,
    )
    return decision, next_state


def _idle_hold(
    current: int, desired: int, rule: ScaleRule, state: ScaleState, now: datetime, steps: list[str]
) -> float | None:
    """Rule 8: the idle time the next scale-to-zero needs, after this decision."""
    if not (current == 0 < desired) or state.last_zero_at is None:
        return state.idle_hold
    needed = state.idle_needed(rule)
    at_zero = (now - state.last_zero_at).total_seconds()
    if at_zero >= needed:
        return None
    longer = min(2 * needed, max(MAX_HOLD, rule.cooldown))
    steps.append(
        f"back {format_seconds(at_zero)} after scaling to zero: "
        f"zero next only after {format_seconds(longer)} idle"
    )
    return longer


def _down_window(
    current: int, desired: int, rule: ScaleRule, state: ScaleState, now: datetime, steps: list[str]
) -> float | None:
    """Rule 8: the scale-down window after this decision (from zero, `_idle_hold` acts)."""
    if not (0 < current < desired) or state.last_scale_down_at is None:
        return state.down_window
    window = state.scale_down_window(rule)
    held = (now - state.last_scale_down_at).total_seconds()
    if window <= 0 or held >= window:
        return None
    longer = min(2 * window, max(MAX_HOLD, rule.scale_down_window))
    steps.append(
        f"the scale-down {format_seconds(held)} ago is undone: "
        f"scale-downs now wait {format_seconds(longer)}"
    )
    return longer


def _stabilized(
    current: int,
    recommendation: int,
    history: tuple[Recommendation, ...],
    rule: ScaleRule,
    upper: int,
    state: ScaleState,
    now: datetime,
    steps: list[str],
    within_tolerance: bool,
) -> tuple[int, Reason]:
    """Rules 5 to 8: windows, steps, cooldown and bounds, applied to `recommendation`."""
    if current > upper:
        # above the rule's bounds (the rule changed, or a person scaled by hand): at once
        steps.append(f"{current:,} running is more than the {upper:,} allowed")
        return upper, _direction(current, upper)

    down_window = state.scale_down_window(rule)
    up_floor = min([recommendation, *_in_window(history, rule.scale_up_window, now)])
    down_ceiling = max([recommendation, *_in_window(history, down_window, now)])
    desired = current
    if desired < up_floor:
        desired = up_floor
    if desired > down_ceiling:
        desired = down_ceiling
    if desired != recommendation:
        if recommendation > current:
            steps.append(
                f"lowest recommendation in the last {format_seconds(rule.scale_up_window)} "
                f"is {up_floor:,} (scale-up window)"
            )
        elif recommendation < current:
            lengthened = ", lengthened" if state.down_window is not None else ""
            steps.append(
                f"highest recommendation in the last {format_seconds(down_window)} "
                f"is {down_ceiling:,} (scale-down window{lengthened})"
            )

    if desired > current:
        if rule.max_step is not None and desired - current > rule.max_step:
            desired = current + rule.max_step
            steps.append(f"at most {rule.max_step:,} more per decision")
        if desired < rule.min:
            desired = rule.min
            steps.append(f"raised to min {rule.min:,}")
        return desired, _direction(current, desired)

    if desired < current:
        cooldown = timedelta(seconds=rule.cooldown)
        last_down = state.last_scale_down_at
        if last_down is not None and now - last_down < cooldown:
            steps.append(
                f"last scale-down {format_seconds((now - last_down).total_seconds())} ago, "
                f"cooldown {format_seconds(rule.cooldown)}: hold"
            )
            return current, Reason.HOLD_COOLDOWN
        if desired == 0:
            since = state.last_active_at or state.started_at or now
            idle = state.idle_needed(rule)
            if now - since < timedelta(seconds=idle):
                what = "backlog above activation lag" if state.last_active_at else "start"
                steps.append(
                    f"zero only {format_seconds(idle)} after the last "
                    f"{what} ({format_seconds((now - since).total_seconds())} ago): 1"
                )
                desired = 1
                if desired >= current:
                    return current, Reason.HOLD_COOLDOWN
        if rule.max_step is not None and current - desired > rule.max_step:
            desired = current - rule.max_step
            steps.append(f"at most {rule.max_step:,} fewer per decision")
        return desired, _direction(current, desired)

    if current < rule.min:
        steps.append(f"raised to min {rule.min:,}")
        return rule.min, _direction(current, rule.min)
    if recommendation != current:
        return current, Reason.HOLD_WINDOW
    return current, Reason.HOLD_TOLERANCE if within_tolerance else Reason.STEADY


# --- helpers --------------------------------------------------------------------------------


def _reading_problem(
    reading: BacklogReading | BacklogFailure, now: datetime, stale_after: float
) -> str | None:
    if isinstance(reading, BacklogFailure):
        return reading.error or "the backlog could not be read"
    age = (now - reading.taken_at).total_seconds()
    if age > stale_after:
        return f"reading taken {format_seconds(age)} ago, older than {format_seconds(stale_after)}"
    return None


def _upper_bound(rule: ScaleRule, partitions_cap: int | None) -> int:
    """The most instances the rule allows; `min` wins over the partition cap."""
    upper = rule.max if partitions_cap is None else min(rule.max, partitions_cap)
    return max(upper, rule.min)


def _direction(current: int, desired: int) -> Reason:
    if desired > current:
        return Reason.ACTIVATE if current == 0 else Reason.SCALE_UP
    if desired < current:
        return Reason.SCALE_TO_ZERO if desired == 0 else Reason.SCALE_DOWN
    return Reason.STEADY


def _in_window(history: tuple[Recommendation, ...], window: float, now: datetime) -> list[int]:
    # like the HPA: the entries strictly after now - window (the caller adds the latest)
    cutoff = now - timedelta(seconds=window)
    return [r.instances for r in history if r.at > cutoff]


def _kept(
    state: ScaleState, latest: Recommendation, rule: ScaleRule, now: datetime
) -> tuple[Recommendation, ...]:
    """The history with `latest` added, less what no window can use any more.

    Windows end now, so beyond the scale-up window (where only the highest counts) an
    entry that a newer one equals or exceeds can never be the answer: dropping those
    keeps the history short when the scale-down window is long.
    """
    down_cutoff = now - timedelta(seconds=state.scale_down_window(rule))
    up_cutoff = now - timedelta(seconds=rule.scale_up_window)
    kept = [latest]
    highest = latest.instances
    for entry in reversed(state.recommendations):
        if entry.at <= down_cutoff and entry.at <= up_cutoff:
            break  # the history is in time order: everything older is out of both windows
        if entry.at > up_cutoff or entry.instances > highest:
            kept.append(entry)
            highest = max(highest, entry.instances)
    return tuple(reversed(kept))


def _explain(steps: list[str], desired: int) -> str:
    return "; ".join(steps) + _ARROW + f"{desired:,}"


def format_seconds(seconds: float) -> str:
    """A duration as a .flow file writes it, a tenth of a second kept under a minute:
    `90` -> `1m30s`, `0.5` -> `500ms`, `2.5` -> `2.5s` (the scaler's reasons show it)."""
    return format_duration(seconds, tenths=True)
