"""What running attempts on an executor costs: the dispatch bench's chain and fan-out
of no-op Python jobs on `local` and on `dask`, beside Dask's own overhead.

Three figures per shape, in ms per job, all measured in the same run:

- `local`: the orchestrator's warm worker pool (the dispatch bench's setting);
- `dask`: every job an attempt on a real cluster started here (a `dask scheduler`
  and two `dask worker` processes on loopback), each attempt in a process of its
  own on the worker (its own process group, so a timeout or a cancellation kills
  it and what it started);
- `dask futures`: the engine alone: the same chain (each task waiting for the one
  before) or fan-out of no-op functions submitted with `client.submit`, no
  tideflow at all. The ratio `dask / dask futures` is tideflow's cost on top of
  the engine: the run history, the attempt's process, its request and reply.

Run: `.venv/bin/python bench/executor_bench.py [--jobs 1000] [--shape chain]
[--shape fan-out]`. Needs the `tideflow[dask]` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from dispatch_bench import noop  # noqa: E402


@dataclass(frozen=True)
class Figure:
    label: str
    shape: str
    jobs: int
    seconds: float

    @property
    def ms_per_job(self) -> float:
        return self.seconds / self.jobs * 1000


def _flow(shape: str, jobs: int, executor: dict[str, Any] | None, concurrency: int) -> Any:
    from tideflow.compiler.ir import EdgeKind, ExecutorNode, FlowInfo, FlowIR, JobNode, node_id

    flow = FlowIR(FlowInfo(name=f"bench-{shape}", source="", concurrency=concurrency))
    block = None
    if executor is not None:
        flow.add(ExecutorNode("cluster", "dask", executor))
        block = "cluster"
    names = [f"j{i:05d}" for i in range(jobs)]
    for index, name in enumerate(names):
        flow.add(JobNode(name, run="dispatch_bench:noop", executor=block))
        parent = None
        if index and shape == "chain":
            parent = names[index - 1]
        elif index and shape == "fan-out":
            parent = names[0]
        if parent is not None:
            flow.connect(node_id("job", name), node_id("job", parent), EdgeKind.DEPENDS_ON)
    return flow, names


def measure_tideflow(
    label: str, shape: str, jobs: int, executor: dict[str, Any] | None, concurrency: int
) -> Figure:
    """One flow run of `jobs` no-op jobs through the orchestrator's executor driver,
    history in a fresh SQLite store; a warm-up run first (workers, connections)."""
    from tideflow.runtime.executor import Executor, RunRequest
    from tideflow.runtime.store import Store

    flow, names = _flow(shape, jobs, executor, concurrency)
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(f"sqlite:///{folder}/state.db")

        async def run() -> float:
            driver = Executor(flow, store, min_workers=concurrency)
            driver.start()
            warmup = await driver.submit(RunRequest(names[-1]))
            if str(await driver.wait(warmup)) != "success":
                raise RuntimeError(f"{label}: the warm-up run failed")
            started = time.perf_counter()
            flow_run = await driver.submit(RunRequest(names[0]))
            status = await driver.wait(flow_run)
            elapsed = time.perf_counter() - started
            await driver.shutdown(5.0)
            if str(status) != "success":
                raise RuntimeError(f"{label}: the bench flow run ended {status}")
            return elapsed

        try:
            seconds = asyncio.run(run())
        finally:
            store.close()
    return Figure(label, shape, jobs, seconds)


def _noop_after(*_: Any) -> None:
    """A Dask task doing nothing, after the tasks it is given."""


def measure_futures(address: str, shape: str, jobs: int) -> Figure:
    """The same shape as plain Dask futures: the engine's own overhead."""
    from distributed import Client, wait

    with Client(address, timeout=30) as client:
        client.submit(_noop_after, pure=False).result()  # connections warm
        started = time.perf_counter()
        if shape == "chain":
            future = client.submit(_noop_after, pure=False)
            for _ in range(jobs - 1):
                future = client.submit(_noop_after, future, pure=False)
            future.result()
        else:
            root = client.submit(_noop_after, pure=False)
            wait([client.submit(_noop_after, root, pure=False) for _ in range(jobs - 1)])
        elapsed = time.perf_counter() - started
    return Figure("dask futures", shape, jobs, elapsed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--shape", action="append", choices=("chain", "fan-out"))
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args(argv)
    shapes = args.shape or ["chain", "fan-out"]

    from tideflow.testing.dask import WorkerSpec, running_dask_cluster

    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH", "")) if p
    )
    noop(None)  # the job the flows run, importable from the workers too
    workers = (WorkerSpec("w1", nthreads=1), WorkerSpec("w2", nthreads=1))
    figures: list[Figure] = []
    with running_dask_cluster(workers) as cluster:
        options = {"scheduler": cluster.address}
        for shape in shapes:
            figures.append(measure_tideflow("local", shape, args.jobs, None, args.concurrency))
            figures.append(measure_tideflow("dask", shape, args.jobs, options, args.concurrency))
            figures.append(measure_futures(cluster.address, shape, args.jobs))
    print(
        f"{args.jobs} no-op jobs, concurrency {args.concurrency}, a scheduler and "
        f"{len(workers)} workers on loopback; ms per job (lower is better)"
    )
    print(f"{'shape':<8} {'local':>9} {'dask':>9} {'futures':>9} {'dask/futures':>13}")
    for shape in shapes:
        by = {f.label: f for f in figures if f.shape == shape}
        local, dask, futures = by["local"], by["dask"], by["dask futures"]
        print(
            f"{shape:<8} {local.ms_per_job:>9.2f} {dask.ms_per_job:>9.2f} "
            f"{futures.ms_per_job:>9.2f} {dask.ms_per_job / futures.ms_per_job:>12.1f}x"
        )
    ratios = [
        next(f for f in figures if f.shape == s and f.label == "dask").seconds
        / next(f for f in figures if f.shape == s and f.label == "local").seconds
        for s in shapes
    ]
    print(f"dask against local: {statistics.mean(ratios):.1f}x (mean over the shapes)")


if __name__ == "__main__":
    main()
