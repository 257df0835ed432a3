"""Retry delays: fixed and exponential backoff, cap, jitter."""

from __future__ import annotations

import random

import pytest
from tideflow.compiler.ir import Backoff, RetryPolicy
from tideflow.runtime.retry import attempts_left, retry_delay


def test_no_backoff_means_no_wait() -> None:
    policy = RetryPolicy(attempts=3)
    assert [retry_delay(n, policy) for n in (1, 2)] == [0.0, 0.0]


def test_fixed_backoff_waits_the_same_each_time() -> None:
    policy = RetryPolicy(attempts=5, backoff=Backoff("fixed", 7.5))
    assert [retry_delay(n, policy) for n in range(1, 5)] == [7.5, 7.5, 7.5, 7.5]


def test_exponential_backoff_doubles_up_to_the_cap() -> None:
    # the example of docs/language.md: exponential(10s, 5m) waits 10s, 20s, 40s, 80s, 160s, 5m
    policy = RetryPolicy(attempts=10, backoff=Backoff("exponential", 10.0, cap=300.0))
    assert [retry_delay(n, policy) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]


def test_exponential_backoff_with_another_factor() -> None:
    policy = RetryPolicy(attempts=4, backoff=Backoff("exponential", 1.0, factor=3.0))
    assert [retry_delay(n, policy) for n in (1, 2, 3)] == [1.0, 3.0, 9.0]


def test_a_long_series_does_not_overflow() -> None:
    capped = RetryPolicy(attempts=5000, backoff=Backoff("exponential", 1.0, cap=60.0))
    assert retry_delay(4000, capped) == 60.0
    uncapped = RetryPolicy(attempts=5000, backoff=Backoff("exponential", 1.0))
    assert retry_delay(4000, uncapped) == float("inf")


def test_jitter_spreads_delays_by_up_to_half_around_the_delay() -> None:
    policy = RetryPolicy(attempts=3, backoff=Backoff("fixed", 10.0), jitter=True)
    rng = random.Random(7)
    delays = [retry_delay(1, policy, rng) for _ in range(2000)]
    assert min(delays) >= 5.0 and max(delays) <= 15.0
    # spread over the whole range, centred on the delay
    assert min(delays) < 5.5 and max(delays) > 14.5
    assert abs(sum(delays) / len(delays) - 10.0) < 0.3


def test_jitter_is_reproducible_with_a_seeded_generator() -> None:
    policy = RetryPolicy(attempts=3, backoff=Backoff("exponential", 2.0), jitter=True)
    first = [retry_delay(n, policy, random.Random(1)) for n in (1, 2, 3)]
    second = [retry_delay(n, policy, random.Random(1)) for n in (1, 2, 3)]
    assert first == second
    assert first != [2.0, 4.0, 8.0]


def test_jitter_never_exceeds_the_cap() -> None:
    policy = RetryPolicy(attempts=9, backoff=Backoff("exponential", 10.0, cap=30.0), jitter=True)
    rng = random.Random(3)
    delays = [retry_delay(5, policy, rng) for _ in range(500)]
    assert max(delays) == 30.0  # half of the draws land above the cap and are cut
    assert min(delays) >= 15.0


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        retry_delay(0, RetryPolicy(attempts=2, backoff=Backoff("fixed", 1.0)))


@pytest.mark.parametrize(
    ("made", "attempts", "left"), [(1, 1, False), (1, 3, True), (2, 3, True), (3, 3, False)]
)
def test_attempts_left(made: int, attempts: int, left: bool) -> None:
    assert attempts_left(made, RetryPolicy(attempts=attempts)) is left
