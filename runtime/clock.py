"""Clocks for the runtime: the system's, and a virtual one that tests move by hand.

A `Clock` tells the time as an aware UTC datetime and sleeps until an instant
(not for a duration), so whoever sleeps states *when* it wants to wake and the
clock decides how to get there.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol, final

__all__ = ["Clock", "SystemClock", "VirtualClock"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...

    async def sleep_until(self, instant: datetime) -> None:
        """Return once `now() >= instant` (at once when it is already)."""
        ...


@final
class SystemClock:
    """The wall clock, slept on with asyncio's monotonic timer.

    Each timer is set on the loop's monotonic clock from the wall-clock delta at
    the moment it is set, and the wall clock is read again on waking: a sleeper
    woken early (the wall clock was stepped back) sleeps again. A single timer
    lasts at most `max_timer` seconds, so a step forward of the wall clock, or a
    suspended machine (the monotonic clock stops while suspended), delays a
    wake-up by at most that.
    """

    def __init__(self, max_timer: float = 10.0) -> None:
        if max_timer <= 0:
            raise ValueError("max_timer must be positive")
        self.max_timer = max_timer

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, instant: datetime) -> None:
        _require_aware(instant)
        loop = asyncio.get_running_loop()
        while True:
            remaining = (instant - datetime.now(UTC)).total_seconds()
            if remaining <= 0:
                return
            woken: asyncio.Future[None] = loop.create_future()
            timer = loop.call_at(loop.time() + min(remaining, self.max_timer), _wake, woken)
            try:
                await woken
            finally:
                timer.cancel()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# Yields of the event loop a woken sleeper is given to go back to sleep (or end)
# before `VirtualClock.advance` moves on; ample for code that only awaits the clock.
_SETTLE_YIELDS: Final = 200


@dataclass(order=True)
class _Sleeper:
    instant: datetime
    seq: int
    future: asyncio.Future[None] = field(compare=False)
    task: asyncio.Task[object] | None = field(compare=False)


@final
class VirtualClock:
    """A clock that moves only when told to, for deterministic tests.

    `advance` and `advance_to` wake the sleepers whose instant has come, one at
    a time in order of instant (then of falling asleep), setting `now()` to each
    sleeper's instant as it wakes and letting the woken task run until it sleeps
    again, ends, or has had a few hundred turns of the event loop. So a task that
    sleeps again before the target instant is woken again in the same advance,
    in order. `jump_to` moves the time first and wakes the due sleepers late, as a
    suspended machine would.
    """

    def __init__(self, start: datetime) -> None:
        _require_aware(start)
        self._now = start.astimezone(UTC)
        self._sleepers: list[_Sleeper] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, instant: datetime) -> None:
        _require_aware(instant)
        if instant <= self._now:
            await asyncio.sleep(0)  # still a point at which the caller can be cancelled
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sleeper = _Sleeper(instant.astimezone(UTC), next(self._seq), woken, asyncio.current_task())
        heapq.heappush(self._sleepers, sleeper)
        try:
            await woken
        finally:
            if not woken.done():
                woken.cancel()  # cancelled from outside: `advance` drops it

    @property
    def sleepers(self) -> int:
        """How many tasks are asleep on this clock."""
        return sum(1 for s in self._sleepers if not s.future.done())

    def next_wake(self) -> datetime | None:
        """The earliest instant a sleeper waits for, if any."""
        self._drop_cancelled()
        return self._sleepers[0].instant if self._sleepers else None

    async def wait_for_sleepers(self, count: int = 1, max_yields: int = 10_000) -> None:
        """Yield to the event loop until at least `count` tasks sleep on this clock."""
        for _ in range(max_yields):
            if self.sleepers >= count:
                return
            await asyncio.sleep(0)
        raise TimeoutError(f"{self.sleepers} task(s) asleep on the clock, expected {count}")

    async def advance(self, seconds: float) -> None:
        await self.advance_to(self._now + timedelta(seconds=seconds))

    async def advance_to(self, instant: datetime) -> None:
        """Move to `instant`, waking each due sleeper at its own instant, in order."""
        _require_aware(instant)
        if instant < self._now:
            raise ValueError(f"cannot move a clock back from {self._now} to {instant}")
        await self._wake_until(instant, on_time=True)
        self._now = instant.astimezone(UTC)

    async def jump_to(self, instant: datetime) -> None:
        """Move to `instant` at once, as a suspended machine or a stepped wall clock
        does: the sleepers due by then all wake late, at `instant`, in order."""
        _require_aware(instant)
        if instant < self._now:
            raise ValueError(f"cannot move a clock back from {self._now} to {instant}")
        self._now = instant.astimezone(UTC)
        await self._wake_until(instant, on_time=False)

    async def _wake_until(self, instant: datetime, *, on_time: bool) -> None:
        while True:
            self._drop_cancelled()
            if not self._sleepers or self._sleepers[0].instant > instant:
                return
            sleeper = heapq.heappop(self._sleepers)
            if on_time:
                self._now = sleeper.instant
            sleeper.future.set_result(None)
            await self._settle(sleeper)

    async def _settle(self, woken: _Sleeper) -> None:
        for _ in range(_SETTLE_YIELDS):
            await asyncio.sleep(0)
            task = woken.task
            if task is None or task.done():
                return
            if any(s.task is task and not s.future.done() for s in self._sleepers):
                return

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0].future.done():
            heapq.heappop(self._sleepers)


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"a timezone-aware datetime is needed, got {moment!r}")
