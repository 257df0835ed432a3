"""The dashboard's pure parts: balance, the chart, counting schedule instants, months."""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest
from tideflow.compiler.ir import EnvRef, Schedule, SecretRef
from tideflow.runtime.model import InstanceRow, InstanceStats, InstanceStatus
from tideflow.runtime.schedule import (
    DAY_CAP,
    count_fires,
    count_fires_by_day,
    day_windows,
    end_of_month,
    fire_times,
)

from tideflow.web.charts import downsample, nice_ceiling, scaling_chart
from tideflow.web.models import HistoryPoint
from tideflow.web.service import _command_text, assess_balance, describe_value

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LISBON = zoneinfo.ZoneInfo("Europe/Lisbon")


def instance(
    name: str, partitions: tuple[int, ...], *, in_flight: int = 0, rate: float = 0.0
) -> InstanceRow:
    return InstanceRow(
        id=name,
        flow="f",
        consumer="c",
        host="h",
        pid=1,
        started_at=NOW,
        heartbeat_at=NOW,
        stopped_at=None,
        stats=InstanceStats(
            status=InstanceStatus.RUNNING, partitions=partitions, in_flight=in_flight, rate=rate
        ),
    )


def test_an_even_backlog_is_balanced() -> None:
    verdict = assess_balance({0: 500, 1: 520, 2: 480}, [instance("a", (0, 1, 2))], 100)
    assert verdict.balanced is True
    assert verdict.skew == pytest.approx(520 / 500)


def test_one_hot_partition_is_named() -> None:
    verdict = assess_balance({0: 100, 1: 100, 2: 2800, 3: 0}, [], 100)
    assert verdict.balanced is False
    assert verdict.summary.startswith("unbalanced: partition 2 holds 93% of the backlog")
    assert verdict.skew == pytest.approx(2800 / 750)


def test_an_instance_without_partitions_makes_it_unbalanced() -> None:
    alive = [instance("a", (0, 1)), instance("b", ()), instance("c", (2, 3))]
    verdict = assess_balance({0: 300, 1: 300, 2: 300, 3: 300}, alive, 100)
    assert verdict.balanced is False
    assert "1 of 3 live instances hold no partition" in verdict.summary


def test_too_little_backlog_gives_no_verdict() -> None:
    assert assess_balance({0: 3, 1: 0}, [], 100).balanced is None
    assert assess_balance({}, [], 100).summary == "no per-partition backlog reported yet"
    assert assess_balance({0: 999}, [], 100).summary == "one partition: nothing to balance"


def test_even_partitions_with_an_idle_instance_and_a_backlog_are_unbalanced() -> None:
    alive = [
        instance("a", (0,), in_flight=10, rate=1.0),
        instance("b", (1,), in_flight=10),
        instance("c", (2,)),  # waits for what "a" took of partition 2 before it joined
    ]
    verdict = assess_balance({0: 300, 1: 300, 2: 300}, alive, 100)
    assert verdict.balanced is False
    assert "1 of 3 live instances handle nothing while 900 messages wait" in verdict.summary


def test_one_partition_with_idle_instances_and_a_backlog_is_unbalanced() -> None:
    # issue 11: one NATS instance held the whole backlog, the page said "nothing to balance"
    alive = [instance("a", (), in_flight=54, rate=2.0), instance("b", ()), instance("c", ())]
    verdict = assess_balance({0: 54}, alive, 20)
    assert verdict.balanced is False
    assert verdict.summary.startswith(
        "unbalanced: 2 of 3 live instances handle nothing while 54 messages wait"
    )


def test_one_partition_shared_by_every_instance_is_balanced() -> None:
    alive = [instance(name, (), in_flight=10, rate=1.0) for name in "abc"]
    verdict = assess_balance({0: 30}, alive, 20)
    assert verdict.balanced is True
    assert verdict.summary == "balanced: all 3 live instances are handling messages"


def test_one_partition_without_backlog_or_work_gives_no_verdict() -> None:
    alive = [instance("a", ()), instance("b", ())]
    assert assess_balance({0: 0}, alive, 20).balanced is None
    busy_one = [instance("a", (), in_flight=1), instance("b", ())]
    assert assess_balance({0: 0}, busy_one, 20).balanced is None


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (1, 1), (7, 10), (11, 20), (201, 250), (3412, 5000)]
)
def test_axis_tops_are_round_numbers(value: float, ceiling: float) -> None:
    assert nice_ceiling(value) == ceiling


def point(minute: int, backlog: int | None, current: int = 1, desired: int = 1) -> HistoryPoint:
    return HistoryPoint(
        at=NOW + timedelta(minutes=minute), backlog=backlog, current=current, desired=desired
    )


def test_downsampling_keeps_a_spike() -> None:
    points = [point(i, 10) for i in range(2000)]
    points[1234] = point(1234, 99_999)
    reduced = downsample(points, limit=100)
    assert len(reduced) <= 100
    assert max(p.backlog or 0 for p in reduced) == 99_999
    assert reduced[-1].at == points[-1].at


