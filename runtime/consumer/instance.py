"""One consumer instance: fetch from the broker, call the handler, acknowledge.

`ConsumerInstance.run()` is what `tideflow worker FILE CONSUMER` runs. It joins the
consumer's group, fetches at most `batch_size` messages at a time and never more
than its free slots (it holds at most `max_in_flight`, so that the rest of a
backlog stays with the broker for other instances; while every slot is taken it
calls `broker.keep_membership`, so that instances that join get partitions), and
calls the handler `handler(ctx, message)` for each: a coroutine function is
awaited on the event loop, any other callable runs in a thread pool. Messages of
one partition may be handled concurrently; set `max_in_flight = 1` where their
order matters.

Delivery is at least once. A message is acknowledged after its handler returned
and after what the handler published (`ctx.publish`) was accepted by the broker;
finished messages are acknowledged in batches. A handler that raises gets its
message back (`nack`) after a short backoff; once it has failed on the
`max_failures`-th delivery the message is published to the `dead_letter` topic,
with headers that say why, and acknowledged. Without a dead-letter topic it is
logged as an error, counted as dead-lettered and acknowledged: a poison message
never blocks its partition.

Stopping (`request_stop()`, SIGTERM or SIGINT, or the process that started the
instance going away): fetching stops, the messages held are finished and
acknowledged, the broker is closed. Whatever is not finished within the drain
budget (`drain_timeout` minus a margin for closing) is handed back to the broker
for another instance. A SIGINT during the drain exits at once; a SIGTERM again
does not (one stop may deliver it twice; SIGKILL is the way to insist).

Every `HEARTBEAT_INTERVAL` the instance writes its numbers to the state store
(`Store.instance_heartbeat`): handled, failed, dead-lettered, in flight, rate,
the partitions it holds when the broker says (a broker may offer
`assigned_partitions(topic, group)`), and its status; with it go the lines the
instance and its handler logged since the last heartbeat (`Store.consumer_logs`,
what `tideflow logs --consumer` shows). Each message given up on (dead-lettered or
dropped) is recorded once it is acknowledged (`Store.record_dead_letters`): the
orchestrator turns those rows into `dead_letter` notifications.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import enum
import inspect
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from tideflow.plugins.api import (
    DEFAULT_DRAIN_TIMEOUT,
    BackendClosedError,
    Broker,
    Message,
    OutgoingMessage,
    ReportsAssignedPartitions,
    ready_message,
)
from tideflow.runtime.backends import open_topic_broker
from tideflow.runtime.model import ConsumerLogLine, DeadLetterRow, InstanceStats, InstanceStatus
from tideflow.runtime.redaction import RedactingFilter

from .dead_letter import dead_letter_group, dead_letter_headers, one_line
from .handler import ConsumerContext, Handler, HandlerMessage, is_async

if TYPE_CHECKING:
    from tideflow.compiler.ir import ConsumerNode, FlowIR
    from tideflow.runtime.store import Store

__all__ = ["ConsumerInstance", "Outcome", "nack_delay"]

log = logging.getLogger("tideflow.consumer")

#: Seconds between two heartbeats written to the state store.
HEARTBEAT_INTERVAL: Final = 1.0
#: Longest one `consume` call waits: a stop request is noticed within this.
FETCH_WAIT: Final = 0.5
#: Redelivery delay after the n-th failure: NACK_FIRST * 2**(n-1), at most NACK_MAX.
NACK_FIRST: Final = 0.25
NACK_MAX: Final = 10.0
#: Window over which `rate` (messages handled per second) is measured.
RATE_WINDOW: Final = 10.0
#: Most threads that run synchronous handlers (fewer when `max_in_flight` is lower).
MAX_HANDLER_THREADS: Final = 128
#: Log lines an instance keeps for the store while the store cannot be written.
MAX_PENDING_LOG_LINES: Final = 5000


class Outcome(enum.Enum):
    """How `ConsumerInstance.run()` ended."""

    DRAINED = "drained"  # stopped after finishing everything it held
    DRAIN_TIMED_OUT = "drain_timed_out"  # stopped; unfinished messages were handed back
    CRASHED = "crashed"  # an unexpected error ended it


def nack_delay(delivery_count: int) -> float:
    """How long a failed message waits before it is delivered again."""
    return float(min(NACK_FIRST * 2 ** max(delivery_count - 1, 0), NACK_MAX))


# --- the instance ---------------------------------------------------------------------


@dataclass(slots=True)
class _Counters:
    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    last_error: str | None = None
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def sample(self, now: float) -> None:
        """Remember the count now (once a heartbeat), forgetting what `rate` no longer needs."""
        self.samples.append((now, self.handled))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()

    def rate(self, now: float) -> float:
        """Messages handled per second over the last RATE_WINDOW seconds or so."""
        if not self.samples:
            return 0.0
        first_at, first_count = self.samples[0]
        span = now - first_at
        return (self.handled - first_count) / span if span > 0 else 0.0


@dataclass(slots=True)
class _Finished:
    """A message whose handler is done: acknowledge it after publishing `outbox`."""

    message: Message
    outbox: list[tuple[str, OutgoingMessage]]
    dead_lettered: bool = False
    record: DeadLetterRow | None = None  # what the store is told once it is acknowledged


class _LogCapture(logging.Handler):
    """Keeps the lines an instance and its handler log, for the state store.

    Attached to `tideflow.consumer` while the instance runs; it keeps records of the
    handler's logger and the instance's own lines (those naming the instance or its
    consumer), without the instance's secrets nor any the process remembers
    (`redaction.RedactingFilter`). Handlers log from threads: `deque.append` is
    atomic."""

    def __init__(self, instance: ConsumerInstance) -> None:
        super().__init__(logging.INFO)
        self.addFilter(RedactingFilter())
        self._handler_logger = instance._handler_logger.name
        self._names = (instance.instance_id, f"consumer {instance.consumer.name}")
        self._redact = instance._redact
        self.lines: deque[ConsumerLogLine] = deque(maxlen=MAX_PENDING_LOG_LINES)
        self._instance_id = instance.instance_id

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.name != self._handler_logger and not any(n in text for n in self._names):
                return
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text = f"{text}: {type(exc).__name__}: {exc}"
            at = datetime.fromtimestamp(record.created, UTC)
            self.lines.append(
                ConsumerLogLine(self._instance_id, at, record.levelname, self._redact(text))
            )
        except Exception:
            self.handleError(record)

    def take(self) -> list[ConsumerLogLine]:
        taken: list[ConsumerLogLine] = []
        with contextlib.suppress(IndexError):
            while True:
                taken.append(self.lines.popleft())
        return taken


class ConsumerInstance:
    """One instance of a consumer. `await run()` consumes until stopped.

    `broker` is a client of the consumed topic's broker (it is closed at the end);
    `open_broker(topic)` gives a client for a topic handlers publish to, or the
    dead-letter topic (default: `runtime.backends.open_topic_broker`). `store`,
    when given, receives the instance's start and heartbeats. `redact` removes
    secret values from error texts before they are logged, stored or published.
    """

    def __init__(
        self,
        flow: FlowIR,
        consumer: ConsumerNode,
        handler: Handler,
        broker: Broker,
        *,
        instance_id: str,
        store: Store | None = None,
        drain_timeout: float | None = None,
        open_broker: Callable[[str], Broker] | None = None,
        redact: Callable[[str], str] = str,
        lifeline_fd: int | None = None,
        parent_pid: int | None = None,
    ) -> None:
        self.flow = flow
        self.consumer = consumer
        self.instance_id = instance_id
        self.broker = broker
        self.store = store
        if drain_timeout is None:
            drain_timeout = (
                consumer.scale.drain_timeout if consumer.scale else DEFAULT_DRAIN_TIMEOUT
            )
        self.drain_timeout = drain_timeout
        self.status = InstanceStatus.STARTING
        self._handler = handler
        self._async = is_async(handler)
        self._open_broker = open_broker or self._open_topic_broker
        self._redact = redact
        self._lifeline_fd = lifeline_fd
        self._parent_pid = parent_pid
        self._handler_logger = logging.getLogger(f"tideflow.consumer.{consumer.name}")
        self._topics = tuple(flow.topics)
        self._counters = _Counters()
        self._held: dict[tuple[int, str], Message] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._finished: list[_Finished] = []
        self._publishers: dict[str, Broker] = {}
        self._ensured: set[str] = set()
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._stop_reason: str | None = None
        self._signals = 0
        self._log_capture = _LogCapture(self)
        self._unrecorded: list[DeadLetterRow] = []  # dead letters the store has not got yet
        # created in run(): they belong to its event loop
        self._stop: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._settle_now: asyncio.Event | None = None
        self._all_settled: asyncio.Event | None = None

    # --- what the outside sees ------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Messages fetched and not yet acknowledged or handed back."""
        return len(self._held)

    def stats(self, status: InstanceStatus | None = None) -> InstanceStats:
        """The instance's numbers now, as a heartbeat reports them."""
        c = self._counters
        return InstanceStats(
            status=status or self.status,
            handled=c.handled,
            failed=c.failed,
            dead_lettered=c.dead_lettered,
            in_flight=len(self._held),
            rate=round(c.rate(time.monotonic()), 3),
            last_error=c.last_error,
        )

    def request_stop(self, reason: str = "asked to stop") -> None:
        """Stop fetching, finish what is held, then return from `run()`."""
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._stop is not None:
            self._stop.set()
        if self._wake is not None:
            self._wake.set()

    # --- the run ----------------------------------------------------------------------

    async def run(self, *, handle_signals: bool = False) -> Outcome:
        """Consume until stopped; returns how it ended (never raises for the broker's,
        the store's or the handler's failures, which are logged and counted).

        With `handle_signals`, SIGTERM and SIGINT stop it (draining); a SIGINT after
        that ends the process at once, a SIGTERM again does not."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._settle_now = asyncio.Event()
        self._all_settled = asyncio.Event()
        if self._stop_reason is not None:
            self._stop.set()
        if not self._async:
            threads = max(1, min(self.consumer.max_in_flight, MAX_HANDLER_THREADS))
            self._threads = concurrent.futures.ThreadPoolExecutor(
                threads, thread_name_prefix=f"tideflow-handler-{self.consumer.name}"
            )
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._on_signal, signum)
        self._watch_lifeline(loop)
        self._counters.sample(time.monotonic())
        background: list[asyncio.Task[None]] = []
        outcome = Outcome.CRASHED
        if self.store is not None:
            log.addHandler(self._log_capture)
        try:
            await self._started()
            await self.broker.ensure_topic(self.consumer.consumes, [self.consumer.group])
            self.status = InstanceStatus.RUNNING
            background.append(asyncio.create_task(self._heartbeats(), name="tideflow-heartbeat"))
            background.append(asyncio.create_task(self._settle_loop(), name="tideflow-settle"))
            # a scaler that starts processes watches their output for `ready_message`
            log.info(
                "consumer %s: %s (flow %s, pid %d): topic %s, group %s",
                self.consumer.name,
                ready_message(self.instance_id),
                self.flow.info.name,
                os.getpid(),
                self.consumer.consumes,
                self.consumer.group,
            )
            await self._fetch_loop()
            self.status = InstanceStatus.DRAINING
            log.info(
                "instance %s draining (%s): %d message(s) in flight, at most %gs",
                self.instance_id,
                self._stop_reason,
                len(self._held),
                self.drain_timeout,
            )
            await self._beat()
            outcome = await self._drain()
        except Exception as exc:
            self._counters.last_error = self._describe(exc)
            log.error(
                "instance %s crashed: %s",
                self.instance_id,
                self._counters.last_error,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            outcome = Outcome.CRASHED
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._hand_back()
            await self._close_brokers()
            if self._lifeline_fd is not None:
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(self._lifeline_fd)
            if handle_signals:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)
            if self._threads is not None:
                self._threads.shutdown(wait=False, cancel_futures=True)
            self.status = (
                InstanceStatus.CRASHED if outcome is Outcome.CRASHED else InstanceStatus.STOPPED
            )
            if outcome is Outcome.DRAINED:
                log.info(
                    "instance %s stopped: %d handled, %d failed, %d dead-lettered",
                    self.instance_id,
                    self._counters.handled,
                    self._counters.failed,
                    self._counters.dead_lettered,
                )
            elif outcome is Outcome.DRAIN_TIMED_OUT:
                log.warning(
                    "instance %s stopped before its messages were finished (drain timeout "
                    "%gs); they were handed back for redelivery",
                    self.instance_id,
                    self.drain_timeout,
                )
            await self._beat()
            log.removeHandler(self._log_capture)
        return outcome

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            self.request_stop(f"received {name}")
        elif signum == signal.SIGINT:  # Ctrl-C again: the person at the terminal means now
            log.warning("instance %s: SIGINT while stopping, exiting at once", self.instance_id)
            logging.shutdown()
            os._exit(128 + signum)
        else:
            # One stop often brings its SIGTERM twice (to the process and to its
            # group, from `timeout`, an init that forwards, the parent-death signal);
            # process managers follow up with SIGKILL when their patience ends.
            log.info(
                "instance %s: %s again, still draining (%d message(s) in flight, at most "
                "%gs); SIGINT or SIGKILL stops at once",
                self.instance_id,
                name,
                len(self._held),
                self.drain_timeout,
            )

    def _watch_lifeline(self, loop: asyncio.AbstractEventLoop) -> None:
        fd = self._lifeline_fd
        if fd is None:
            return

        def readable() -> None:
            try:
                data = os.read(fd, 1)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(fd)
                self.request_stop("the process that started this instance is gone")

        try:
            loop.add_reader(fd, readable)
        except (OSError, ValueError) as exc:
            log.warning("instance %s: cannot watch lifeline fd %d: %s", self.instance_id, fd, exc)
            self._lifeline_fd = None

    async def _fetch_loop(self) -> None:
        assert self._stop is not None and self._wake is not None
        topic, group = self.consumer.consumes, self.consumer.group
        failing_since: float | None = None
        while not self._stop.is_set():
            free = self.consumer.max_in_flight - len(self._held)
            if free <= 0:
                # Hold no more than the slots: what is not fetched stays for other
                # instances. Meanwhile stay in the group, so that a rebalance can
                # give instances that join some of this one's partitions.
                self._wake.clear()
                if self.consumer.max_in_flight - len(self._held) <= 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), FETCH_WAIT)
                    if not self._wake.is_set():
                        await self._keep_membership(topic, group)
                continue
            try:
                batch = await self.broker.consume(
                    topic, group, max_messages=min(self.consumer.batch_size, free), wait=FETCH_WAIT
                )
            except BackendClosedError:
                raise
            except Exception as exc:
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning(
                        "instance %s cannot fetch from topic %s: %s (retrying)",
                        self.instance_id,
                        topic,
                        self._describe(exc),
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)
                continue
            if failing_since is not None:
                log.info(
                    "instance %s fetches again after %.1fs",
                    self.instance_id,
                    time.monotonic() - failing_since,
                )
                failing_since = None
            for message in batch:
                self._held[(message.partition, message.id)] = message
                task = asyncio.create_task(self._handle(message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _keep_membership(self, topic: str, group: str) -> None:
        try:
            await self.broker.keep_membership(topic, group)
        except BackendClosedError:
            raise
        except Exception as exc:  # the next fetch reports a broker that fails
            log.debug("instance %s: keep_membership failed: %s", self.instance_id, exc)

    async def _handle(self, message: Message) -> None:
        context = ConsumerContext(
            consumer=self.consumer.name,
            flow=self.flow.info.name,
            instance_id=self.instance_id,
            params=self.consumer.params,
            logger=self._handler_logger,
            topics=self._topics,
        )
        try:
            incoming = HandlerMessage.of(message)
            if self._async:
                await self._handler(context, incoming)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._threads, self._handler, context, incoming)
                if inspect.isawaitable(result):
                    await result
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            await self._failed(message, exc)
        else:
            self._finish(_Finished(message, context.outbox))

    async def _failed(self, message: Message, exc: BaseException) -> None:
        counters = self._counters
        counters.failed += 1
        counters.last_error = self._describe(exc)
        if message.delivery_count < self.consumer.max_failures:
            try:
                await self.broker.nack([message], delay=nack_delay(message.delivery_count))
            except Exception as nack_exc:  # its lease runs out instead
                log.warning(
                    "instance %s cannot hand back message %s: %s",
                    self.instance_id,
                    message.id,
                    self._describe(nack_exc),
                )
            self._release(message)
            return
        where = f"partition {message.partition}, id {message.id}"
        dead_letter = self.consumer.dead_letter
        if dead_letter is None:
            log.error(
                "consumer %s dropped message %s of topic %s after %d failures (no "
                "dead_letter topic): %s",
                self.consumer.name,
                where,
                message.topic,
                message.delivery_count,
                counters.last_error,
            )
            self._finish(
                _Finished(message, [], dead_lettered=True, record=self._record_of(message, None))
            )
            return
        headers = dead_letter_headers(
            message, exc, flow=self.flow.info.name, consumer=self.consumer.name, redact=self._redact
        )
        log.warning(
            "consumer %s dead-lettered message %s of topic %s to %s after %d failures: %s",
            self.consumer.name,
            where,
            message.topic,
            dead_letter,
            message.delivery_count,
            counters.last_error,
        )
        outgoing = OutgoingMessage(message.value, message.key, headers)
        record = self._record_of(message, dead_letter)
        self._finish(
            _Finished(message, [(dead_letter, outgoing)], dead_lettered=True, record=record)
        )

    def _record_of(self, message: Message, dead_letter: str | None) -> DeadLetterRow:
        return DeadLetterRow(
            flow=self.flow.info.name,
            consumer=self.consumer.name,
            instance_id=self.instance_id,
            at=datetime.now(UTC),
            topic=message.topic,
            partition=message.partition,
            message_id=message.id,
            failures=message.delivery_count,
            dead_letter_topic=dead_letter,
            error=self._counters.last_error or "",
        )

    def _finish(self, finished: _Finished) -> None:
        assert self._settle_now is not None
        self._finished.append(finished)
        self._settle_now.set()

    def _release(self, message: Message) -> None:
        assert self._wake is not None and self._all_settled is not None
        self._held.pop((message.partition, message.id), None)
        self._wake.set()
        if not self._held:
            self._all_settled.set()

    async def _settle_loop(self) -> None:
        """Publish what finished handlers queued, then acknowledge their messages, in
        batches: whatever finished while the previous batch was being settled."""
        assert self._settle_now is not None
        while True:
            await self._settle_now.wait()
            self._settle_now.clear()
            batch, self._finished = self._finished, []
            if batch:
                await self._settle(batch)

    async def _settle(self, batch: list[_Finished]) -> None:
        outgoing: dict[str, list[OutgoingMessage]] = {}
        for finished in batch:
            for topic, queued in finished.outbox:
                outgoing.setdefault(topic, []).append(queued)
        try:
            for topic, published in outgoing.items():
                await self._publish(topic, published)
        except Exception as exc:
            # nothing is acknowledged whose output may be missing: handle them again
            self._counters.failed += len(batch)
            self._counters.last_error = self._describe(exc)
            log.error(
                "instance %s cannot publish what %d handled message(s) produced: %s; "
                "they will be handled again",
                self.instance_id,
                len(batch),
                self._counters.last_error,
            )
            unsettled = [f.message for f in batch]
            with contextlib.suppress(Exception):
                await self.broker.nack(unsettled, delay=NACK_MAX)
            for message in unsettled:
                self._release(message)
            return
        try:
            await self.broker.ack([f.message for f in batch])
        except Exception as exc:  # their leases run out: they come back, handled again
            log.warning(
                "instance %s cannot acknowledge %d message(s): %s",
                self.instance_id,
                len(batch),
                self._describe(exc),
            )
        else:
            for finished in batch:
                if finished.dead_lettered:
                    self._counters.dead_lettered += 1
                    if finished.record is not None:
                        self._unrecorded.append(finished.record)
                else:
                    self._counters.handled += 1
        for finished in batch:
            self._release(finished.message)
        if self._unrecorded:
            await self._record_dead_letters()

    async def _publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> None:
        broker = self._publishers.get(topic)
        if broker is None:
            broker = self._publishers[topic] = self._open_broker(topic)
        if topic not in self._ensured:
            dead_letters = topic == self.consumer.dead_letter
            await broker.ensure_topic(
                topic, [dead_letter_group(self.consumer)] if dead_letters else []
            )
            self._ensured.add(topic)
        await broker.publish(topic, messages)

    def _open_topic_broker(self, topic: str) -> Broker:
        return open_topic_broker(self.flow, topic)

    async def _drain(self) -> Outcome:
        """Wait for the held messages to be finished and acknowledged, within the
        drain budget."""
        assert self._all_settled is not None
        budget = max(self.drain_timeout - min(2.0, 0.25 * self.drain_timeout), 0.0)
        if not self._held:
            return Outcome.DRAINED
        self._all_settled.clear()  # set again by the release of the last message held
        try:
            await asyncio.wait_for(self._all_settled.wait(), budget)
        except TimeoutError:
            return Outcome.DRAIN_TIMED_OUT
        return Outcome.DRAINED

    async def _hand_back(self) -> None:
        """Give back what is still held (the handlers did not finish in time)."""
        for task in list(self._tasks):
            task.cancel()
        held = list(self._held.values())
        self._held.clear()
        if not held:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.broker.nack(held), 2.0)

    async def _close_brokers(self) -> None:
        for broker in (self.broker, *self._publishers.values()):
            try:
                await asyncio.wait_for(broker.aclose(), 5.0)
            except Exception as exc:
                log.warning("instance %s: closing a broker failed: %s", self.instance_id, exc)

    # --- the state store --------------------------------------------------------------

    async def _started(self) -> None:
        if self.store is None:
            return
        store = self.store
        try:
            await asyncio.to_thread(
                store.instance_started,
                self.instance_id,
                self.flow.info.name,
                self.consumer.name,
                pid=os.getpid(),
            )
        except Exception as exc:
            log.warning("instance %s is not recorded in the state store: %s", self.instance_id, exc)
            self.store = None

    async def _heartbeats(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            if self._parent_pid is not None and os.getppid() != self._parent_pid:
                self._parent_pid = None
                self.request_stop("the process that started this instance is gone")
            try:
                await self._beat(raise_errors=True)
            except Exception as exc:
                if not failing:
                    log.warning("instance %s: heartbeat not stored: %s", self.instance_id, exc)
                failing = True
            else:
                failing = False

    async def _beat(self, *, raise_errors: bool = False) -> None:
        if self.store is None:
            return
        self._counters.sample(time.monotonic())
        stats = self.stats()
        partitions = await self._partitions()
        if partitions:
            stats = dataclasses.replace(stats, partitions=partitions)
        try:
            await asyncio.to_thread(self.store.instance_heartbeat, self.instance_id, stats)
        except Exception:
            if raise_errors:
                raise
        await self._record_dead_letters()
        lines = self._log_capture.take()
        if lines:
            try:
                await asyncio.to_thread(
                    self.store.record_consumer_logs,
                    self.flow.info.name,
                    self.consumer.name,
                    self.instance_id,
                    lines,
                )
            except Exception:  # the instance's output still has them
                self._log_capture.lines.extendleft(reversed(lines))

    async def _record_dead_letters(self) -> None:
        """Tell the store about dead letters; kept for the next heartbeat when it fails."""
        if self.store is None or not self._unrecorded:
            return
        rows, self._unrecorded = self._unrecorded, []
        try:
            await asyncio.to_thread(self.store.record_dead_letters, rows)
        except Exception as exc:
            self._unrecorded[:0] = rows
            log.warning("instance %s: dead letters not stored yet: %s", self.instance_id, exc)

    async def _partitions(self) -> tuple[int, ...]:
        """The partitions this instance holds, when the broker can say (optional API)."""
        if not isinstance(self.broker, ReportsAssignedPartitions):
            return ()
        try:
            found = self.broker.assigned_partitions(self.consumer.consumes, self.consumer.group)
            if isinstance(found, Awaitable):
                found = await found
            return tuple(sorted(int(p) for p in found))
        except Exception:
            return ()

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return one_line(self._redact(text))
