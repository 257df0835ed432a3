"""`tideflow simulate` and `tideflow explain` through click's CliRunner: what they print,
their formats, and that bad input gets one clean line and exit 2 (flow errors exit 1)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from tideflow.compiler import compile_flow
from tideflow.plugins.api import BacklogFailure, BacklogReading
from tideflow.runtime.autoscaler import rule_as_dict
from tideflow.runtime.decide import Decision, ScaleState, decide
from tideflow.runtime.model import ScaleDecisionRow
from tideflow.runtime.simulate import Comparison, SimulationSettings, compare, parse_profile
from tideflow.runtime.store import Store

from tideflow.cli.autoscale import explain_command, simulate_command

FLOW = """\
flow "orders" {
  timezone = "UTC"
}

broker "main" {
  kind = "embedded"
}

topic "orders" {
  broker     = broker.main
  partitions = 6
}

job "extract" {
  schedule  = every(10m)
  run       = "shop.jobs:extract"
  publishes = topic.orders
}

consumer "order_workers" {
  consumes = topic.orders
  run      = "shop.workers:handle"
  scale {
    max              = 12
    lag_per_instance = 500
    activation_lag   = 1
    poll             = 2s
    cooldown         = 60s
  }
}

consumer "auditor" {
  consumes = topic.orders
  run      = "shop.workers:audit"
}
"""

LOAD = "0-5m:100/s,5m-6m:5000/s,6m-30m:50/s,burst@10m:20000"
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def run(command: Any, *args: str) -> Result:
    return CliRunner().invoke(command, list(args), catch_exceptions=False)


def assert_usage_problem(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    last = result.stderr.splitlines()[-1]  # after the flow's warnings, if it has any
    assert last.startswith("error: ")
    assert message in last
    assert "Traceback" not in result.stderr


@pytest.fixture
def flow(write_flow: Any) -> str:
    path: str = write_flow("orders.flow", FLOW)
    return path


def expected(flow: str, duration: float = 1800.0) -> Comparison:
    """The same simulation through the library, to check the command's wiring."""
    ir = compile_flow(flow).ir
    assert ir is not None
    rule = ir.consumers["order_workers"].scale
    assert rule is not None
    settings = SimulationSettings(
        service_rate=200, startup=2, duration=duration, partitions=6, partitioned=True
    )
    return compare(parse_profile(LOAD), rule, settings)


# --- simulate -------------------------------------------------------------------------------


def test_simulate_prints_both_policies_and_their_ratios(flow: str) -> None:
    result = run(simulate_command, flow, "--arrivals", LOAD, "--service-rate", "200")
    assert result.exit_code == 0, result.output
    want = expected(flow)
    lines = {line.split("  ")[0].strip(): line for line in result.stdout.splitlines()}
    peak = lines["peak backlog"].split()
    assert peak[-3:] == [
        f"{want.tideflow.peak_backlog:,.0f}",
        f"{want.keda.peak_backlog:,.0f}",
        f"{want.ratio('peak_backlog'):.2f}",
    ]
    cost = lines["instance-seconds"].split()
    assert cost[-3:] == [
        f"{want.tideflow.instance_seconds:,.0f}",
        f"{want.keda.instance_seconds:,.0f}",
        f"{want.ratio('instance_seconds'):.2f}",
    ]
    assert "time to drain after 10m" in lines
    assert "6 partitions" in result.stdout
    assert "load: 0s-5m 100/s, 5m-6m 5,000/s, 6m-30m 50/s; burst at 10m: 20,000" in result.stdout


