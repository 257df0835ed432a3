"""Autoscaling against KEDA's defaults on the same loads.

Each section of the report is one function in SECTIONS, run in order by main():

- `simulated_against_keda`: `tideflow simulate`'s engine (the autoscaler's own
  decision function on a virtual clock, a fluid queue of instances) replays a few
  loads through a consumer's `scale` rule and through KEDA's defaults (poll 30 s,
  HPA sync 15 s, 5 m scale-down window, 5 m cooldown to zero), and prints the time
  to drain after the last spike and the instance-seconds, tideflow's over KEDA's.

- `live_spike`: the target "from a backlog spike to the first new consumer
  instance: under poll + 1 s" (KEDA + HPA defaults: 15 to 45 s), measured for real.
  `tideflow run` runs a flow on the embedded broker whose consumer scales with the
  `local` scaler (poll 1 s), first with min = 0 (0 -> first instance), then with
  min = 1 (1 -> 2). At a recorded instant a burst is published; the figures are, from
  the moment the burst is committed: the autoscaler's decision (its stored
  `taken_at`), the new `tideflow worker` process existing (seen as a child of the
  orchestrator, /proc read every few ms) and the new instance's handler being called
  for its first message (the handler writes `time.time()`). Each spike waits for the
  consumer to be back at min, then a random part of a poll, so that spikes fall at
  every phase of the autoscaler's poll grid. Beside it, in the same run, the time a
  bare `subprocess.Popen([python, "-c", "pass"])` takes: how much of the figure is
  Python start-up.

Run: `.venv/bin/python bench/autoscale_bench.py [--service-rate 200] [--startup 2s]
[--spikes 6]`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tideflow.compiler import compile_flow, compile_source
from tideflow.compiler.ir import FlowIR, ScaleRule
from tideflow.plugins.api import OutgoingMessage
from tideflow.runtime.backends import open_topic_broker
from tideflow.runtime.context import encode_payload
from tideflow.runtime.simulate import (
    Comparison,
    SimulationSettings,
    compare,
    parse_duration,
    parse_profile,
)
from tideflow.runtime.store import Store

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


# --- live: from a backlog spike to the first new instance ------------------------------

LIVE_POLL = 1.0
LIVE_MAX = 2
LIVE_LAG_PER_INSTANCE = 100
LIVE_BURST = 400  # 4 instances' worth: scales to max at once
LIVE_SETTLE = 1.0  # cooldown and scale-down window: the consumer is back at min soon
LIVE_TIMEOUT = 30.0  # any one wait of the live section

# 10 ms of work per message; the first message a process handles leaves its time
LIVE_HANDLERS = """\
import os
import time

_first_done = False


def handle(ctx, message):
    global _first_done
    if not _first_done:
        _first_done = True
        path = os.path.join(ctx.params["out"], f"{os.getpid()}.first")
        with open(path + ".tmp", "w") as stream:
            stream.write(repr(time.time()))
        os.replace(path + ".tmp", path)
    time.sleep(0.01)
"""


def _live_flow(minimum: int, out: Path) -> str:
    return f"""\
flow "spike" {{
  timezone = "UTC"
}}

broker "main" {{
  kind = "embedded"
  path = "broker.db"
}}

topic "orders" {{
  broker     = broker.main
  partitions = 4
}}

consumer "workers" {{
  consumes      = topic.orders
  run           = "spike_handlers:handle"
  batch_size    = 1
  max_in_flight = 1
  params        = {{ out = "{out}" }}
  scale {{
    min               = {minimum}
    max               = {LIVE_MAX}
    lag_per_instance  = {LIVE_LAG_PER_INSTANCE}
    poll              = {LIVE_POLL:g}s
    cooldown          = {LIVE_SETTLE:g}s
    scale_down_window = {LIVE_SETTLE:g}s
    drain_timeout     = 5s
  }}
}}
"""


@dataclass(frozen=True)
class Spike:
    """Seconds from the burst's commit to each step; None when it was not seen."""

    decided: float
    process: float
    first_message: float | None


def _worker_children(pid: int) -> set[int]:
    """The `tideflow worker` processes `pid` started (/proc/PID/task/TID/children, Linux;
    the orchestrator's other children, such as its job worker, are left out)."""
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue  # a thread that ended
    found: set[int] = set()
    for child in children:
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone
        if b"tideflow" in argv and b"worker" in argv:
            found.add(child)
    return found


