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
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from tideflow.compiler.ir import FlowIR, NotifyNode
from tideflow.plugins.api import BackendError, Notifier, NotifyEvent

from .backends import open_notifier
from .executor import RunEvent
from .model import DeadLetterRow
from .secrets import UnresolvedValueError

log = logging.getLogger("tideflow.notify")

#: Dead letters described one by one in a `dead_letter` event's details (the count
#: covers them all).
MAX_DEAD_LETTERS_DESCRIBED: Final = 20


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

    async def consumer_event(
        self,
        event: str,
        consumer: str,
        summary: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """An event about a consumer (`crash_loop`, `dead_letter`): blocks that listen to
        it and are not limited to some jobs."""
        blocks = [b for b in self.blocks.values() if event in b.on and not b.jobs]
        if not blocks:
            return
        message = NotifyEvent(
            event=event,
            flow=self.flow.info.name,
            summary=summary,
            occurred_at=datetime.now(UTC),
            consumer=consumer,
            details=dict(details or {}),
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


def dead_letter_event(consumer: str, rows: Sequence[DeadLetterRow]) -> tuple[str, dict[str, Any]]:
    """The summary and details of one `dead_letter` event for `rows`, messages one
    consumer gave up on since the last event (oldest first)."""
    last = rows[-1]
    where = (
        f'to topic "{last.dead_letter_topic}"'
        if last.dead_letter_topic is not None
        else "(dropped: no dead_letter topic)"
    )
    count = "a message" if len(rows) == 1 else f"{len(rows)} messages"
    summary = (
        f'consumer "{consumer}" of flow "{last.flow}" dead-lettered {count} {where}; '
        f"last: id {last.message_id} of topic {last.topic} (partition {last.partition}) "
        f"after {last.failures} failures: {last.error}"
    )
    details = {
        "count": len(rows),
        "messages": [
            {
                "topic": r.topic,
                "partition": r.partition,
                "id": r.message_id,
                "failures": r.failures,
                "dead_letter_topic": r.dead_letter_topic,
                "error": r.error,
                "instance": r.instance_id,
                "at": r.at.isoformat(),
            }
            for r in rows[-MAX_DEAD_LETTERS_DESCRIBED:]
        ],
    }
    return summary, details