def test_simulate_json_has_the_figures_and_the_series(flow: str) -> None:
    result = run(
        simulate_command,
        flow,
        "--consumer",
        "order_workers",
        "--arrivals",
        LOAD,
        "--service-rate",
        "12000/m",
        "--duration",
        "20m",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    want = expected(flow, duration=1200)
    assert document["summary"] == json.loads(json.dumps(want.summary()))
    assert document["settings"]["partitions"] == 6 and document["settings"]["partitioned"]
    assert document["settings"]["service_rate"] == 200
    assert len(document["series"]) == 1201
    assert document["rule"]["lag_per_instance"] == 500
    assert document["profile"]["bursts"] == [{"at": 600.0, "messages": 20000}]


def test_simulate_csv_is_the_time_series(flow: str) -> None:
    result = run(
        simulate_command, flow, "--arrivals", LOAD, "--service-rate", "200", "--format", "csv"
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 1801
    assert float(rows[400]["arrival_rate"]) == 50
    want = list(expected(flow).series())
    assert float(rows[310]["keda_backlog"]) == pytest.approx(want[310]["keda_backlog"])
    assert int(rows[310]["tideflow_instances"]) == want[310]["tideflow_instances"]


def test_simulate_draws_a_plot(flow: str, workdir: Path) -> None:
    result = run(
        simulate_command,
        flow,
        "--arrivals",
        LOAD,
        "--service-rate",
        "200",
        "--startup",
        "5s",
        "--plot",
        "out/scale.png",
    )
    assert result.exit_code == 0, result.output
    assert "wrote out/scale.png" in result.stderr
    assert (workdir / "out" / "scale.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_simulate_says_when_the_profile_outlasts_the_duration(flow: str) -> None:
    result = run(
        simulate_command, flow, "--arrivals", LOAD, "--service-rate", "200", "--duration", "5m"
    )
    assert result.exit_code == 0, result.output
    assert (
        "note: the profile goes on to 30m; only the first 5m are simulated (see --duration)"
        in result.stderr
    )
    assert "5m simulated" in result.stdout


def test_simulate_without_matplotlib_says_what_to_install(
    flow: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = run(
        simulate_command, flow, "--arrivals", LOAD, "--service-rate", "200", "--plot", "x.png"
    )
    assert_usage_problem(result, "--plot needs matplotlib, which is not installed")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--consumer", "order_worker"],
            'flow "orders" has no consumer `order_worker`; did you mean `order_workers`?',
        ),
        (["--consumer", "auditor"], 'consumer `auditor` of flow "orders" has no `scale` block'),
        (
            ["--arrivals", "0-5m:100/x"],
            "invalid --arrivals: in `0-5m:100/x`: `100/x` is not a rate",
        ),
        (["--arrivals", "missing.csv"], "invalid --arrivals: cannot read `missing.csv`"),
        (["--service-rate", "fast"], "invalid --service-rate: `fast` is not a rate"),
        (["--service-rate", "0"], "invalid --service-rate: an instance must handle more than 0"),
        (["--startup", "soon"], "invalid --startup: `soon` is not a duration"),
        (["--duration", "0s"], "invalid --duration: simulate for more than 0s"),
    ],
)
def test_simulate_usage_problems(flow: str, arguments: list[str], message: str) -> None:
    defaults = {"--arrivals": LOAD, "--service-rate": "200"}
    given = dict(zip(arguments[::2], arguments[1::2], strict=True))
    options = [item for pair in {**defaults, **given}.items() for item in pair]
    result = run(simulate_command, flow, *options)
    assert_usage_problem(result, message)


def test_simulate_asks_which_consumer_when_several_scale(write_flow: Any) -> None:
    two = FLOW.replace(
        'run      = "shop.workers:audit"', 'run      = "shop.workers:audit"\n  scale { max = 2 }'
    )
    path = write_flow("two.flow", two)
    result = run(simulate_command, path, "--arrivals", LOAD, "--service-rate", "200")
    assert_usage_problem(
        result, "several autoscaled consumers; name one with --consumer: auditor, order_workers"
    )


def test_simulate_reports_flow_errors_like_compile(write_flow: Any) -> None:
    path = write_flow("bad.flow", FLOW.replace("lag_per_instance", "lag_per_instanse"))
    result = run(simulate_command, path, "--arrivals", LOAD, "--service-rate", "200")
    assert result.exit_code == 1
    assert "unknown attribute `lag_per_instanse`" in result.stderr
    assert "help: did you mean `lag_per_instance`?" in result.stderr
    assert result.stdout == ""


def test_simulate_a_missing_file(workdir: Path) -> None:
    result = run(simulate_command, "nope.flow", "--arrivals", LOAD, "--service-rate", "200")
    assert_usage_problem(result, "cannot read `nope.flow`")


# --- explain --------------------------------------------------------------------------------


def stored_decision(
    flow: str, when: datetime, reading: BacklogReading | BacklogFailure, current: int
) -> ScaleDecisionRow:
    ir = compile_flow(flow).ir
    assert ir is not None
    rule = ir.consumers["order_workers"].scale
    assert rule is not None
    decision: Decision
    decision, _ = decide(reading, current, rule, 6, ScaleState(), when, 10.0)
    return ScaleDecisionRow(
        flow="orders",
        consumer="order_workers",
        taken_at=when,
        backlog=reading.total if isinstance(reading, BacklogReading) else None,
        per_partition=dict(reading.per_partition) if isinstance(reading, BacklogReading) else {},
        partitions=reading.partitions if isinstance(reading, BacklogReading) else None,
        reading_error=decision.reading_problem,
        current=decision.current,
        desired=decision.desired,
        applied=True,
        reason=decision.reason.value,
        explanation=decision.explanation,
        rule=rule_as_dict(rule),
    )


@pytest.fixture
def state(flow: str, workdir: Path) -> str:
    url = f"sqlite:///{workdir / 'state.db'}"
    spread = {0: 1_200, 1: 2_212}
    with Store.open(url) as store:
        store.record_decision(
            stored_decision(flow, T0, BacklogReading("orders", "w", 3_412, spread, 6, T0), 2)
        )
        later = T0 + timedelta(seconds=2)
        store.record_decision(
            stored_decision(flow, later, BacklogFailure("orders", "w", "no answer", later), 6)
        )
        other = stored_decision(flow, later, BacklogReading("orders", "w", 0, {}, 6, later), 6)
        store.record_decision(dataclasses.replace(other, flow="elsewhere"))
    return url


def test_explain_shows_the_inputs_and_the_arithmetic(flow: str, state: str) -> None:
    result = run(explain_command, flow, "order_workers", "--state", state)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "min 0, max 12, 500 per instance, activation above 1, poll 2s, cooldown 1m" in text
    assert "backlog 3,412 over 6 partitions (p0 1,200, p1 2,212)" in text
    assert "backlog 3,412 / 500 per instance = 7; capped by 6 partitions -> 6" in text
    assert "2 -> 6  scale_up" in text
    assert "reading: no answer" in text
    assert "6 -> 6  hold_failed_reading" in text
    assert text.index("hold_failed_reading") < text.index("scale_up")  # newest first
    assert "elsewhere" not in text and text.count(" -> ") == 4  # 2 headers, 2 explanations


def test_explain_json_and_limit(flow: str, state: str) -> None:
    result = run(
        explain_command, flow, "order_workers", "--state", state, "--format", "json", "--limit", "1"
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["flow"], document["consumer"]) == ("orders", "order_workers")
    [newest] = document["decisions"]
    assert newest["reason"] == "hold_failed_reading"
    assert newest["reading_error"] == "no answer"
    assert newest["backlog"] is None
    assert newest["rule"]["lag_per_instance"] == 500


def test_explain_with_no_decisions_yet(flow: str, workdir: Path) -> None:
    url = f"sqlite:///{workdir / 'empty.db'}"
    result = run(explain_command, flow, "order_workers", "--state", url)
    assert result.exit_code == 0, result.output
    assert "no decisions recorded yet" in result.stdout


def test_explain_an_unknown_consumer(flow: str, state: str) -> None:
    result = run(explain_command, flow, "order_wrkers", "--state", state)
    assert_usage_problem(result, "did you mean `order_workers`?")


def test_explain_a_state_store_that_cannot_be_opened(flow: str, workdir: Path) -> None:
    result = run(
        explain_command, flow, "order_workers", "--state", f"sqlite:///{workdir / flow / 'x.db'}"
    )
    assert_usage_problem(result, "cannot open the state store")


def test_explain_never_breaks_a_long_line(flow: str, workdir: Path) -> None:
    url = f"sqlite:///{workdir / 'long.db'}"
    decision = stored_decision(flow, T0, BacklogReading("orders", "w", 3_412, {0: 3_412}, 6, T0), 2)
    long = dataclasses.replace(
        decision,
        explanation=decision.explanation + "; [not markup] " + " ".join(["and a long tail"] * 10),
        reading_error="the broker said " + "no " * 50,
    )
    with Store.open(url) as store:
        store.record_decision(long)
    result = run(explain_command, flow, "order_workers", "--state", url)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert f"  {long.explanation}" in lines  # whole, on one line: the terminal wraps it
    assert f"  reading: {long.reading_error}" in lines
