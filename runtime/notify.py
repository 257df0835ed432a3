"""Delivering run events to the flow's `notify` blocks.

A block gets an event when its `on` list names it and its `jobs` list (if any)
holds the job. When a job run fails after every attempt its policy allows, the
executor sends `failure` then `retries_exhausted`; a block that listens to both
gets one message, the more specific `retries_exhausted`.

Delivery never blocks or fails a run: notifiers are called in the background
and a failed delivery is logged (without the notifier's address, which may be
a secret).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from tideflow.compiler.ir import FlowIR, NotifyNode
from tideflow.plugins import BackendError, Notifier, NotifyEvent

from .backends import open_notifier
from .executor import RunEvent
from .secrets import UnresolvedValueError

log = logging.getLogger("tideflow.notify")


class Notifications:
    """The notify blocks of one flow; `await deliver(event)` as the executor's `notify`."""

    def __init__(self, flow: FlowIR) -> None:
        self.flow = flow
        self.blocks: Mapping[str, NotifyNode] = flow.notifiers
        self._notifiers: dict[str, Notifier] = {}
        self.delivered = 0
        self.failed = 0

    def listeners(self, event: RunEvent) -> list[NotifyNode]:
        chosen = []
        for block in self.blocks.values():
            if event.event not in block.on or (block.jobs and event.job not in block.jobs):
                continue
            if event.event == "failure" and "retries_exhausted" in block.on:
                attempts = self.flow.jobs[event.job].retry.attempts
                if attempts > 1 and event.attempt is not None and event.attempt >= attempts:
                    continue  # `retries_exhausted` follows for this job run
            chosen.append(block)
        return chosen

    async def deliver(self, event: RunEvent) -> None:
        blocks = self.listeners(event)
        if not blocks:
            return
        message = NotifyEvent(
            event=event.event,
            flow=event.flow,
            summary=_summary(event),
            occurred_at=event.at,
            job=event.job,
            run_id=str(event.job_run_id),
            attempt=event.attempt,
            details={
                "flow_run_id": event.flow_run_id,
                "status": event.status,
                "error": event.error,
            },
        )
        await asyncio.gather(*(self._send(block, message) for block in blocks))

    async def consumer_event(self, event: str, consumer: str, summary: str) -> None:
        """An event about a consumer (`crash_loop`): blocks that listen to it and are not
        limited to some jobs."""
        blocks = [b for b in self.blocks.values() if event in b.on and not b.jobs]
        message = NotifyEvent(
            event=event,
            flow=self.flow.info.name,
            summary=summary,
            occurred_at=datetime.now(UTC),
            consumer=consumer,
        )
        await asyncio.gather(*(self._send(block, message) for block in blocks))

    async def _send(self, block: NotifyNode, message: NotifyEvent) -> None:
        try:
            notifier = self._notifiers.get(block.name)
            if notifier is None:
                notifier = self._notifiers[block.name] = open_notifier(self.flow, block)
            await notifier.send(message)
            self.delivered += 1
        except (BackendError, UnresolvedValueError) as exc:
            self.failed += 1
            log.warning('notify "%s" could not deliver %s: %s', block.name, message.event, exc)
        except Exception as exc:
            self.failed += 1
            log.warning('notify "%s" failed (%s)', block.name, type(exc).__name__)

    async def aclose(self) -> None:
        notifiers, self._notifiers = self._notifiers, {}
        for notifier in notifiers.values():
            with contextlib.suppress(Exception):
                await notifier.aclose()


def _summary(event: RunEvent) -> str:
    what = {
        "success": "succeeded",
        "failure": "failed",
        "retry": "failed; it will be retried",
        "retries_exhausted": "failed after every attempt",
        "timeout": "timed out",
        "lost": "was lost when the orchestrator stopped",
    }.get(event.event, event.event)
    attempt = f" (attempt {event.attempt})" if event.attempt else ""
    error = f": {event.error}" if event.error else ""
    return f'job "{event.job}" of flow "{event.flow}" {what}{attempt}{error}'
