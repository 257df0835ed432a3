"""Dispatch overhead of the executor: no-op Python jobs, history in SQLite.

A *task transition* is a job run changing state as the executor drives it:
pending -> running (an attempt starts on a worker) and running -> success (the
attempt is recorded). 1,000 jobs are 2,000 transitions. The figure reported is
the wall time of the whole flow run divided by that, beside the time of calling
the same function 1,000 times in a plain loop. Workers are started before the
clock starts (a warm orchestrator); the first-run figure is reported too.

Run: `.venv/bin/python bench/dispatch_bench.py [--jobs 1000] [--concurrency 2]`.
The module keeps its imports light: worker processes import it for `noop`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRANSITIONS_PER_JOB = 2


def noop(ctx: Any) -> None:
    """The job: does nothing."""


@dataclass(frozen=True)
class DispatchResult:
    shape: str  # "chain" or "fan-out"
    jobs: int
    concurrency: int
    seconds: float  # wall time of the flow run, workers already started
    loop_seconds: float  # the same calls in a plain loop

    @property
    def transitions(self) -> int:
        return self.jobs * TRANSITIONS_PER_JOB

    @property
    def ms_per_transition(self) -> float:
        return self.seconds / self.transitions * 1000

    @property
    def ms_per_job(self) -> float:
        return self.seconds / self.jobs * 1000

    def describe(self) -> str:
        return (
            f"{self.shape:8} {self.jobs} jobs, concurrency {self.concurrency}: "
            f"{self.seconds:.3f} s, {self.ms_per_transition:.3f} ms per transition "
            f"({self.ms_per_job:.3f} ms per job); plain loop {self.loop_seconds * 1e6:.0f} µs"
        )


def measure_dispatch(
    shape: str = "chain",
    jobs: int = 1000,
    *,
    concurrency: int = 2,
    state_dir: Path | None = None,
    warm: bool = True,
) -> DispatchResult:
    """Run `jobs` no-op Python jobs as a chain (each after the previous) or a fan-out
    (one root, every other job after it) through the executor, history in SQLite."""
    import asyncio

    from tideflow.compiler.ir import EdgeKind, FlowInfo, FlowIR, JobNode, node_id
    from tideflow.runtime.executor import Executor, RunRequest
    from tideflow.runtime.store import Store

    bench_dir = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (bench_dir, os.environ.get("PYTHONPATH", "")) if p
    )
    target = f"{Path(__file__).stem}:noop"
    flow = FlowIR(FlowInfo(name=f"bench-{shape}", source="", concurrency=concurrency))
    names = [f"j{i:05d}" for i in range(jobs)]
    for index, name in enumerate(names):
        flow.add(JobNode(name, run=target))
        parent = None
        if index and shape == "chain":
            parent = names[index - 1]
        elif index and shape == "fan-out":
            parent = names[0]
        elif shape not in ("chain", "fan-out"):
            raise ValueError(f"unknown shape {shape!r}")
        if parent is not None:
            flow.connect(node_id("job", name), node_id("job", parent), EdgeKind.DEPENDS_ON)

    with tempfile.TemporaryDirectory(dir=state_dir) as tmp:
        store = Store.open(f"sqlite:///{tmp}/state.db")

        async def run() -> float:
            executor = Executor(flow, store, min_workers=concurrency if warm else 0)
            executor.start()
            if warm:  # wait until the workers answer, so startup is not counted
                warmup = await executor.submit(RunRequest(names[-1]))
                await executor.wait(warmup)
            started = time.perf_counter()
            flow_run = await executor.submit(RunRequest(names[0]))
            status = await executor.wait(flow_run)
            elapsed = time.perf_counter() - started
            await executor.shutdown(1.0)
            if str(status) != "success":
                raise RuntimeError(f"bench flow run ended {status}")
            return elapsed

        try:
            seconds = asyncio.run(run())
        finally:
            store.close()

    started = time.perf_counter()
    for _ in range(jobs):
        noop(None)
    loop_seconds = time.perf_counter() - started
    return DispatchResult(shape, jobs, concurrency, seconds, loop_seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args(argv)
    for shape in ("chain", "fan-out"):
        print(measure_dispatch(shape, args.jobs, concurrency=args.concurrency).describe())
    cold = measure_dispatch("chain", args.jobs, concurrency=args.concurrency, warm=False)
    print("cold start, " + cold.describe())
    sys.stdout.flush()


if __name__ == "__main__":
    main()
