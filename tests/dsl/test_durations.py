"""`dsl/durations.py`: durations read as the language writes them, and written back the
ways the graph, `tideflow plugins` and the scaler's reasons have always shown them."""

from __future__ import annotations

import pytest
from tideflow.dsl.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("10s", 10.0), ("1h30m", 5400.0), (" 2m ", 120.0), ("1w", 604800.0)],
)
def test_language_durations_are_read(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(text, bare_seconds=True) == seconds


@pytest.mark.parametrize("text", ["90", "2.5", "soon", "-5s", "1e3", "", "1h 30m", "nan"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    assert parse_duration(text) is None


def test_bare_numbers_are_seconds_only_when_asked() -> None:
    assert parse_duration("90", bare_seconds=True) == 90.0
    assert parse_duration("2.5", bare_seconds=True) == 2.5
    assert [parse_duration(t, bare_seconds=True) for t in ("-5", "1e3", "inf")] == [None] * 3


@pytest.mark.parametrize(
    ("seconds", "written"),
    [(0.5, "500ms"), (1.0, "1s"), (2.5, "2s"), (90.0, "1m30s"), (5400.0, "1h30m"), (86400, "1d")],
)
def test_durations_are_written_as_in_a_flow(seconds: float, written: str) -> None:
    assert format_duration(seconds) == written


def test_zero_reads_as_its_caller_has_always_shown_it() -> None:
    # the flow graph and the dashboard showed `0ms`, `tideflow plugins` and the scaler `0s`
    assert format_duration(0) == "0s"
    assert format_duration(0, zero="0ms") == "0ms"
    assert format_duration(0.0004, zero="0ms") == "0ms"  # not zero: rounds to it


def test_tenths_keep_a_decimal_under_a_minute() -> None:
    written = [format_duration(s, tenths=True) for s in (0, 0.5, 2.5, 5, 59.5, 60, 90.5)]
    assert written == ["0s", "500ms", "2.5s", "5s", "59.5s", "1m", "1m30s"]


def test_negative_durations_carry_a_sign() -> None:
    assert format_duration(-90) == "-1m30s"
    assert format_duration(-0.5, tenths=True) == "-500ms"
