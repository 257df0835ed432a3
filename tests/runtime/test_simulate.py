"""`tideflow simulate`'s engine: load profiles, the fluid queue, tideflow's policy and the
KEDA-default policy, and the comparison of the two."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
from tideflow.compiler.ir import ScaleRule
from tideflow.runtime.simulate import (
    Burst,
    KedaDefaultPolicy,
    ProfileError,
    Segment,
    SimulationSettings,
    TideflowPolicy,
    compare,
    csv_text,
    load_profile,
    parse_duration,
    parse_profile,
    parse_rate,
    run_policy,
)


def rule(**settings: Any) -> ScaleRule:
    values: dict[str, Any] = {"max": 10, "lag_per_instance": 100, "poll": 2.0, "cooldown": 60.0}
    values.update(settings)
    return ScaleRule(**values)


def first_time(samples: Any, predicate: Any) -> float | None:
    return next((s.t for s in samples if predicate(s)), None)


# --- profiles ------------------------------------------------------------------------------


def test_the_compact_form() -> None:
    profile = parse_profile("0-5m:100/s, 5m-6m:300000/h,6m-30m:3000/m,burst@10m:20_000")
    assert profile.segments == (
        Segment(0, 300, 100),
        Segment(300, 360, 300_000 / 3600),
        Segment(360, 1800, 50),
    )
    assert profile.bursts == (Burst(600, 20_000),)
    assert profile.rate_at(299.5) == 100
    assert profile.rate_at(300) == pytest.approx(83.333, rel=1e-4)
    assert profile.rate_at(1800) == 0  # after the last segment
    assert profile.last_spike() == 600
    assert profile.describe() == ("0s-5m 100/s, 5m-6m 83.33/s, 6m-30m 50/s; burst at 10m: 20,000")


def test_gaps_have_no_arrivals_and_spikes_are_rises_or_bursts() -> None:
    profile = parse_profile("0-1m:10,2m-3m:500/s,3m-4m:20")
    assert profile.rate_at(90) == 0
    assert profile.last_spike() == 120  # the fall at 3m is no spike
    assert parse_profile("0-1m:0").last_spike() is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the profile is empty"),
        ("0-5m:100/x", "in `0-5m:100/x`: `100/x` is not a rate"),
        ("0-5m:1__0", "`1__0` is not a rate"),
        ("0-5m", "in `0-5m`: write START-END:RATE"),
        ("5m-1m:10", "segment 300s-60s must start at 0 or later and end after it starts"),
        ("0-5m:1,4m-6m:2", "segments 0s-300s and 240s-360s overlap"),
        ("burst@soon:10", "in `burst@soon:10`: `soon` is not a duration"),
        ("burst@1m", "write burst@AT:MESSAGES"),
        ("burst@1m:lots", "`lots` is not a number of messages"),
    ],
)
def test_a_bad_profile_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profile(text)
    assert message in str(caught.value)


def test_durations_and_rates() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "1h30m", "500ms", "2.5m")] == [
        90,
        90,
        5400,
        0.5,
        150,
    ]
    assert [parse_rate(t) for t in ("120", "120/s", "120/m", "7200/h", "1_200/min")] == [
        120,
        120,
        2,
        2,
        20,
    ]


def test_a_json_profile(tmp_path: Path) -> None:
    path = tmp_path / "load.json"
    path.write_text(
        json.dumps(
            {
                "segments": [
                    {"start": 0, "end": "5m", "rate": 100},
                    {"start": "5m", "end": 360, "rate": "6000/m"},
                ],
                "bursts": [{"at": "10m", "messages": 20000}],
            }
        )
    )
    assert load_profile(str(path)) == parse_profile("0-5m:100/s,5m-6m:100/s,burst@10m:20000")


def test_a_csv_profile(tmp_path: Path) -> None:
    path = tmp_path / "load.csv"
    path.write_text("time,rate,burst\n0,100,\n5m,5000/s,\n6m,50,\n10m,,20000\n")
    profile = load_profile(str(path))
    assert profile.segments == (
        Segment(0, 300, 100),
        Segment(300, 360, 5000),
        Segment(360, math.inf, 50),
    )
    assert profile.bursts == (Burst(600, 20_000),)
    assert profile.rate_at(10_000) == 50  # the last rate lasts to the end


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.json", None, "cannot read `{path}`: no such file or directory"),
        ("bad.json", "{", "`{path}`: not JSON"),
        ("bad.json", '{"segments": [{"start": 0}]}', 'segments[0] needs "start", "end" and "rate"'),
        ("bad.csv", "when,rate\n0,1\n", "write a header `time,rate`"),
        ("bad.csv", "time,rate\n0,1\nlater,2\n", "`{path}`: line 3: `later` is not a duration"),
    ],
)
def test_a_bad_profile_file(tmp_path: Path, name: str, content: str | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path))
    assert message.format(path=path) in str(caught.value)


# --- the queue -----------------------------------------------------------------------------


def test_a_fixed_count_drains_a_burst_at_its_service_rate() -> None:
    fixed = rule(min=2, max=2)
    settings = SimulationSettings(service_rate=100, startup=0, duration=120)
    run = run_policy(
        parse_profile("burst@0:10000"), TideflowPolicy(fixed, settings), settings, initial=2
    )
    assert run.peak_backlog == 10_000
    assert run.drain_seconds == pytest.approx(50)  # 10,000 / (2 x 100)
    assert run.instance_seconds == pytest.approx(240)
    assert run.scale_events == 0
    assert run.final_backlog == 0
    assert run.decisions == 61  # at 0s, 2s, ... 120s
    at_25s = next(s for s in run.samples if s.t == 25)
    assert at_25s.backlog == pytest.approx(5_000)


def test_arrivals_above_capacity_build_a_backlog() -> None:
    one = rule(min=1, max=1)
    settings = SimulationSettings(service_rate=50, startup=0, duration=200)
    run = run_policy(parse_profile("0-1m:80"), TideflowPolicy(one, settings), settings, initial=1)
    assert run.peak_backlog == pytest.approx(1_800)  # (80 - 50) x 60
    assert run.drain_seconds == pytest.approx(96)  # 60s, then 1,800 / 50


def test_new_instances_work_only_after_their_startup() -> None:
    scale = rule(min=0, max=1, poll=10.0)
    settings = SimulationSettings(service_rate=100, startup=5, duration=60)
    run = run_policy(parse_profile("burst@0:1000"), TideflowPolicy(scale, settings), settings)
    assert run.drain_seconds == pytest.approx(15)  # decided at 0s, ready at 5s, 10s of work
    starting = next(s for s in run.samples if s.t == 3)
    assert (starting.instances, starting.ready) == (1, 0)


def test_instances_beyond_the_partitions_idle() -> None:
    four = rule(min=4, max=4)
    settings = SimulationSettings(
        service_rate=100, startup=0, duration=30, partitions=2, partitioned=True
    )
    run = run_policy(
        parse_profile("burst@0:1000"), TideflowPolicy(four, settings), settings, initial=4
    )
    assert run.drain_seconds == pytest.approx(5)  # two working, not four


class Scripted:
    """A policy that runs the counts it is given, at the times it is given."""

    name = "scripted"

    def __init__(self, counts: dict[float, int]) -> None:
        self.counts = dict(sorted(counts.items()))

    def next_at(self) -> float:
        return next(iter(self.counts), math.inf)

    def act(self, t: float, backlog: int, current: int) -> int:
        return self.counts.pop(t)


def test_removed_instances_stop_at_once_starting_ones_first() -> None:
    settings = SimulationSettings(service_rate=10, startup=10, duration=30)
    run = run_policy(parse_profile("0-30s:100"), Scripted({0: 2, 12: 4, 14: 2}), settings)
    by_time = {s.t: s for s in run.samples}
    assert (by_time[11].instances, by_time[11].ready) == (2, 2)
    assert (by_time[13].instances, by_time[13].ready) == (4, 2)
    assert (by_time[15].instances, by_time[15].ready) == (2, 2)  # the starting two went
    assert run.scale_events == 3
    assert run.instance_seconds == pytest.approx(2 * 30 + 2 * 2)


# --- KEDA's defaults -----------------------------------------------------------------------


def keda(**settings: Any) -> KedaDefaultPolicy:
    return KedaDefaultPolicy(
        rule(max=100, **settings), SimulationSettings(service_rate=100, duration=3600)
    )


def test_keda_activates_on_its_30s_poll_and_the_hpa_doubles_per_sync() -> None:
    policy = keda()
    assert policy.act(0, 0, 0) == 0
    assert policy.next_at() == 15
    assert policy.act(15, 5_000, 0) == 0  # the HPA does nothing at zero replicas
    assert policy.next_at() == 30
    # the operator activates (0 -> 1), then the HPA: 50 wanted, at most 4 more or double
    assert policy.act(30, 5_000, 0) == 5
    assert policy.act(45, 5_000, 5) == 10
    assert policy.act(60, 5_000, 10) == 20
    assert policy.act(75, 5_000, 20) == 40
    assert policy.act(90, 5_000, 40) == 50


def test_keda_keeps_the_count_within_the_tolerance() -> None:
    policy = keda(min=1)
    assert policy.act(0, 1_050, 10) == 10
    assert policy.act(15, 1_101, 10) == 12


def test_keda_waits_300s_then_goes_to_zero() -> None:
    policy = keda()
    assert policy.act(0, 1_000, 10) == 10
    count, t = 10, 15.0
    while t < 300:
        count = policy.act(t, 0, count)
        assert count == 10
        t = policy.next_at()
    assert policy.act(300, 0, 10) == 0  # idle since 0s: the cooldownPeriod is over


def test_keda_caps_the_lag_at_the_partition_count() -> None:
    policy = KedaDefaultPolicy(
        rule(max=100),
        SimulationSettings(service_rate=100, partitions=6, partitioned=True),
    )
    assert policy.act(0, 100_000, 6) == 6


# --- the comparison ------------------------------------------------------------------------


def test_tideflow_reacts_on_its_poll_and_keda_on_its_own() -> None:
    profile = parse_profile("burst@1s:5000")
    scale = rule(max=20, poll=2.0, cooldown=60.0)
    settings = SimulationSettings(service_rate=100, startup=2, duration=600)
    result = compare(profile, scale, settings)
    assert first_time(result.tideflow.samples, lambda s: s.instances > 0) == 2
    assert first_time(result.keda.samples, lambda s: s.instances > 0) == 30
    assert result.tideflow.drain_seconds is not None and result.keda.drain_seconds is not None
    assert result.tideflow.drain_seconds < result.keda.drain_seconds
    assert result.ratio("drain_seconds") == pytest.approx(
        result.tideflow.drain_seconds / result.keda.drain_seconds
    )
    assert result.spike_at == 1


def test_a_steady_load_settles() -> None:
    """300/s needs two instances that keep the backlog empty, which reads as idle: each
    time the count drops and has to come back, the next drop waits longer."""
    scale = rule(max=12, lag_per_instance=500, activation_lag=1, scale_down_window=60.0)
    settings = SimulationSettings(service_rate=200, startup=2, duration=3600)
    result = compare(parse_profile("0-1h:300/s"), scale, settings)
    samples = result.tideflow.samples
    wakes = [b.t for a, b in itertools.pairwise(samples) if a.instances == 0 < b.instances]
    gaps = [later - earlier for earlier, later in itertools.pairwise(wakes)]
    assert len(gaps) >= 3
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps))
    assert gaps[-1] > 4 * gaps[0]
    assert result.tideflow.final_backlog < 1_000


def test_the_series_and_the_summary() -> None:
    profile = parse_profile("0-1m:100,burst@30s:1000")
    result = compare(profile, rule(), SimulationSettings(service_rate=100, duration=120))
    rows = list(result.series())
    assert len(rows) == 121  # 0s to 120s, one a second
    assert list(rows[0]) == [
        "t",
        "arrival_rate",
        "tideflow_backlog",
        "tideflow_instances",
        "tideflow_ready",
        "keda_backlog",
        "keda_instances",
        "keda_ready",
    ]
    assert rows[10]["arrival_rate"] == 100
    assert rows[90]["arrival_rate"] == 0
    text = csv_text(rows)
    assert text.splitlines()[0].startswith("t,arrival_rate,tideflow_backlog")
    assert len(text.splitlines()) == 122
    summary = result.summary()
    assert summary["tideflow"]["scale_events"] == result.tideflow.scale_events
    assert set(summary["ratios"]) == {
        "peak_backlog",
        "drain_seconds",
        "instance_seconds",
        "scale_events",
    }
    json.dumps(summary)  # ready for --format json


def test_a_long_run_is_sampled_coarser() -> None:
    settings = SimulationSettings(service_rate=10, duration=86_400)
    assert settings.sample_interval == 24
    result = compare(parse_profile("0-1h:5"), rule(poll=30.0), settings)
    assert len(result.tideflow.samples) == 3_601