def test_the_chart_draws_backlog_steps_and_failed_readings() -> None:
    points = [point(0, 0, 0, 0), point(5, 400, 0, 4), point(10, None, 4, 4), point(15, 100, 4, 1)]
    svg = scaling_chart(
        points, start=NOW, end=NOW + timedelta(minutes=20), zone=UTC, max_instances=4
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<polyline") == 3  # backlog before the failure, desired, current
    assert "backlog reading failed" in svg
    assert "12:05:00 · backlog 400 · 0 → 4 instances" in svg
    labels = re.findall(r'fill="#d97706">([^<]+)</text>', svg)
    assert labels == ["0", "125", "250", "375", "500"]


def test_an_empty_chart_says_so() -> None:
    svg = scaling_chart([], start=NOW, end=NOW + timedelta(hours=1), zone=UTC)
    assert "no autoscaler decisions in this window" in svg


def test_the_end_of_the_month_is_on_the_display_zones_wall_clock() -> None:
    # Lisbon is UTC+1 in summer: its 31 July ends at 22:59:59.999999 UTC
    assert end_of_month(datetime(2026, 7, 10, tzinfo=UTC), LISBON) == datetime(
        2026, 7, 31, 22, 59, 59, 999999, tzinfo=UTC
    )
    # after the change on 25 October, Lisbon is on UTC again
    assert end_of_month(datetime(2026, 10, 31, 23, 30, tzinfo=UTC), LISBON) == datetime(
        2026, 10, 31, 23, 59, 59, 999999, tzinfo=UTC
    )
    assert end_of_month(datetime(2026, 12, 31, 23, 0, tzinfo=UTC), UTC).year == 2026


def test_every_schedules_are_counted_by_arithmetic() -> None:
    schedule = Schedule(kind="every", timezone="UTC", interval=5.0)
    lo, hi = NOW, NOW + timedelta(days=1) - timedelta(microseconds=1)
    count, exact, first = count_fires(schedule, lo, hi)
    assert (count, exact, first) == (17280, True, NOW)
    assert count == sum(1 for _ in fire_times(schedule, lo - timedelta(microseconds=1), hi))


def test_crowded_cron_days_are_a_lower_bound() -> None:
    every_minute = Schedule(kind="cron", timezone="UTC", cron="* * * * *")
    count, exact, first = count_fires(every_minute, NOW, NOW + timedelta(hours=23, minutes=59))
    assert (count, exact, first) == (DAY_CAP, False, NOW)
    nightly = Schedule(kind="cron", timezone="Europe/Lisbon", cron="30 1 * * *")
    # 29 March 2026: 01:30 does not exist in Lisbon (01:00 -> 02:00); it fires at 02:00 WEST
    day = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
    count, exact, first = count_fires(
        nightly, day, day + timedelta(days=1) - timedelta(microseconds=1)
    )
    assert (count, exact) == (1, True)
    assert first == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_values_are_shown_as_written_and_never_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PASSWORD", "hunter2")
    assert describe_value(SecretRef("DB_PASSWORD")) == 'secret("DB_PASSWORD")'
    assert describe_value(EnvRef("REGION", "eu-west")) == 'env("REGION", "eu-west")'
    assert describe_value(EnvRef("REGION")) == 'env("REGION")'
    command = ("psql", "--password", SecretRef("DB_PASSWORD"), "a b")
    assert _command_text(command) == "psql --password secret(\"DB_PASSWORD\") 'a b'"
    assert "hunter2" not in _command_text(command)


@pytest.mark.parametrize(
    ("cron", "schedule_zone", "display_zone"),
    [
        ("*/5 * * * *", "Europe/Lisbon", "Europe/Lisbon"),
        ("30 1 * * *", "Europe/Lisbon", "Europe/Lisbon"),  # in the spring gap
        ("0 */2 * * *", "America/New_York", "Europe/Lisbon"),  # zones change on other days
        ("15 3 * * 1-5", "UTC", "Europe/Lisbon"),  # names weekdays: counted day by day
        ("@hourly", "Australia/Lord_Howe", "UTC"),  # a half-hour clock change
    ],
)
def test_counting_by_day_agrees_with_walking_every_instant(
    cron: str, schedule_zone: str, display_zone: str
) -> None:
    schedule = Schedule(kind="cron", timezone=schedule_zone, cron=cron)
    for start, until in [
        (datetime(2026, 3, 20, 9, 17, tzinfo=UTC), datetime(2026, 4, 10, tzinfo=UTC)),
        (datetime(2026, 10, 20, tzinfo=UTC), datetime(2026, 11, 5, 13, 0, tzinfo=UTC)),
    ]:
        days = day_windows(start, until, zoneinfo.ZoneInfo(display_zone))
        walked = []
        for _, lo, hi in days:
            instants = list(fire_times(schedule, lo - timedelta(microseconds=1), hi))
            walked.append((len(instants), True, instants[0] if instants else None))
        assert count_fires_by_day(schedule, days) == walked
