"""The autoscaler's decision function: tables of single decisions, KEDA's edge cases,
sequences over time (windows, cooldown, flapping loads) and failed readings."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tideflow.compiler.ir import ScaleRule
from tideflow.plugins.api import BacklogFailure, BacklogReading
from tideflow.runtime.decide import (
    MAX_HOLD,
    Decision,
    Reason,
    ScaleState,
    decide,
    format_seconds,
)

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
STALE_AFTER = 10.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def rule(**settings: Any) -> ScaleRule:
    values: dict[str, Any] = {"max": 10, "lag_per_instance": 100, "poll": 5.0, "cooldown": 60.0}
    values.update(settings)
    return ScaleRule(**values)


def reading(
    total: int,
    *,
    when: float = 0.0,
    partitions: int = 1,
    per_partition: dict[int, int] | None = None,
) -> BacklogReading:
    spread = per_partition if per_partition is not None else ({0: total} if total else {})
    return BacklogReading("orders", "workers", total, spread, partitions, at(when))


def failure(when: float = 0.0, error: str = "no answer within 5s") -> BacklogFailure:
    return BacklogFailure("orders", "workers", error, at(when))


def once(scale: ScaleRule, backlog: int, current: int, cap: int | None = None) -> Decision:
    decision, _ = decide(reading(backlog), current, scale, cap, ScaleState(), T0, STALE_AFTER)
    return decision


@dataclass
class Loop:
    """Feeds readings to `decide` at given times and runs what it decides, as the
    live loop does."""

    scale: ScaleRule
    current: int = 0
    cap: int | None = None
    state: ScaleState = field(default_factory=ScaleState)
    log: list[tuple[float, Decision]] = field(default_factory=list)

    def step(self, t: float, backlog: int | None) -> Decision:
        seen = failure(t) if backlog is None else reading(backlog, when=t)
        decision, self.state = decide(
            seen, self.current, self.scale, self.cap, self.state, at(t), STALE_AFTER
        )
        self.current = decision.desired
        self.log.append((t, decision))
        return decision

    def run(self, start: float, end: float, backlog: int | None) -> list[Decision]:
        """One decision per poll from `start` (included) to `end` (excluded)."""
        decisions = []
        t = start
        while t < end:
            decisions.append(self.step(t, backlog))
            t += self.scale.poll
        return decisions

    @property
    def changes(self) -> list[tuple[float, int, int]]:
        return [(t, d.current, d.desired) for t, d in self.log if d.changes]


# --- one decision --------------------------------------------------------------------------

CASES = [
    # id, rule settings, backlog, current, partitions cap, desired, reason, explanation
    (
        "ceil of backlog over lag per instance",
        {"max": 12, "lag_per_instance": 500},
        3_412,
        2,
        None,
        7,
        Reason.SCALE_UP,
        "backlog 3,412 / 500 per instance = 7 -> 7",
    ),
    (
        "capped at the partition count",
        {"max": 12, "lag_per_instance": 500},
        3_412,
        2,
        6,
        6,
        Reason.SCALE_UP,
        "backlog 3,412 / 500 per instance = 7; capped by 6 partitions -> 6",
    ),
    (
        "capped at max",
        {"max": 12},
        1_234_567,
        3,
        None,
        12,
        Reason.SCALE_UP,
        "backlog 1,234,567 / 100 per instance = 12,346; capped by max 12 -> 12",
    ),
    (
        "min wins over the partition cap",
        {"min": 4},
        900,
        4,
        2,
        4,
        Reason.STEADY,
        "backlog 900 / 100 per instance = 9; capped by 2 partitions; raised to min 4 -> 4",
    ),
    (
        "activated from zero above the activation lag",
        {"activation_lag": 10},
        11,
        0,
        None,
        1,
        Reason.ACTIVATE,
        "backlog 11 / 100 per instance = 1 -> 1",
    ),
    (
        "not activated at the activation lag itself",
        {"activation_lag": 10},
        10,
        0,
        None,
        0,
        Reason.STEADY,
        "backlog 10 is not above activation lag 10; idle = 0 -> 0",
    ),
    (
        "activation takes priority over the scaling value",
        {"activation_lag": 1_000},
        500,
        0,
        None,
        0,
        Reason.STEADY,
        "backlog 500 is not above activation lag 1,000; idle = 0 -> 0",
    ),
    (
        "min of 1 ignores the activation lag",
        {"min": 1, "activation_lag": 1_000},
        500,
        1,
        None,
        5,
        Reason.SCALE_UP,
        "backlog 500 / 100 per instance = 5 -> 5",
    ),
    (
        "inside the tolerance band",
        {},
        1_050,
        10,
        None,
        10,
        Reason.HOLD_TOLERANCE,
        "backlog 1,050 / 100 per instance = 11; 1.05 x the 10 running is within tolerance 0.1:"
        " keep 10 -> 10",
    ),
    (
        "exactly on the tolerance band's edge",
        {},
        1_100,
        10,
        None,
        10,
        Reason.HOLD_TOLERANCE,
        "backlog 1,100 / 100 per instance = 11; 1.10 x the 10 running is within tolerance 0.1:"
        " keep 10 -> 10",
    ),
    (
        "on the band's edge where 0.29 x 100 is 28.999... in floats",
        {"tolerance": 0.29},
        129,
        1,
        None,
        1,
        Reason.HOLD_TOLERANCE,
        "backlog 129 / 100 per instance = 2; 1.29 x the 1 running is within tolerance 0.29:"
        " keep 1 -> 1",
    ),
    (
        "just outside the tolerance band",
        {"max": 20},
        1_101,
        10,
        None,
        12,
        Reason.SCALE_UP,
        "backlog 1,101 / 100 per instance = 12 -> 12",
    ),
    (
        "at most max_step more per decision",
        {"max_step": 2},
        1_000,
        1,
        None,
        3,
        Reason.SCALE_UP,
        "backlog 1,000 / 100 per instance = 10; at most 2 more per decision -> 3",
    ),
    (
        "a fresh loop waits the scale-down window",
        {"scale_down_window": 60.0},
        0,
        5,
        None,
        5,
        Reason.HOLD_WINDOW,
        "backlog 0 is not above activation lag 0; idle = 0; highest recommendation in the last"
        " 1m is 5 (scale-down window) -> 5",
    ),
    (
        "above max: down at once",
        {"max": 4},
        10_000,
        6,
        None,
        4,
        Reason.SCALE_DOWN,
        "backlog 10,000 / 100 per instance = 100; capped by max 4; 6 running is more than the"
        " 4 allowed -> 4",
    ),
    (
        "below min: up at once",
        {"min": 3},
        0,
        1,
        None,
        3,
        Reason.SCALE_UP,
        "backlog 0 / 100 per instance = 0; raised to min 3 -> 3",
    ),
]


@pytest.mark.parametrize(
    ("settings", "backlog", "current", "cap", "desired", "reason", "explanation"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_one_decision(
    settings: dict[str, Any],
    backlog: int,
    current: int,
    cap: int | None,
    desired: int,
    reason: Reason,
    explanation: str,
) -> None:
    decision = once(rule(**settings), backlog, current, cap)
    assert (decision.desired, decision.reason) == (desired, reason)
    assert decision.explanation == explanation
    assert decision.changes == (desired != current)
    assert decision.reading_problem is None


def test_the_same_inputs_give_the_same_decision() -> None:
    scale = rule(max_step=3, scale_down_window=30.0)
    loop = Loop(scale, current=4)
    loop.run(0, 60, 2_000)
    state = loop.state
    first = decide(reading(150, when=60), 7, scale, 4, state, at(60), STALE_AFTER)
    second = decide(reading(150, when=60), 7, scale, 4, state, at(60), STALE_AFTER)
    assert first == second
    assert loop.state is state  # nothing was changed in place


def test_a_negative_count_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot run -1 instances"):
        once(rule(), 10, -1)


# --- KEDA's edge cases ---------------------------------------------------------------------


def test_no_committed_offset_activates_a_consumer_at_zero() -> None:
    """A group that never committed reports everything published since it was ensured
    (KEDA's `earliest`): the consumer is activated instead of staying at zero
    (kedacore/keda#2612's chicken and egg)."""
    never_consumed = reading(250, partitions=3, per_partition={0: 100, 1: 100, 2: 50})
    decision, state = decide(never_consumed, 0, rule(), 3, ScaleState(), T0, STALE_AFTER)
    assert (decision.desired, decision.reason) == (3, Reason.ACTIVATE)
    assert state.last_active_at == T0


def test_persistent_lag_keeps_a_steady_count() -> None:
    """A backlog stuck on one partition (a message nobody can handle) holds its
    instances: no runaway growth, no oscillation, never zero."""
    loop = Loop(rule(), current=0, cap=6)
    loop.run(0, 1800, 730)
    assert loop.changes == [(0, 0, 6)]  # 8 wanted, capped by 6 partitions, then steady
    assert {d.reason for _, d in loop.log[1:]} == {Reason.STEADY}


def test_the_partition_count_of_the_reading_caps_every_decision() -> None:
    loop = Loop(rule(max=50), current=1, cap=12)
    for t, backlog in enumerate([100_000, 5_000, 99_999, 1_300]):
        loop.step(t * 5.0, backlog)
    assert max(d.desired for _, d in loop.log) == 12


# --- over time -----------------------------------------------------------------------------


def test_scale_up_is_immediate_and_scale_down_waits_the_window() -> None:
    loop = Loop(rule(scale_down_window=60.0, cooldown=1.0, min=1), current=1)
    assert loop.step(0, 1_000).desired == 10
    held = loop.run(5, 60, 0)
    assert {d.reason for d in held} == {Reason.HOLD_WINDOW}
    assert {d.desired for d in held} == {10}
    # the recommendation of 10 made at 0s leaves the window at 60s
    assert loop.step(60, 0).desired == 1
    assert loop.changes == [(0, 1, 10), (60, 10, 1)]


def test_the_highest_recommendation_in_the_window_wins() -> None:
    loop = Loop(rule(scale_down_window=60.0, cooldown=1.0, min=1), current=1)
    loop.step(0, 1_000)  # 10
    loop.step(30, 600)  # 6: held at 10
    loop.step(45, 200)  # 2: held at 10
    assert loop.step(60, 200).desired == 6  # 10 left the window; 6 is the highest left
    assert loop.step(75, 200).desired == 6  # 6 from 30s is still within it
    assert loop.step(90, 200).desired == 2
    last = loop.log[-1][1]
    assert last.reason is Reason.SCALE_DOWN


def test_a_scale_down_waits_the_cooldown_after_the_previous_one() -> None:
    loop = Loop(rule(scale_down_window=0.0, cooldown=30.0, min=1), current=10)
    assert loop.step(0, 800).desired == 8
    held = loop.step(5, 500)
    assert (held.desired, held.reason) == (8, Reason.HOLD_COOLDOWN)
    assert held.explanation.endswith("last scale-down 5s ago, cooldown 30s: hold -> 8")
    loop.run(10, 30, 500)
    assert loop.step(30, 500).desired == 5


def test_zero_comes_only_a_cooldown_after_the_last_activity() -> None:
    loop = Loop(rule(scale_down_window=0.0, cooldown=60.0), current=0)
    assert loop.step(0, 300).desired == 3
    down = loop.step(5, 0)
    assert (down.desired, down.reason) == (1, Reason.SCALE_DOWN)
    assert "zero only 1m after the last backlog above activation lag (5s ago): 1" in (
        down.explanation
    )
    idle = loop.run(10, 65, 0)  # the last scale-down (at 5s) also needs a cooldown
    assert {d.reason for d in idle} == {Reason.HOLD_COOLDOWN}
    zero = loop.step(65, 0)
    assert (zero.desired, zero.reason) == (0, Reason.SCALE_TO_ZERO)


def test_a_trickle_does_not_flap_between_zero_and_one() -> None:
    """A consumer back soon after its scale-to-zero must idle twice as long before the
    next one; a consumer that stayed at zero long enough starts again from cooldown."""
    loop = Loop(rule(scale_down_window=0.0, cooldown=60.0), current=1)
    loop.step(0, 50)
    loop.run(5, 60, 0)
    assert loop.step(60, 0).desired == 0
    back = loop.step(65, 50)  # 5s at zero: a trickle, not idleness
    assert back.reason is Reason.ACTIVATE
    assert "back 5s after scaling to zero: zero next only after 2m idle" in back.explanation
    loop.run(70, 185, 0)
    assert loop.current == 1  # 2m from the last activity at 65s is 185s
    assert loop.step(185, 0).desired == 0
    loop.step(190, 50)  # back after 5s again: 4m now
    assert loop.state.idle_hold == 240.0
    loop.run(195, 430, 0)
    assert loop.step(430, 0).desired == 0
    loop.run(435, 1000, 0)  # stays at zero well past 4m: the next wait is the cooldown again
    loop.step(1000, 50)
    assert loop.state.idle_hold is None
    loop.run(1005, 1060, 0)
    assert loop.step(1060, 0).desired == 0


def test_an_undone_scale_down_doubles_the_window() -> None:
    """A load that N instances keep at an empty backlog looks like one that needs none:
    a scale-down that has to be undone makes the next ones wait twice as long."""
    loop = Loop(rule(scale_down_window=60.0, cooldown=1.0, min=1), current=1)
    loop.step(0, 300)  # 3
    loop.run(5, 60, 0)
    assert loop.step(60, 0).desired == 1
    back = loop.step(65, 300)
    assert (back.desired, back.reason) == (3, Reason.SCALE_UP)
    assert "the scale-down 5s ago is undone: scale-downs now wait 2m" in back.explanation
    assert loop.state.down_window == 120.0
    held = loop.run(70, 185, 0)
    assert {d.desired for d in held} == {3}
    assert "highest recommendation in the last 2m is 3 (scale-down window, lengthened)" in (
        held[-1].explanation
    )
    assert loop.step(185, 0).desired == 1
    loop.run(190, 400, 0)  # the scale-down holds for longer than its window
    loop.step(400, 300)
    assert loop.state.down_window is None  # back to the rule's 60s
    loop.run(405, 460, 0)
    assert loop.step(460, 0).desired == 1


def test_the_idle_hold_stops_growing() -> None:
    loop = Loop(rule(scale_down_window=0.0, cooldown=60.0), current=1)
    t = 0.0
    for _ in range(12):
        loop.step(t, 50)
        while loop.current:
            t += 5
            loop.step(t, 0)
        t += 5
    assert loop.state.idle_hold == MAX_HOLD


@pytest.mark.parametrize(
    ("low", "high"),
    [(450, 1_050), (90, 310), (0, 250)],
    ids=["two counts apart", "around a small count", "empty and busy"],
)
def test_a_flapping_load_does_not_make_the_count_flap(low: int, high: int) -> None:
    """The backlog swings every poll; the count goes up once and stays."""
    loop = Loop(rule(max=20, scale_down_window=60.0, cooldown=60.0, min=1), current=1)
    for index in range(240):  # 20 minutes of 5s polls
        loop.step(index * 5.0, low if index % 2 else high)
    assert len(loop.changes) == 1
    assert loop.changes[0][2] == -(-high // 100)


def test_a_load_on_a_boundary_stays_within_the_tolerance() -> None:
    loop = Loop(rule(scale_down_window=0.0, cooldown=1.0, min=1), current=10)
    for index in range(120):
        loop.step(index * 5.0, 1_090 if index % 2 else 950)
    assert loop.changes == []


def test_a_scale_up_window_takes_the_lowest_recommendation() -> None:
    loop = Loop(rule(scale_up_window=20.0, min=1), current=1)
    first = loop.step(0, 500)  # the running count is the window's first recommendation
    assert (first.desired, first.reason) == (1, Reason.HOLD_WINDOW)
    assert "lowest recommendation in the last 20s is 1 (scale-up window)" in first.explanation
    loop.step(5, 100)  # 1 again, at 5s
    assert loop.step(10, 900).desired == 1
    assert loop.step(25, 900).desired == 9  # only 9s (from 10s on) are left in the window


def test_max_step_limits_scale_downs_too() -> None:
    loop = Loop(rule(scale_down_window=0.0, cooldown=1.0, max_step=3, min=1), current=10)
    decision = loop.step(0, 100)
    assert decision.desired == 7
    assert decision.explanation.endswith("at most 3 fewer per decision -> 7")


# --- failed and stale readings --------------------------------------------------------------

FAILURES = [
    ("hold without a fallback", {}, 5, 5, Reason.HOLD_FAILED_READING, "no fallback declared"),
    ("up to a higher fallback", {"fallback": 8}, 5, 8, Reason.FALLBACK, "fallback 8"),
    (
        "never down to a lower fallback",
        {"fallback": 3},
        5,
        5,
        Reason.HOLD_FAILED_READING,
        "fallback 3 is not above the 5 running: hold",
    ),
    ("a fallback within max", {"fallback": 40}, 2, 10, Reason.FALLBACK, "within [0, 10] = 10"),
    ("at zero stays at zero", {}, 0, 0, Reason.HOLD_FAILED_READING, "no fallback declared"),
    ("from zero to the fallback", {"fallback": 2}, 0, 2, Reason.FALLBACK, "fallback 2"),
    ("up to min", {"min": 2}, 1, 2, Reason.SCALE_UP, "raised to min 2"),
]


@pytest.mark.parametrize(
    ("settings", "current", "desired", "reason", "words"),
    [case[1:] for case in FAILURES],
    ids=[case[0] for case in FAILURES],
)
def test_a_failed_reading(
    settings: dict[str, Any], current: int, desired: int, reason: Reason, words: str
) -> None:
    decision, state = decide(
        failure(), current, rule(**settings), None, ScaleState(), T0, STALE_AFTER
    )
    assert (decision.desired, decision.reason) == (desired, reason)
    assert decision.explanation.startswith("backlog unknown (no answer within 5s); ")
    assert words in decision.explanation
    assert decision.reading_problem == "no answer within 5s"
    assert decision.recommendation is None
    assert state.failures == 1


def test_a_stale_reading_counts_as_failed() -> None:
    old = reading(0, when=-30)
    decision, _ = decide(old, 5, rule(), None, ScaleState(), T0, STALE_AFTER)
    assert (decision.desired, decision.reason) == (5, Reason.HOLD_FAILED_READING)
    assert decision.reading_problem == "reading taken 30s ago, older than 10s"


def test_failures_hold_through_the_window_and_recovery_waits_it_again() -> None:
    loop = Loop(rule(scale_down_window=60.0, cooldown=1.0), current=1)
    loop.step(0, 800)  # 8
    failed = loop.run(5, 300, None)
    assert {d.desired for d in failed} == {8}
    assert loop.state.failures == len(failed)
    # readings are back, and say 1: the count held during the failure counts as a
    # recommendation, so the scale-down waits a full window from the last failure
    back = loop.run(300, 355, 100)
    assert {d.desired for d in back} == {8}
    assert loop.state.failures == 0
    assert loop.step(355, 100).desired == 1


@settings(max_examples=200, deadline=None)
@given(
    current=st.integers(0, 30),
    minimum=st.integers(0, 5),
    maximum=st.integers(5, 20),
    fallback=st.none() | st.integers(0, 30),
    cap=st.none() | st.integers(1, 16),
    backlogs=st.lists(st.integers(0, 5_000), max_size=20),
)
def test_a_failure_never_scales_down_or_to_zero(
    current: int,
    minimum: int,
    maximum: int,
    fallback: int | None,
    cap: int | None,
    backlogs: list[int],
) -> None:
    scale = rule(min=minimum, max=maximum, fallback=fallback, scale_down_window=30.0)
    loop = Loop(scale, current=current, cap=cap)
    for index, backlog in enumerate(backlogs):
        loop.step(index * 5.0, backlog)
    before = loop.current
    decision = loop.step(len(backlogs) * 5.0, None)
    assert decision.desired >= before
    assert decision.desired > 0 or before == 0


@settings(max_examples=150, deadline=None)
@given(
    backlogs=st.lists(st.integers(0, 3_000), min_size=1, max_size=60),
    minimum=st.integers(0, 3),
    cap=st.none() | st.integers(1, 12),
    window=st.sampled_from([0.0, 15.0, 60.0]),
    cooldown=st.sampled_from([5.0, 30.0, 60.0]),
    max_step=st.none() | st.integers(1, 4),
)
def test_decisions_keep_their_promises(
    backlogs: list[int],
    minimum: int,
    cap: int | None,
    window: float,
    cooldown: float,
    max_step: int | None,
) -> None:
    scale = rule(
        min=minimum,
        max=10,
        scale_down_window=window,
        cooldown=cooldown,
        max_step=max_step,
    )
    loop = Loop(scale, current=minimum, cap=cap)
    for index, backlog in enumerate(backlogs):
        loop.step(index * 5.0, backlog)
    upper = max(minimum, min(10, cap or 10))
    for t, decision in loop.log:
        assert minimum <= decision.desired <= upper
        if max_step is not None:
            assert abs(decision.desired - decision.current) <= max_step
        if decision.desired < decision.current:
            # never below a recommendation still inside the scale-down window
            seen = [d.recommendation for s, d in loop.log if t - window < s < t]
            assert decision.desired >= max(r or 0 for r in [decision.recommendation, *seen])
    downs = [t for t, d in loop.log if d.desired < d.current]
    assert all(b - a >= cooldown for a, b in itertools.pairwise(downs))


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (0, 0.5, 2.5, 5, 60, 90, 300, 3_600, 5_400)] == [
        "0s",
        "500ms",
        "2.5s",
        "5s",
        "1m",
        "1m30s",
        "5m",
        "1h",
        "1h30m",
    ]
