"""Runtime benchmark: dispatch overhead per task transition, and how late schedules fire.

Dispatch (measured by `dispatch_bench.measure_dispatch`, beside this file):
1,000 no-op Python jobs in a chain and in a wide fan-out, history in SQLite,
as milliseconds per task transition, beside calling the same function in a
plain loop. Target: under 1 ms per transition.

Fire-time lateness: `--jobs` jobs (20 by default), each on `every(1s)`, run by
the real `Scheduler` with the `SystemClock` and a SQLite run-history store in a
temporary directory, for `--seconds` seconds (10): 200 firings, 20 on each
second. Lateness is the moment the fire callback is entered minus the scheduled
instant, so it includes recording the instant in the store (one SQLite write
per firing, made before the run may start); the later jobs of each second wait
for the earlier ones' writes. The baseline is a bare asyncio loop doing
`await asyncio.sleep(target - time.time())` for the same pattern of instants:
the ratio scheduler / baseline is the figure to quote.

Target (shared/DESIGN.md): p99 lateness under 20 ms at rest. The script says
whether it was met; no test asserts a time.

    .venv/bin/python bench/runtime_bench.py
    .venv/bin/python bench/runtime_bench.py --jobs 1 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tideflow.compiler.ir import FlowInfo, FlowIR, JobNode, Schedule
from tideflow.runtime.clock import SystemClock
from tideflow.runtime.scheduler import FireRequest, Scheduler
from tideflow.runtime.store import Store

TARGET_P99_MS = 20.0
TARGET_DISPATCH_MS = 1.0


@dataclass(frozen=True, slots=True)
class Lateness:
    """Lateness of a series of firings, in milliseconds."""

    count: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, seconds_late: Sequence[float]) -> Lateness:
        ms = sorted(s * 1000 for s in seconds_late)
        cuts = statistics.quantiles(ms, n=100, method="inclusive")
        return cls(len(ms), cuts[49], cuts[98], ms[-1])


@dataclass(frozen=True, slots=True)
class LatenessReport:
    jobs: int
    seconds: int
    scheduler: Lateness
    baseline: Lateness


def _flow(jobs: int) -> FlowIR:
    flow = FlowIR(FlowInfo("lateness_bench", "bench.flow"))
    for index in range(jobs):
        schedule = Schedule("every", "UTC", interval=1.0)
        flow.add(JobNode(f"tick_{index:03d}", schedule=schedule, catch_up="skip"))
    return flow


async def _scheduler_lateness(jobs: int, seconds: int, store: Store) -> list[float]:
    wanted = jobs * seconds
    late: list[float] = []
    done = asyncio.Event()

    async def fire(request: FireRequest) -> None:
        entered = time.time()
        assert request.scheduled_at is not None
        late.append(entered - request.scheduled_at.timestamp())
        if len(late) >= wanted:
            done.set()

    async with Scheduler(_flow(jobs), store, SystemClock(), fire):
        await asyncio.wait_for(done.wait(), timeout=seconds + 10)
    return late[:wanted]


async def _baseline_lateness(jobs: int, seconds: int) -> list[float]:
    first = int(time.time()) + 1
    late: list[float] = []
    for second in range(first, first + seconds):
        for _ in range(jobs):
            await asyncio.sleep(second - time.time())
            late.append(time.time() - second)
    return late


def measure_lateness(
    jobs: int = 20, seconds: int = 10, store_url: str | None = None
) -> LatenessReport:
    """Run the scheduler and the bare-asyncio baseline, one after the other."""
    with tempfile.TemporaryDirectory(prefix="tideflow-bench-") as tmp:
        url = store_url or f"sqlite:///{Path(tmp) / 'state.db'}"
        with Store.open(url) as store:
            scheduler = asyncio.run(_scheduler_lateness(jobs, seconds, store))
    baseline = asyncio.run(_baseline_lateness(jobs, seconds))
    return LatenessReport(jobs, seconds, Lateness.of(scheduler), Lateness.of(baseline))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "dispatch", "lateness"), default="all")
    parser.add_argument("--dispatch-jobs", type=int, default=1000, help="no-op jobs (1000)")
    parser.add_argument("--jobs", type=int, default=20, help="jobs on every(1s) (20)")
    parser.add_argument("--seconds", type=int, default=10, help="seconds to run each side (10)")
    parser.add_argument("--store", default=None, help="state store URL (a temporary SQLite file)")
    args = parser.parse_args(argv)
    if args.part in ("all", "dispatch"):
        print_dispatch(args.dispatch_jobs)
    if args.part in ("all", "lateness"):
        print_lateness(args.jobs, args.seconds, args.store)


def print_dispatch(jobs: int) -> None:
    from dispatch_bench import measure_dispatch  # beside this file

    worst = 0.0
    for shape in ("chain", "fan-out"):
        result = measure_dispatch(shape, jobs, concurrency=2)
        worst = max(worst, result.ms_per_transition)
        print("dispatch: " + result.describe())
    met = worst < TARGET_DISPATCH_MS
    print(f"target under {TARGET_DISPATCH_MS:g} ms per transition: {'met' if met else 'NOT met'}")
    sys.stdout.flush()


def print_lateness(jobs: int, seconds: int, store: str | None) -> None:
    report = measure_lateness(jobs, seconds, store)
    print(
        f"fire-time lateness: {report.jobs} jobs on every(1s) for {report.seconds} s "
        f"= {report.scheduler.count} firings"
    )
    print(f"{'':<28}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for label, row in (
        ("scheduler (SQLite store)", report.scheduler),
        ("baseline (asyncio.sleep)", report.baseline),
    ):
        print(f"{label:<28}{row.p50:>9.2f}{row.p99:>9.2f}{row.max:>9.2f}")
    ratio = report.scheduler.p99 / report.baseline.p99 if report.baseline.p99 > 0 else float("inf")
    print(f"p99 ratio scheduler / baseline: {ratio:.1f}x")
    met = report.scheduler.p99 < TARGET_P99_MS
    print(f"target p99 < {TARGET_P99_MS:.0f} ms: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
