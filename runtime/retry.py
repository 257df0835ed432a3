"""Retry delays: fixed or exponential backoff, with a cap and optional jitter.

Jitter is *equal jitter* of ±50%: the delay is multiplied by a factor drawn
uniformly from [0.5, 1.5], so retries of jobs that failed together spread out
while the mean delay stays what the policy says. The cap bounds the result,
jitter included: `exponential(10s, 5m)` never waits more than five minutes.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from tideflow.compiler.ir import RetryPolicy

JITTER_LOW: Final = 0.5
JITTER_HIGH: Final = 1.5


def retry_delay(
    failed_attempt: int, policy: RetryPolicy, rng: random.Random | None = None
) -> float:
    """Seconds to wait after attempt number `failed_attempt` (1-based) failed.

    No backoff means no wait. Fixed backoff waits `initial` each time; exponential
    waits `initial * factor ** (failed_attempt - 1)`, at most `cap`. With
    `policy.jitter` the delay is scaled by a factor in [0.5, 1.5] from `rng` (the
    module's shared generator when none is given), then capped again.
    """
    if failed_attempt < 1:
        raise ValueError(f"attempt numbers start at 1, not {failed_attempt}")
    backoff = policy.backoff
    if backoff is None:
        return 0.0
    if backoff.kind == "fixed":
        delay = backoff.initial
    elif backoff.kind == "exponential":
        try:
            delay = backoff.initial * backoff.factor ** (failed_attempt - 1)
        except OverflowError:  # a long retry series: the cap (or infinity) is the answer
            delay = math.inf
    else:
        raise ValueError(f"unknown backoff kind {backoff.kind!r}")
    if backoff.cap is not None:
        delay = min(delay, backoff.cap)
    if policy.jitter:
        delay *= (rng or random).uniform(JITTER_LOW, JITTER_HIGH)
        if backoff.cap is not None:
            delay = min(delay, backoff.cap)
    return max(0.0, delay)


def attempts_left(attempts_made: int, policy: RetryPolicy) -> bool:
    """Whether another attempt may follow `attempts_made` failed ones."""
    return attempts_made < policy.attempts
