"""Resident memory of tideflow's processes, beside the targets in DESIGN.md.

Three processes, each measured from /proc/PID/status (VmRSS: resident now; VmHWM:
the peak so far) once it is in the state it spends its life in:

- a consumer instance, idle: `tideflow worker quickstart.flow workers --ir IR.json`
  on the quickstart flow's embedded broker (the flow's IR written beforehand by
  `tideflow compile`; the state store created beforehand, as the orchestrator
  starting the instances would have), once it has logged that it consumes and has
  written a heartbeat to the state store (its fetch loop is running, the topic is
  empty).
  Target: under 60 MB. Beside it the same instance without `--ir`: it compiles
  the flow file itself (as the `local` scaler's instances still do).
- a job worker, idle: a `python -m tideflow.runtime.job_worker` process started by
  the orchestrator's worker pool (`runtime.worker_pool.Worker`), once it has
  answered one no-op attempt and waits for the next. No target; printed for scale.
- the orchestrator: `tideflow run quickstart.flow`, once the first run of the
  `supply` job's flow has finished (schedules fired, jobs run, history written,
  the autoscaler polling). Target: under 80 MB. Its children (job workers,
  consumer instances started by the `local` scaler) are listed beside it.

Every wait is for a condition, bounded only against a hang; every process started
here is stopped (SIGTERM, then SIGKILL) before the script exits. The flow and its
handlers are copied to a temporary folder, so the embedded broker and the state
store start empty and nothing is written into the repository.

Run: `.venv/bin/python bench/memory_bench.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tideflow.plugins.api import ready_message
from tideflow.runtime.model import RunStatus
from tideflow.runtime.store import Store
from tideflow.runtime.worker_pool import WORKER_MODULE, Worker

REPO: Final = Path(__file__).resolve().parent.parent
EXAMPLE: Final = REPO / "examples" / "quickstart.flow"
HANDLERS: Final = REPO / "examples" / "quickstart"
CONSUMER: Final = "workers"
#: Targets from DESIGN.md, in MB (2**20 bytes) of VmRSS.
CONSUMER_TARGET: Final = 60.0
ORCHESTRATOR_TARGET: Final = 80.0
#: Longest any one wait may take: a bound against a hang, not a measurement.
HANG_LIMIT: Final = 120.0


@dataclass(frozen=True, slots=True)
class Memory:
    rss_mb: float  # VmRSS
    peak_mb: float  # VmHWM


def memory(pid: int) -> Memory:
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024  # kB -> MB
    return Memory(fields["VmRSS"], fields["VmHWM"])


def children(pid: int) -> list[int]:
    """Direct children of `pid` (any thread of it)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found.extend(int(p) for p in (task / "children").read_text().split())
    return found


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def wait_for(condition: Callable[[], bool], what: str, process: subprocess.Popen[str]) -> None:
    """Poll `condition` until it holds; fail when `process` ends first or on a hang."""
    deadline = time.monotonic() + HANG_LIMIT
    while not condition():
        if process.poll() is not None:
            raise SystemExit(f"{what}: the process exited with {process.returncode} first")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not reached within {HANG_LIMIT:g}s (hung?)")
        time.sleep(0.05)


