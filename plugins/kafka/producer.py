"""The producer: one idempotent librdkafka producer and the one thread that uses it.

`publish` hands its batch to the producer's thread and returns once the
cluster acknowledged every message: `enable.idempotence=true` (so `acks=all`,
and no duplicates or reordering from the client's own retries), one delivery
callback per batch counting the reports down. The thread takes every batch
waiting, produces them, then flushes (which sends at once rather than after
`linger.ms`, and serves the delivery reports), so concurrent publishes share
round trips. A message not acknowledged within `request_timeout` (librdkafka's
`message.timeout.ms`) makes `publish` raise `BackendError` naming the failure;
some messages of that batch may have been written (at least once). After an
error that leaves the producer failing every later message (a fatal one, or
PRODUCER_FENCED, which Tansu 0.6 answers once messages timed out during an
outage), the next `publish` starts a new producer. Keys are hashed with
murmur2, as Java clients do, so that one key lands on one partition whichever
client published it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Final, final

from tideflow.plugins.api import BackendError, OutgoingMessage

from .client import GRACE, describe

__all__ = ["Batch", "Publisher"]

_LOG: Final = logging.getLogger(__name__)

# Delivery errors after which a producer fails every later message: its idempotence
# state is gone. Seen on Tansu 0.6: after messages time out, librdkafka bumps the
# producer epoch and the server answers PRODUCER_FENCED from then on. A new
# producer (a new producer id) starts over.
_PRODUCER_RESET_ERRORS: Final = frozenset(
    {"PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH", "_FENCED", "_FATAL"}
)


@final
class Batch:
    """One `publish` call: its messages, counted down by their delivery reports (on
    the producer's thread), and the future its caller awaits."""

    __slots__ = (
        "deadline",
        "done",
        "failures",
        "first_error",
        "left",
        "loop",
        "messages",
        "publisher",
        "topic",
    )

    def __init__(
        self,
        publisher: Publisher,
        topic: str,
        messages: Sequence[OutgoingMessage],
        deadline: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.publisher = publisher
        self.topic = topic
        self.messages = messages
        self.deadline = deadline
        self.left = len(messages)
        self.failures = 0
        self.first_error: str | None = None
        self.loop = loop
        self.done: asyncio.Future[None] = loop.create_future()

    def on_delivery(self, error: Any, _message: Any) -> None:
        if error is not None:
            self.failures += 1
            described = f"{error.str()} ({error.name()})"
            if self.first_error is None:
                self.first_error = described
            if error.fatal() or error.name() in _PRODUCER_RESET_ERRORS:
                self.publisher.broken = described
        self.left -= 1
        if self.left == 0:
            self._settle(None)

    def fail(self, error: BackendError) -> None:
        """Give up on the batch before every message was handed to librdkafka."""
        self._settle(error)

    def _settle(self, error: BackendError | None) -> None:
        def settle() -> None:
            if self.done.done():
                return
            if error is not None:
                self.done.set_exception(error)
            else:
                self.done.set_result(None)

        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            self.loop.call_soon_threadsafe(settle)


@final
class Publisher:
    """The producer and the one thread that uses it. The thread takes every batch
    waiting, hands their messages to librdkafka, then flushes: a flush sends at once
    (it does not wait for `linger.ms`) and serves the delivery reports, on this
    thread only. Batches published concurrently share one flush."""

    def __init__(self, kafka: ModuleType, conf: dict[str, Any], name: str, timeout: float) -> None:
        #: why this producer must be replaced, once it must
        self.broken: str | None = None
        self.producer = kafka.Producer({**conf, "error_cb": self._on_error})
        self._timeout = timeout
        self._batches: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self.closed: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, name=f"{name}-producer", daemon=True)
        self._thread.start()

    def submit(self, batch: Batch) -> None:
        self._batches.put(batch)

    def close(self) -> concurrent.futures.Future[int]:
        """Deliver what is queued, then stop; the future gives how many messages
        were still undelivered after the timeout (their `publish` raised)."""
        self._batches.put(None)
        return self.closed

    def _refuse_late_batches(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                late = self._batches.get_nowait()
                if late is not None:
                    late.fail(BackendError("the kafka producer was replaced; publish again"))

    def _on_error(self, error: Any) -> None:
        if error.fatal():
            self.broken = f"{error.str()} ({error.name()})"
        _LOG.debug("kafka producer: %s", error.str())

    def _run(self) -> None:
        closing = False
        while not closing:
            waiting = [self._batches.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    waiting.append(self._batches.get_nowait())
            for batch in waiting:
                if batch is None:
                    closing = True
                else:
                    self._produce(batch)
            if not closing:
                self.producer.flush(self._timeout + GRACE)
        try:
            left = int(self.producer.flush(self._timeout))
            if left:  # fail them now rather than at their deadline
                self.producer.purge()
                self.producer.flush(GRACE)
            self.producer.close()
        except BaseException as exc:
            self.closed.set_exception(exc)
        else:
            self.closed.set_result(left)
        finally:
            self._refuse_late_batches()

    def _produce(self, batch: Batch) -> None:
        produce = self.producer.produce
        topic, on_delivery = batch.topic, batch.on_delivery
        for message in batch.messages:
            headers = list(message.headers.items()) if message.headers else None
            while True:
                try:
                    produce(
                        topic, message.value, message.key, headers=headers, on_delivery=on_delivery
                    )
                    break
                except BufferError:  # librdkafka's queue is full: deliver some first
                    if time.monotonic() >= batch.deadline:
                        batch.fail(
                            BackendError(
                                f"publishing to topic {topic!r}: the producer's queue stayed full"
                            )
                        )
                        return
                    self.producer.poll(0.01)
                except Exception as exc:
                    batch.fail(
                        BackendError(f"publishing to topic {topic!r} failed: {describe(exc)}")
                    )
                    return
