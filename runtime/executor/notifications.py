"""Run events for notifiers: what happened to a job run, delivered in the background.

Event names come from `compiler.schema.NOTIFY_EVENTS`:
- `success`: a job run succeeded;
- `retry`: an attempt failed and another will follow;
- `timeout`: an attempt timed out (beside `retry` or `failure`);
- `failure`: a job run failed (its last attempt failed);
- `retries_exhausted`: a job run failed after every attempt its policy allows,
  when that is more than one (sent right after `failure`, same job run id);
- `lost`: `recover()` found an attempt that was running when the orchestrator died.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

__all__ = ["Deliveries", "Notify", "RunEvent"]

log = logging.getLogger("tideflow.executor")


@dataclass(frozen=True, slots=True)
class RunEvent:
    """Something a notifier may be told: `event` is a name from NOTIFY_EVENTS."""

    event: str
    flow: str
    job: str
    flow_run_id: int
    job_run_id: int
    attempt: int | None  # the attempt it is about; None when no attempt ran
    status: str  # the attempt's status (or the job run's, when no attempt ran)
    error: str | None  # one line, secrets redacted
    at: datetime


Notify = Callable[[RunEvent], Awaitable[None]]


class Deliveries:
    """Hands run events to `notify`, each awaited in the background: a failure is
    only logged, and nothing waits for a slow notifier but `wait`."""

    def __init__(self, notify: Notify) -> None:
        self.notify = notify
        self._pending: set[asyncio.Task[None]] = set()

    def send(self, event: RunEvent) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def wait(self, timeout: float) -> None:
        """Give the deliveries under way at most `timeout` seconds to end."""
        if self._pending:
            await asyncio.wait(self._pending, timeout=timeout)

    async def _deliver(self, event: RunEvent) -> None:
        try:
            await self.notify(event)
        except Exception:
            log.exception("notification %s for job run %d failed", event.event, event.job_run_id)