def _wait_for(condition: Callable[[], bool], what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + LIVE_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"live: timed out waiting for {what}")
        time.sleep(interval)


async def _publish_burst(flow: FlowIR, first_id: int) -> None:
    async with open_topic_broker(flow, "orders") as broker:
        messages = [
            OutgoingMessage(encode_payload({"id": i}))
            for i in range(first_id, first_id + LIVE_BURST)
        ]
        await broker.publish("orders", messages)


async def _backlog(flow: FlowIR) -> int:
    async with open_topic_broker(flow, "orders") as broker:
        return (await broker.backlog("orders", "workers")).total


class _LiveRun:
    """`tideflow run` (a subprocess) on the live flow, and what the bench reads of it."""

    def __init__(self, minimum: int, root: Path) -> None:
        self.minimum = minimum
        self.out = root / "out"
        self.out.mkdir()
        (root / "spike_handlers.py").write_text(LIVE_HANDLERS)
        flow_path = root / "spike.flow"
        flow_path.write_text(_live_flow(minimum, self.out))
        compiled = compile_flow(flow_path)
        if compiled.ir is None:
            raise SystemExit("live: the benchmark's flow does not compile: " + str(compiled.errors))
        self.flow = compiled.ir
        state = f"sqlite:///{root / 'state.db'}"
        Store.open(state).close()
        self.store = Store.open(state)
        self._log = (root / "orchestrator.log").open("w")
        self.orchestrator = subprocess.Popen(
            [sys.executable, "-m", "tideflow", "run", str(flow_path), "--no-live"],
            cwd=root,
            env={**os.environ, "TIDEFLOW_STATE": state},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def close(self) -> None:
        if self.orchestrator.poll() is None:
            self.orchestrator.send_signal(signal.SIGTERM)
            try:
                self.orchestrator.wait(30)
            except subprocess.TimeoutExpired:
                self.orchestrator.kill()
                self.orchestrator.wait()
        self.store.close()
        self._log.close()

    def instances(self) -> set[int]:
        return _worker_children(self.orchestrator.pid)

    def decided(self) -> bool:
        """Whether the autoscaler has taken a decision (it runs: the group exists)."""
        return bool(self.store.decisions(flow="spike", consumer="workers", limit=1))

    def changes(self, since: datetime | None = None) -> list[datetime]:
        """When the applied decisions (changes of the count) were taken, oldest first."""
        rows = self.store.decisions(flow="spike", consumer="workers", since=since, limit=None)
        return sorted(d.taken_at for d in rows if d.applied)

    def started(self) -> None:
        """Wait for the orchestrator's first decision and the min instances at work."""

        def running() -> bool:
            alive = self.store.instances(flow="spike", consumer="workers", alive_within=5)
            return sum(i.stats.status.value == "running" for i in alive) == self.minimum

        _wait_for(lambda: self.orchestrator.poll() is None and self.decided(), "a decision")
        _wait_for(running, f"{self.minimum} running instance(s)")

    def at_rest(self) -> bool:
        """Back at min, and the last change long enough ago that a new spike neither
        meets a stabilization window nor lengthens one (decide's rule 8)."""
        if len(self.instances()) != self.minimum:
            return False
        changes = self.changes()
        if changes and (datetime.now(UTC) - changes[-1]).total_seconds() <= LIVE_SETTLE + 0.2:
            return False
        return asyncio.run(_backlog(self.flow)) == 0

    def spike(self, first_id: int) -> Spike:
        """Publish a burst and time the consumer's answer to it."""
        before = self.instances()
        asyncio.run(_publish_burst(self.flow, first_id))
        committed = time.time()
        committed_at = datetime.fromtimestamp(committed, UTC)
        _wait_for(lambda: bool(self.instances() - before), "a new instance", interval=0.002)
        process = time.time() - committed
        new = self.instances() - before
        _wait_for(lambda: bool(self.changes(committed_at)), "the decision to scale up")
        decided = (self.changes(committed_at)[0] - committed_at).total_seconds()
        firsts = [self.out / f"{pid}.first" for pid in new]
        try:
            _wait_for(lambda: any(p.exists() for p in firsts), "a first message")
        except SystemExit:
            return Spike(decided, process, None)  # the running instances drained it all
        first = min(float(p.read_text()) for p in firsts if p.exists())
        return Spike(decided, process, first - committed)


def _measure_spikes(minimum: int, spikes: int, root: Path) -> list[Spike]:
    """`spikes` bursts, each from the consumer at rest at `min = minimum`."""
    run = _LiveRun(minimum, root)
    try:
        run.started()
        results = []
        for number in range(spikes):
            _wait_for(run.at_rest, "the consumer to be back at min", interval=0.1)
            # so that spikes fall at every phase of the autoscaler's poll grid
            time.sleep(random.uniform(0.0, LIVE_POLL))
            results.append(run.spike(number * LIVE_BURST))
        return results
    finally:
        run.close()


def _popen_seconds(argv: Sequence[str], repeats: int) -> tuple[float, float]:
    """Median seconds for `Popen(argv)` to return, and for the process to exit."""
    spawned, exited = [], []
    for _ in range(repeats):
        began = time.perf_counter()
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        spawned.append(time.perf_counter() - began)
        process.wait()
        exited.append(time.perf_counter() - began)
    return statistics.median(spawned), statistics.median(exited)


def live_spike(args: argparse.Namespace) -> None:
    target = LIVE_POLL + 1.0
    print(
        f"live: `tideflow run` with the local scaler on the embedded broker, poll "
        f"{LIVE_POLL:g}s, lag_per_instance {LIVE_LAG_PER_INSTANCE}, max {LIVE_MAX}; "
        f"bursts of {LIVE_BURST} messages (10 ms each, max_in_flight 1), {args.spikes} per "
        f"row;\ntarget: first new instance under poll + 1 s = {target:g}s "
        f"(KEDA + HPA defaults: 15 to 45 s)"
    )
    header = (
        f"{'from the burst to':<46} {'median':>8} {'max':>8} {'target':>8}  {'met':>4}  "
        "each spike, in order"
    )
    lines = [header, "-" * len(header)]
    for minimum in (0, 1):
        with tempfile.TemporaryDirectory(prefix="tideflow-spike-") as folder:
            spikes = _measure_spikes(minimum, args.spikes, Path(folder))
        scaling = f"{minimum} -> {LIVE_MAX}, the first new one"
        firsts = [s.first_message for s in spikes if s.first_message is not None]
        rows: list[tuple[str, list[float]]] = [
            (f"min {minimum} ({scaling}): decided", [s.decided for s in spikes]),
            ("  new worker process exists", [s.process for s in spikes]),
            ("  its first message handled", firsts),
        ]
        for label, values in rows:
            if not values:
                lines.append(f"{label:<46} {'-':>8} {'-':>8}")
                continue
            worst = max(values)
            lines.append(
                f"{label:<46} {statistics.median(values):>7.2f}s {worst:>7.2f}s "
                f"{target:>7.1f}s  {'yes' if worst < target else 'no':>4}  "
                + " ".join(f"{v:.2f}" for v in values)
            )
        if len(firsts) < len(spikes):
            lines.append(
                f"  ({len(spikes) - len(firsts)} spike(s): the new instance found nothing left)"
            )
    print("\n".join(lines))
    spawn, exit_after = _popen_seconds([sys.executable, "-c", "pass"], 10)
    _, cli_exit = _popen_seconds([sys.executable, "-m", "tideflow", "worker", "--help"], 5)
    print(
        f"baseline, same run: Popen([python, '-c', 'pass']) returns in {spawn * 1000:.1f} ms, "
        f"the process has exited after {exit_after * 1000:.0f} ms;\n"
        f"`python -m tideflow worker --help` (Python and tideflow's CLI: no flow, no store, "
        f"no broker) exits after {cli_exit * 1000:.0f} ms"
    )
    print(
        "from the burst: from the commit of its publish; decided: the decision's stored "
        "taken_at; process exists: a `tideflow worker`\nchild of the orchestrator is in /proc "
        "(read every 2 ms); first message: the new instance's handler was called, after "
        "Python\nstart-up, imports, compiling the flow, opening the store and joining the "
        "consumer group"
    )


# Each section prints its part of the report.
SECTIONS: tuple[Callable[[argparse.Namespace], None], ...] = (simulated_against_keda, live_spike)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--service-rate", type=float, default=200.0, help="messages/s each")
    parser.add_argument("--startup", type=parse_duration, default=2.0, help="e.g. 2s")
    parser.add_argument("--duration", type=parse_duration, default=1800.0, help="e.g. 30m")
    parser.add_argument("--spikes", type=int, default=6, help="live bursts per row (5 to 10)")
    args = parser.parse_args(argv)
    print(f"tideflow autoscaling benchmark, python {sys.version.split()[0]}")
    for section in SECTIONS:
        print()
        section(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
