"""Stopping attempts: cancellations operators ask for through the store, timeouts,
and the orchestrator stopping.

A cancellation requested through `Store.request_cancel` is read every
`cancel_poll` seconds (`poll`, `requested`); the executor then kills the running
attempt (attempt `cancelled`). Killing is `kill`: the attempt's process is given
`kill_grace` seconds after SIGTERM, then killed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Final

from tideflow.runtime.model import AttemptStatus
from tideflow.runtime.store import Store

from .attempts import RunningAttempt

__all__ = ["CANCEL_POLL_SECONDS", "KILL_GRACE_SECONDS", "kill", "poll", "requested", "stop_reason"]

log = logging.getLogger("tideflow.executor")

CANCEL_POLL_SECONDS: Final = 0.5
KILL_GRACE_SECONDS: Final = 2.0
_CHUNK: Final = 500  # ids per cancel_requests query


async def poll(interval: float, check: Callable[[], None]) -> None:
    """Call `check` every `interval` seconds, for ever."""
    while True:
        await asyncio.sleep(interval)
        try:
            check()
        except Exception:  # the store may be briefly unavailable: try next time
            log.exception("cannot read cancellation requests")


def requested(store: Store, job_run_ids: Sequence[int]) -> set[int]:
    """Which of the job runs an operator asked to cancel."""
    found: set[int] = set()
    for start in range(0, len(job_run_ids), _CHUNK):
        found |= store.cancel_requests(job_run_ids[start : start + _CHUNK])
    return found


def kill(running: RunningAttempt, reason: AttemptStatus, grace: float) -> None:
    """Kill a running attempt (once), remembering why."""
    if running.reason is None:
        running.reason = reason
        running.killing = running.kill(grace)


def stop_reason(reason: AttemptStatus) -> str:
    """Why a job run was stopped, as its note and log line say."""
    if reason is AttemptStatus.CANCELLED:
        return "cancellation requested"
    return "the orchestrator stopped"