class Output:
    """Collects a process's output lines on a thread, so that its pipe never fills."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        stream = process.stdout
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line.rstrip("\n"))

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def tail(self, count: int = 20) -> str:
        return "\n".join(self.lines[-count:])


@contextlib.contextmanager
def started(argv: list[str], cwd: Path) -> Iterator[tuple[subprocess.Popen[str], Output]]:
    """Start `argv` in a session of its own; on the way out, stop it and its children."""
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        start_new_session=True,
    )
    output = Output(process)
    try:
        yield process, output
    except BaseException:
        print(output.tail(), file=sys.stderr)
        raise
    finally:
        stop(process)


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(HANG_LIMIT / 2)
    # whatever is left of its session (instances, job workers) goes too
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def tideflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "tideflow", *args]


def line(name: str, figure: Memory, target: float | None) -> str:
    text = f"{name:<34} RSS {figure.rss_mb:6.1f} MB   peak {figure.peak_mb:6.1f} MB"
    if target is None:
        return text
    verdict = "ok" if figure.rss_mb < target else "OVER"
    return f"{text}   target < {target:g} MB: {verdict}"


# --- the three processes -------------------------------------------------------------


def consumer_instance(folder: Path, *, ir: Path | None) -> Memory:
    state = folder / "consumer-state.db"
    instance_id = f"memory-bench-consumer-{'ir' if ir else 'source'}"
    argv = tideflow(
        "worker", str(folder / EXAMPLE.name), CONSUMER, "--state", str(state),
        "--instance-id", instance_id, *(["--ir", str(ir)] if ir else []),
    )  # fmt: skip
    # the state store exists before any instance starts (the orchestrator whose scaler
    # starts instances made it): an instance finds it up to date and never migrates
    Store.open(str(state)).close()
    with started(argv, folder) as (process, output):
        wait_for(lambda: output.has(ready_message(instance_id)), "consumer ready", process)
        store = Store.open(str(state), migrate=False, create=False)
        try:

            def beating() -> bool:
                rows = store.instances(consumer=CONSUMER)
                return any(r.id == instance_id and r.heartbeat_at > r.started_at for r in rows)

            wait_for(beating, "consumer heartbeat", process)
        finally:
            store.close()
        return memory(process.pid)


def job_worker() -> Memory:
    async def measure() -> Memory:
        worker = Worker()
        try:
            request = {
                "target": "os:getpid",  # takes nothing: a no-op job
                "run_id": "memory-bench",
                "flow": "bench",
                "job": "noop",
                "attempt": 1,
                "scheduled_at": None,
                "params": {},
                "env": {},
                "secrets": (),
                "publishes": (),
                "publisher": None,
                "sys_path": (),
            }
            reply = await asyncio.wait_for(worker.start(request), HANG_LIMIT)
            if reply is None or not reply["ok"]:
                raise SystemExit(f"job worker: the no-op attempt failed: {reply}")
            return memory(worker.pid)
        finally:
            await worker.kill(5.0)

    return asyncio.run(measure())


def orchestrator(folder: Path) -> tuple[Memory, list[tuple[str, Memory]]]:
    state = folder / "orchestrator-state.db"
    argv = tideflow("run", str(folder / EXAMPLE.name), "--state", str(state), "--no-live")
    with started(argv, folder) as (process, output):
        wait_for(lambda: output.has("state store:"), "orchestrator start", process)
        store = Store.open(str(state), migrate=False, create=False)
        try:

            def first_run_done() -> bool:
                runs = store.flow_runs(flow="quickstart", limit=None)
                return any(r.root_job == "supply" and r.status.finished for r in runs)

            wait_for(first_run_done, "first flow run", process)
            runs = store.flow_runs(flow="quickstart", limit=None)
            if not any(r.status is RunStatus.SUCCESS for r in runs):
                raise SystemExit(f"orchestrator: no flow run succeeded: {runs}")
        finally:
            store.close()
        figure = memory(process.pid)
        kids: list[tuple[str, Memory]] = []
        for pid in children(process.pid):
            with contextlib.suppress(OSError, KeyError):
                cmd = command_line(pid)
                kind = "job worker" if WORKER_MODULE in cmd else "consumer instance"
                kids.append((f"  child {pid} ({kind})", memory(pid)))
        return figure, kids


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tideflow-memory-") as tmp:
        folder = Path(tmp)
        shutil.copy(EXAMPLE, folder / EXAMPLE.name)
        shutil.copytree(
            HANDLERS, folder / HANDLERS.name, ignore=shutil.ignore_patterns("__pycache__")
        )
        ir = folder / "quickstart.ir.json"
        subprocess.run(
            tideflow("compile", EXAMPLE.name, "-o", str(ir)), cwd=folder, check=True, timeout=60
        )
        print("resident memory (MB = 2**20 bytes), from /proc/PID/status")
        figure = consumer_instance(folder, ir=ir)
        print(line("consumer instance, idle", figure, CONSUMER_TARGET))
        figure = consumer_instance(folder, ir=None)
        print(line("  the same, compiling the .flow", figure, None))
        print(line("job worker, idle", job_worker(), None))
        figure, kids = orchestrator(folder)
        print(line("orchestrator, quickstart running", figure, ORCHESTRATOR_TARGET))
        for name, kid in kids:
            print(line(name, kid, None))


if __name__ == "__main__":
    main()
