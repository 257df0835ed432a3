"""Autoscaling against KEDA's defaults on the same loads.

Each section of the report is one function in SECTIONS, run in order by main():

- `simulated_against_keda`: `tideflow simulate`'s engine (the autoscaler's own
  decision function on a virtual clock, a fluid queue of instances) replays a few
  loads through a consumer's `scale` rule and through KEDA's defaults (poll 30 s,
  HPA sync 15 s, 5 m scale-down window, 5 m cooldown to zero), and prints the time
  to drain after the last spike and the instance-seconds, tideflow's over KEDA's.

The live half of the target ("from a backlog spike to the first new consumer
instance: under poll + 1 s", measured on the local scaler with real processes)
joins SECTIONS as its own function when the local scaler exists; nothing here
stands in for it.

Run: `.venv/bin/python bench/autoscale_bench.py [--service-rate 200] [--startup 2s]`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tideflow.compiler import compile_source
from tideflow.compiler.ir import ScaleRule
from tideflow.runtime.simulate import (
    Comparison,
    SimulationSettings,
    compare,
    parse_duration,
    parse_profile,
)

PARTITIONS = 12

FLOW = f"""\
flow "bench" {{
  timezone = "UTC"
}}

broker "main" {{
  kind = "embedded"
}}

topic "orders" {{
  broker     = broker.main
  partitions = {PARTITIONS}
}}

consumer "order_workers" {{
  consumes = topic.orders
  run      = "shop.workers:handle"
  scale {{
    max               = {PARTITIONS}
    lag_per_instance  = 500
    activation_lag    = 1
    poll              = 2s
    cooldown          = 60s
    scale_down_window = 60s
  }}
}}
"""


def _alternating(period: float, high: float, until: float) -> str:
    """A load that swings between `high`/s and nothing every `period` seconds."""
    segments, start, on = [], 0.0, True
    while start < until:
        if on:
            segments.append(f"{start:g}-{start + period:g}:{high:g}/s")
        start, on = start + period, not on
    return ",".join(segments)


LOADS: dict[str, str] = {
    "spike, trickle, burst": "0-5m:100/s,5m-6m:5000/s,6m-30m:50/s,burst@10m:20000",
    "bursts every 5m": ",".join(f"burst@{m}m:20000" for m in range(1, 30, 5)),
    "steps up and down": "0-5m:200/s,5m-10m:800/s,10m-15m:1600/s,15m-20m:400/s",
    "swinging every 30s": _alternating(30, 1500, 1800),
    "steady 300/s": "0-30m:300/s",
}


@dataclass(frozen=True)
class Row:
    load: str
    result: Comparison
    seconds: float  # wall time of the two simulations


def rule_of_the_flow() -> ScaleRule:
    result = compile_source(FLOW, "bench.flow")
    if result.ir is None:
        raise SystemExit("the benchmark's flow does not compile: " + str(result.errors))
    rule = result.ir.consumers["order_workers"].scale
    assert rule is not None
    return rule


def simulated_against_keda(args: argparse.Namespace) -> None:
    rule = rule_of_the_flow()
    settings = SimulationSettings(
        service_rate=args.service_rate,
        startup=args.startup,
        duration=args.duration,
        partitions=PARTITIONS,
        partitioned=True,
    )
    print(
        f"simulated: {args.service_rate:g} messages/s per instance, startup {args.startup:g}s, "
        f"{args.duration / 60:g} minutes, {PARTITIONS} partitions; rule: lag_per_instance "
        f"{rule.lag_per_instance}, poll {rule.poll:g}s, cooldown {rule.cooldown:g}s, "
        f"scale_down_window {rule.scale_down_window:g}s"
    )
    rows = []
    for name, text in LOADS.items():
        started = time.perf_counter()
        result = compare(parse_profile(text), rule, settings)
        rows.append(Row(name, result, time.perf_counter() - started))
    print(render(rows))
    drains = [r.result.ratio("drain_seconds") for r in rows]
    costs = [r.result.ratio("instance_seconds") for r in rows]
    print(
        f"geometric mean, tideflow / KEDA: drain time {_geomean(drains)}, "
        f"instance-seconds {_geomean(costs)} (below 1: tideflow's is smaller)"
    )
    print(
        "drain time: from the last burst or rise of the rate until the backlog is back to the "
        "activation lag;\ninstance-seconds: every instance running or starting, over the whole run"
    )


def render(rows: Sequence[Row]) -> str:
    header = (
        f"{'load':<22} {'drain tideflow':>15} {'KEDA':>9} {'ratio':>6}   "
        f"{'inst-s tideflow':>15} {'KEDA':>9} {'ratio':>6}   "
        f"{'peak ratio':>10} {'events':>9} {'sim':>6}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        ours, theirs = row.result.tideflow, row.result.keda
        lines.append(
            f"{row.load:<22} {_seconds(ours.drain_seconds):>15} "
            f"{_seconds(theirs.drain_seconds):>9} {_ratio(row.result.ratio('drain_seconds')):>6}   "
            f"{ours.instance_seconds:>15,.0f} {theirs.instance_seconds:>9,.0f} "
            f"{_ratio(row.result.ratio('instance_seconds')):>6}   "
            f"{_ratio(row.result.ratio('peak_backlog')):>10} "
            f"{f'{ours.scale_events}/{theirs.scale_events}':>9} {row.seconds * 1000:>4.0f}ms"
        )
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "not drained" if value is None else f"{value:.1f}s"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _geomean(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None and v > 0]
    if not known:
        return "-"
    return f"{math.exp(sum(math.log(v) for v in known) / len(known)):.2f} over {len(known)} loads"


# Each section prints its part of the report; the live measurement on the local scaler
# is added here as another function once that scaler exists.
SECTIONS: tuple[Callable[[argparse.Namespace], None], ...] = (simulated_against_keda,)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--service-rate", type=float, default=200.0, help="messages/s each")
    parser.add_argument("--startup", type=parse_duration, default=2.0, help="e.g. 2s")
    parser.add_argument("--duration", type=parse_duration, default=1800.0, help="e.g. 30m")
    args = parser.parse_args(argv)
    print(f"tideflow autoscaling benchmark, python {sys.version.split()[0]}")
    for section in SECTIONS:
        print()
        section(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
