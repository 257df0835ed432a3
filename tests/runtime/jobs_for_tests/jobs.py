"""Job callables for the executor's tests. Each takes its inputs from `ctx.params`."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# A job that waits for the test to let it go never waits longer than this.
LIMIT_SECONDS = 60.0


def noop(ctx: Any) -> None:
    """Does nothing (dispatch overhead)."""


def no_argument() -> None:
    """A callable that takes no context."""


def _write(path: str, text: str) -> None:
    """Write a whole file at once (a reader never sees it empty or half written)."""
    partial = Path(f"{path}.partial")
    partial.write_text(text)
    partial.rename(path)


def _append(path: str, record: dict[str, Any]) -> None:
    with Path(path).open("a") as out:
        out.write(json.dumps(record) + "\n")


def mark(ctx: Any) -> None:
    """Appends (job, attempt, start, end) to params["log"], working params["seconds"]."""
    start = time.time()
    time.sleep(float(ctx.params.get("seconds", 0)))
    _append(
        ctx.params["log"],
        {"job": ctx.job, "attempt": ctx.attempt, "start": start, "end": time.time()},
    )


def crowd(ctx: Any) -> None:
    """Like `mark`, but first waits until at least params["together"] jobs have
    started (each leaves a file in params["folder"]): jobs that may run at once are
    seen running at once however late the OS gives their processes the CPU. Gives up
    after LIMIT_SECONDS, so an executor that runs them one by one fails the test."""
    start = time.time()
    folder = Path(ctx.params["folder"])
    (folder / f"{ctx.job}.started").touch()
    deadline = time.monotonic() + LIMIT_SECONDS
    while (
        len(list(folder.glob("*.started"))) < int(ctx.params["together"])
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    time.sleep(float(ctx.params.get("seconds", 0)))
    _append(
        ctx.params["log"],
        {"job": ctx.job, "attempt": ctx.attempt, "start": start, "end": time.time()},
    )


def fail(ctx: Any) -> None:
    """Raises ValueError(params["message"])."""
    _raise_value_error(ctx.params.get("message", "bad row 7"))


def _raise_value_error(message: str) -> None:
    raise ValueError(message)


def fail_until(ctx: Any) -> None:
    """Fails until attempt params["succeed_on"]; each attempt is appended to params["log"]."""
    _append(ctx.params["log"], {"job": ctx.job, "attempt": ctx.attempt, "at": time.time()})
    if ctx.attempt < int(ctx.params["succeed_on"]):
        raise RuntimeError(f"attempt {ctx.attempt} fails")


def segfault(ctx: Any) -> None:
    print("about to crash", flush=True)
    ctypes.string_at(0)


def exit_hard(ctx: Any) -> None:
    os._exit(int(ctx.params.get("code", 3)))


def sys_exit(ctx: Any) -> None:
    sys.exit(int(ctx.params.get("code", 4)))


def wait_for_release(ctx: Any) -> None:
    """Writes its pid to params["started"], then waits until params["release"] exists."""
    _write(ctx.params["started"], str(os.getpid()))
    deadline = time.monotonic() + LIMIT_SECONDS
    release = Path(ctx.params["release"])
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def spawn_and_hang(ctx: Any) -> None:
    """Starts `sleep 60`, writes both pids to params["pids"], then hangs."""
    child = subprocess.Popen(["sleep", "60"])
    _write(ctx.params["pids"], json.dumps([os.getpid(), child.pid]))
    time.sleep(LIMIT_SECONDS)


def chatty(ctx: Any) -> None:
    """Writes through print, C-level (a subprocess), stderr and the context's logger."""
    print("from print")
    sys.stdout.flush()
    os.system("echo from-a-subprocess")
    libc = ctypes.CDLL(None)
    libc.printf(b"from-c-printf\n")
    sys.stderr.write("to stderr\n")
    ctx.logger.info("hello %s", "there")
    ctx.logger.warning("careful")
    ctx.logger.debug("details")


def show_context(ctx: Any) -> None:
    """Writes what the context holds to params["out"]."""
    record = {
        "run_id": ctx.run_id,
        "flow": ctx.flow,
        "job": ctx.job,
        "attempt": ctx.attempt,
        "scheduled_at": None if ctx.scheduled_at is None else ctx.scheduled_at.isoformat(),
        "params": {k: v for k, v in ctx.params.items() if k != "out"},
        "env": dict(ctx.env),
        "os_env": {k: os.environ.get(k) for k in ctx.env},
    }
    _write(ctx.params["out"], json.dumps(record))


def leak_secret(ctx: Any) -> None:
    """Prints, logs and raises with the value of its TOKEN variable."""
    token = ctx.env["TOKEN"]
    print(f"token is {token}")
    ctx.logger.error("token %s", token)
    raise RuntimeError(f"rejected token {token}")


def publish_some(ctx: Any) -> None:
    ctx.publish("events", {"n": 1})
    ctx.publish("events", "two", key="k2")
    ctx.publish("events", b"three")


def publish_undeclared(ctx: Any) -> None:
    ctx.publish("elsewhere", "nope")


async def async_job(ctx: Any) -> None:
    await asyncio.sleep(0)
    _write(ctx.params["out"], "async ran")


def pid(ctx: Any) -> None:
    """Appends its worker's pid to params["log"]."""
    _append(ctx.params["log"], {"job": ctx.job, "pid": os.getpid()})
