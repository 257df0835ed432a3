"""`compiler/describe.py`: one `describe_schedule`, told the way each place has told it."""

from __future__ import annotations

from tideflow.compiler.describe import describe_schedule
from tideflow.compiler.ir import Schedule
from tideflow.dsl.durations import format_duration

EVERY = Schedule(kind="every", timezone="UTC", interval=5400.0)
CRON_UTC = Schedule(kind="cron", timezone="UTC", cron="0 2 * * *")
CRON_PARIS = Schedule(kind="cron", timezone="Europe/Paris", cron="@daily")


def test_by_default_as_the_dashboard_says_it() -> None:
    assert describe_schedule(EVERY) == "every 1h30m"
    assert describe_schedule(CRON_UTC) == "cron 0 2 * * * (UTC)"
    assert describe_schedule(CRON_PARIS) == "cron @daily (Europe/Paris)"


def test_each_place_passes_what_differs() -> None:
    # the graph: a middle dot before the zone
    assert describe_schedule(CRON_UTC, zone=" · {}") == "cron 0 2 * * * · UTC"
    # the run tables: the zone only when it is not UTC, their own interval text
    assert describe_schedule(CRON_UTC, zone=" {}", show_utc=False) == "cron 0 2 * * *"
    paris = describe_schedule(CRON_PARIS, zone=" {}", show_utc=False)
    assert paris == "cron @daily Europe/Paris"
    assert describe_schedule(EVERY, interval=lambda s: f"{s:g}s") == "every 5400s"
    zero = Schedule(kind="every", timezone="UTC", interval=0.0)
    assert describe_schedule(zero, interval=lambda s: format_duration(s, zero="0ms")) == "every 0ms"
