"""Duration options of `tideflow run` and `tideflow trigger` (`--grace`, `--duration`,
`--timeout`): the language's form or plain seconds, read by the one `parse_duration`."""

from __future__ import annotations

import click
import pytest

from tideflow.cli.common import parse_seconds


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30.0), ("1h30m", 5400.0), ("90", 90.0)])
def test_a_duration_or_plain_seconds(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


def test_a_negative_duration_is_refused_as_such() -> None:
    with pytest.raises(click.BadParameter, match="a duration cannot be negative"):
        parse_seconds("-5")


@pytest.mark.parametrize("text", ["nan", "inf", "1e3", "soon"])
def test_what_is_no_duration_is_refused(text: str) -> None:
    # float() once let `nan` and `inf` through as a grace period or a time limit
    with pytest.raises(click.BadParameter, match="is not a duration such as 30s"):
        parse_seconds(text)
