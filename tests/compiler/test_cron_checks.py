"""What the linter says about cron schedules: W401 and W402 only where daylight saving
really moves or drops a run, and W410 for day fields that combine with "or"."""

from __future__ import annotations

import textwrap
from datetime import date

import pytest
from tideflow.compiler import CompileResult, compile_loaded
from tideflow.dsl.diagnostics import Diagnostic, Severity
from tideflow.dsl.loader import load_source

TODAY = date(2026, 1, 15)


def check(expression: str, zone: str = "Europe/Lisbon") -> CompileResult:
    text = f"""
    flow "f" {{ timezone = "{zone}" }}
    job "a" {{
      run      = "m:f"
      schedule = cron("{expression}")
    }}
    """
    return compile_loaded(load_source(textwrap.dedent(text).lstrip("\n"), "main.flow"), today=TODAY)


def found(result: CompileResult, code: str) -> list[Diagnostic]:
    return [d for d in result.diagnostics if d.code == code]


def test_a_fixed_time_in_a_gap_moves_and_the_warning_says_where_to() -> None:
    (gap,) = found(check("30 1 * * *"), "W401")
    assert gap.message == (
        'cron "30 1 * * *" fires at 01:30, which does not exist in Europe/Lisbon '
        "on 2026-03-29 (clocks go forward)"
    )
    assert gap.label == "it runs once at 02:00 instead"


def test_a_wildcard_job_in_a_gap_is_told_its_runs_are_dropped() -> None:
    result = check("*/20 1 * * *")
    (gap,) = found(result, "W401")
    assert gap.message == (
        'cron "*/20 1 * * *" does not fire at 01:00, which does not exist in Europe/Lisbon '
        "on 2026-03-29 (clocks go forward)"
    )
    assert gap.label == (
        "a wildcard minute or hour follows the wall clock: no runs from 01:00 to 02:00 that day"
    )
    # in the repeated hour it runs in each pass: nothing moves or is dropped
    assert found(result, "W402") == []


def test_a_fixed_time_in_an_overlap_runs_once() -> None:
    (overlap,) = found(check("30 1 * * *"), "W402")
    assert overlap.label == "it runs once, the first time"


def test_an_hourly_job_is_quiet_in_the_overlap() -> None:
    result = check("14 * * * *", "America/New_York")
    assert found(result, "W402") == []
    assert len(found(result, "W401")) == 1  # 02:14 does not exist: that run is dropped


def test_day_fields_that_combine_with_or_are_said_in_words() -> None:
    result = check("0 9 13 * fri", "UTC")
    (hint,) = found(result, "W410")
    assert hint.severity is Severity.WARNING
    assert hint.message == (
        'cron "0 9 13 * fri" runs on day 13 of the month and also on every Friday '
        "(not only on days that are both)"
    )
    assert hint.label == "both day fields are restricted, so a day matching either one will do"
    assert result.ok and result.ir is not None


@pytest.mark.parametrize(
    "expression", ["0 9 */8 * mon", "0 9 13 * *", "0 9 * * fri", "0 9 ? * fri#2", "@weekly"]
)
def test_day_fields_that_must_both_match_are_quiet(expression: str) -> None:
    assert found(check(expression, "UTC"), "W410") == []
