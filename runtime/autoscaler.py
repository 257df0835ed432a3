"""The autoscaler's live loop for one consumer: read the backlog, decide, act, record.

Every `poll` seconds (or at once after `nudge()`), the loop reads the backlog
(within a timeout), asks the scaler how many instances run, calls `decide()`
(`runtime.decide`, the same function `tideflow simulate` replays), tells the scaler
the new count when it changes, stores the decision with its inputs
(`Store.record_decision`) and hands the stored row to `on_decision`.

Nothing that goes wrong in one cycle stops the loop: a failed read is a
`BacklogFailure` for `decide()` (which then holds or uses the fallback), a failed
`scale()` is recorded as not applied and tried again on the next cycle, a failed
store write or callback is logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Final

from tideflow.compiler.ir import ConsumerNode, ScaleRule
from tideflow.plugins.api import BacklogFailure, BacklogReading, Scaler

from .clock import Clock
from .decide import Decision, ScaleState, decide
from .model import ScaleDecisionRow
from .store import Store

__all__ = ["Autoscaler", "BacklogSource", "DecisionCallback", "rule_as_dict"]

log = logging.getLogger("tideflow.autoscaler")

BacklogSource = Callable[[], Awaitable[BacklogReading | BacklogFailure]]
DecisionCallback = Callable[[ScaleDecisionRow], Awaitable[None] | None]

# Readings are asked for at most this long, and never for less than this.
MIN_READ_TIMEOUT: Final = 1.0
# A reading older than this many polls (and than MIN_STALE_AFTER) is not trusted.
STALE_POLLS: Final = 3
MIN_STALE_AFTER: Final = 10.0


def rule_as_dict(rule: ScaleRule) -> dict[str, Any]:
    """The rule as stored beside each decision: every setting but the backend's own
    options (which may name secrets and do not take part in the decision)."""
    return {
        field.name: getattr(rule, field.name)
        for field in dataclasses.fields(rule)
        if field.name != "options"
    }


class Autoscaler:
    """Scales one consumer's instances with its backlog: `async with`, or `start()`
    then `aclose()`, or `await run()`.

    `read_backlog` returns a reading or a failure (a broker's `read_backlog`, bound
    to the topic and group); it is given `read_timeout` seconds (default: the poll,
    at least 1 s). `partitioned` says whether instances beyond the topic's partition
    count would idle: the reading's partition count then caps the instances. A
    reading older than `stale_after` seconds (default: 3 polls, at least 10 s) counts
    as failed.
    """

    def __init__(
        self,
        flow_name: str,
        consumer: ConsumerNode,
        rule: ScaleRule,
        read_backlog: BacklogSource,
        scaler: Scaler,
        store: Store | None,
        clock: Clock,
        on_decision: DecisionCallback | None = None,
        *,
        partitioned: bool = False,
        read_timeout: float | None = None,
        stale_after: float | None = None,
        may_act: Callable[[], bool] | None = None,
    ) -> None:
        if rule.poll <= 0:
            raise ValueError(f"the poll interval must be positive, not {rule.poll}")
        self.flow = flow_name
        self.consumer = consumer
        self.rule = rule
        self.partitioned = partitioned
        self.read_timeout = (
            read_timeout if read_timeout is not None else max(rule.poll, MIN_READ_TIMEOUT)
        )
        self.stale_after = (
            stale_after
            if stale_after is not None
            else max(STALE_POLLS * rule.poll, MIN_STALE_AFTER)
        )
        self._read_backlog = read_backlog
        self._scaler = scaler
        self._store = store
        self._clock = clock
        self._on_decision = on_decision
        # False while this orchestrator must not act (it does not lead): no cycle runs
        self._may_act = may_act
        self._rule_record = rule_as_dict(rule)
        self._state = ScaleState()
        self._partitions: int | None = None  # the last partition count read
        self._last_count: int | None = None  # the last count the scaler reported or was told
        self._last_decision: ScaleDecisionRow | None = None
        self._nudged = False  # decide again as soon as the current cycle ends
        self._sleeping: asyncio.Task[Any] | None = None  # the loop's task, while it sleeps
        self._nudge_cancelled = False  # nudge() cancelled that sleep
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # --- what the rest of the runtime sees -------------------------------------------------

    @property
    def state(self) -> ScaleState:
        """The decision history the next decision starts from."""
        return self._state

    @property
    def last_decision(self) -> ScaleDecisionRow | None:
        return self._last_decision

    def nudge(self) -> None:
        """Decide now instead of at the next poll (a job just published a burst).
        Nudges that come while a cycle runs cause one more cycle right after it."""
        self._nudged = True
        sleeping = self._sleeping
        if sleeping is not None and not self._nudge_cancelled and not sleeping.done():
            self._nudge_cancelled = True
            sleeping.cancel()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Run the loop in a new task of the running loop (once per autoscaler)."""
        if self._task is not None:
            raise RuntimeError("the autoscaler was started already")
        self._task = asyncio.create_task(
            self._main(), name=f"tideflow-autoscaler:{self.flow}:{self.consumer.name}"
        )
        return self._task

    async def run(self) -> None:
        """Start, and return when closed; cancelling the caller stops the loop too."""
        task = self.start()
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not task.cancelled():
            task.result()

    async def aclose(self) -> None:
        """Stop the loop (a cycle in progress is cancelled). Idempotent. The scaler is
        the caller's to close."""
        self._stopping = True
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait({task})

    async def __aenter__(self) -> Autoscaler:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- the loop --------------------------------------------------------------------------

    async def _main(self) -> None:
        poll = timedelta(seconds=self.rule.poll)
        next_poll = self._clock.now()
        while not self._stopping:
            self._nudged = False
            await self.poll_once()
            # on a fixed grid: neither a slow cycle nor a nudge moves the later polls
            now = self._clock.now()
            if next_poll <= now:
                next_poll += poll * ((now - next_poll) // poll + 1)
            await self._sleep_until(next_poll)

    async def _sleep_until(self, instant: datetime) -> None:
        """Sleep on the clock until `instant`, or until `nudge()`.

        The loop's own task sleeps (not a helper task), so that a `VirtualClock`
        lets the whole cycle run before `advance` moves on; `nudge()` interrupts the
        sleep with a cancellation that is taken back here, as `asyncio.timeout` does.
        """
        if self._nudged:
            return
        task = asyncio.current_task()
        self._sleeping = task
        try:
            await self._clock.sleep_until(instant)
        except asyncio.CancelledError:
            if task is None or not self._nudge_cancelled:
                raise
            self._nudge_cancelled = False
            if task.uncancel() > 0:
                raise  # cancelled by someone else as well: stop
        finally:
            self._sleeping = None

    async def poll_once(self) -> ScaleDecisionRow | None:
        """One cycle now: read, decide, act, record. Returns the stored decision, or
        None when the scaler could not say how many instances run (and no count is
        known from earlier), or when `may_act` says this orchestrator must not act."""
        if self._may_act is not None and not self._may_act():
            return None
        reading = await self._read()
        current = await self._current()
        if current is None:
            return None
        now = self._clock.now()
        if isinstance(reading, BacklogReading):
            self._partitions = reading.partitions
        cap = self._partitions if self.partitioned else None
        decision, next_state = decide(
            reading, current, self.rule, cap, self._state, now, self.stale_after
        )
        applied = False
        if decision.changes:
            applied = await self._scale(decision)
            if not applied:
                # the count did not change: the next scale-down must not wait for a cooldown
                next_state = dataclasses.replace(
                    next_state,
                    last_scale_up_at=self._state.last_scale_up_at,
                    last_scale_down_at=self._state.last_scale_down_at,
                )
        self._state = next_state
        row = self._row(reading, decision, applied, now)
        row = self._record(row)
        self._last_decision = row
        self._log(row)
        await self._emit(row)
        return row

    # --- the steps of a cycle --------------------------------------------------------------

    async def _read(self) -> BacklogReading | BacklogFailure:
        topic, group = self.consumer.consumes, self.consumer.group
        try:
            return await asyncio.wait_for(self._read_backlog(), self.read_timeout)
        except TimeoutError:
            error = f"no answer within {self.read_timeout:g}s"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return BacklogFailure(topic, group, error, self._clock.now())

    async def _current(self) -> int | None:
        try:
            count = await self._scaler.current()
        except Exception as exc:
            log.warning(
                "consumer %s: the scaler cannot say how many instances run: %s",
                self.consumer.name,
                exc,
            )
            return self._last_count
        self._last_count = count
        return count

    async def _scale(self, decision: Decision) -> bool:
        try:
            await self._scaler.scale(decision.desired)
        except Exception as exc:
            log.warning(
                "consumer %s: scaling from %d to %d instances failed: %s",
                self.consumer.name,
                decision.current,
                decision.desired,
                exc,
            )
            return False
        self._last_count = decision.desired
        return True

    def _row(
        self,
        reading: BacklogReading | BacklogFailure,
        decision: Decision,
        applied: bool,
        now: datetime,
    ) -> ScaleDecisionRow:
        backlog: int | None = None
        per_partition: dict[int, int] = {}
        partitions: int | None = None
        if isinstance(reading, BacklogReading):
            # a stale reading keeps its figures beside the reason it was not used
            backlog, partitions = reading.total, reading.partitions
            per_partition = dict(reading.per_partition)
        return ScaleDecisionRow(
            flow=self.flow,
            consumer=self.consumer.name,
            taken_at=now,
            backlog=backlog,
            per_partition=per_partition,
            partitions=partitions,
            reading_error=decision.reading_problem,
            current=decision.current,
            desired=decision.desired,
            applied=applied,
            reason=decision.reason.value,
            explanation=decision.explanation,
            rule=self._rule_record,
        )

    def _record(self, row: ScaleDecisionRow) -> ScaleDecisionRow:
        if self._store is None:
            return row
        try:
            return dataclasses.replace(row, id=self._store.record_decision(row))
        except Exception as exc:
            log.warning("consumer %s: the decision was not stored: %s", self.consumer.name, exc)
            return row

    def _log(self, row: ScaleDecisionRow) -> None:
        level = logging.INFO if row.current != row.desired else logging.DEBUG
        log.log(
            level,
            "consumer %s: %d -> %d (%s): %s",
            self.consumer.name,
            row.current,
            row.desired,
            row.reason,
            row.explanation,
        )

    async def _emit(self, row: ScaleDecisionRow) -> None:
        if self._on_decision is None:
            return
        try:
            outcome = self._on_decision(row)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            log.exception("consumer %s: the decision callback failed", self.consumer.name)
