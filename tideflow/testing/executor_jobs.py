"""Job functions the executor contract runs (`tideflow.testing.executor_jobs:NAME`).

They live in tideflow itself so that wherever an executor runs an attempt (a Dask
worker, a pod built from an image with tideflow installed) they can be imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

__all__ = ["exits", "fails", "prints_env", "sleeps", "succeeds"]


def succeeds(ctx: Any) -> None:
    """Prints a line on each stream, logs at two levels, echoes its parameters."""
    print(f"out: params={sorted(ctx.params.items())} attempt={ctx.attempt}")
    print("err: a line on stderr", file=sys.stderr)
    ctx.logger.info("an info record from %s", ctx.job)
    ctx.logger.warning("a warning record")


def fails(ctx: Any) -> None:
    """Raises `ValueError` from a function of its own (the error's function)."""
    print("about to fail")
    _raise_value_error(ctx.params.get("why", "the contract asked for it"))


def _raise_value_error(why: str) -> None:
    raise ValueError(why)


def exits(ctx: Any) -> None:
    """`sys.exit` with the code in `params["code"]`."""
    sys.exit(int(ctx.params.get("code", 3)))


def prints_env(ctx: Any) -> None:
    """Prints whether each variable in `params["expect"]` has its expected value
    (never the values themselves)."""
    for name, value in sorted(ctx.params.get("expect", {}).items()):
        print(f"{name}: {'match' if os.environ.get(name) == value else 'differs'}")


def sleeps(ctx: Any) -> None:
    """Starts a child `sleep`, prints both pids, then sleeps until killed (or
    `params["seconds"]`)."""
    seconds = float(ctx.params.get("seconds", 3600))
    child = subprocess.Popen(["sleep", str(int(seconds) + 1)])
    print(f"pid={os.getpid()} child={child.pid}", flush=True)
    time.sleep(seconds)
