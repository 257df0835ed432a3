"""Admission of attempts: the global concurrency limit, pool slots, CPU and memory.

An attempt starts only when all four have room. Requests are served in the
order they arrive, except that a request which fits may pass one that does
not (a job needing 4 slots does not hold up jobs needing 1); a request that
could never fit (more slots than its pool has, more CPU or memory than the
machine has) is refused at once with a message saying why, rather than
waiting forever.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

MILLI: Final = 1000  # CPU is counted in thousandths so sums of 0.1 stay exact


@dataclass(frozen=True, slots=True)
class Capacity:
    """What the machine has: CPU cores and bytes of memory."""

    cpu: float
    memory: int


def machine_capacity() -> Capacity:
    """This machine's CPU count and total physical memory."""
    cpu = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # not every platform names these
        memory = 0
    return Capacity(float(cpu), memory)


@dataclass(frozen=True, slots=True)
class Demand:
    """What one attempt takes while it runs."""

    pool: str | None = None
    slots: int = 1
    cpu: float = 0.0
    memory: int = 0  # bytes


def _format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.4g}{unit}"
        value /= 1024
    return f"{value:.4g}TiB"


class Admission:
    """Counts what running attempts hold and hands out the rest, first come first served."""

    def __init__(
        self, concurrency: int, pools: Mapping[str, int], capacity: Capacity | None = None
    ) -> None:
        self.concurrency = concurrency
        self.pools = dict(pools)
        self.capacity = capacity or machine_capacity()
        self.running = 0
        self.pool_used: dict[str, int] = dict.fromkeys(self.pools, 0)
        self.cpu_used = 0  # milli-CPU
        self.memory_used = 0
        # insertion-ordered: first come first served, O(1) removal
        self._waiting: dict[asyncio.Future[bool], Demand] = {}

    def impossible(self, demand: Demand) -> str | None:
        """Why `demand` can never be admitted, or None when it can."""
        if demand.pool is not None:
            if demand.pool not in self.pools:
                return f'pool "{demand.pool}" does not exist'
            if demand.slots > self.pools[demand.pool]:
                return (
                    f'the job takes {demand.slots} slots of pool "{demand.pool}", '
                    f"which has {self.pools[demand.pool]}"
                )
        if demand.cpu > self.capacity.cpu:
            return f"the job needs {demand.cpu:g} CPUs and this machine has {self.capacity.cpu:g}"
        if self.capacity.memory and demand.memory > self.capacity.memory:
            return (
                f"the job needs {_format_bytes(demand.memory)} of memory and this machine "
                f"has {_format_bytes(self.capacity.memory)}"
            )
        return None

    def _fits(self, demand: Demand) -> bool:
        if self.running >= self.concurrency:
            return False
        if (
            demand.pool is not None
            and self.pool_used[demand.pool] + demand.slots > self.pools[demand.pool]
        ):
            return False
        if demand.cpu and self.cpu_used + round(demand.cpu * MILLI) > round(
            self.capacity.cpu * MILLI
        ):
            return False
        return not (
            demand.memory
            and self.capacity.memory
            and self.memory_used + demand.memory > self.capacity.memory
        )

    def _take(self, demand: Demand) -> None:
        self.running += 1
        if demand.pool is not None:
            self.pool_used[demand.pool] += demand.slots
        self.cpu_used += round(demand.cpu * MILLI)
        self.memory_used += demand.memory

    def try_acquire(self, demand: Demand) -> bool:
        """Take `demand` now if it fits; the caller must `release` it later."""
        if self._fits(demand):
            self._take(demand)
            return True
        return False

    def wait(self, demand: Demand) -> asyncio.Future[bool]:
        """A future that becomes True once `demand` is taken, or False if withdrawn."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[future] = demand
        return future

    def withdraw(self, future: asyncio.Future[bool]) -> None:
        """Stop waiting; the future becomes False unless it was granted already."""
        self._waiting.pop(future, None)
        if not future.done():
            future.set_result(False)

    def release(self, demand: Demand) -> None:
        """Give back what `demand` took and admit the waiting requests that now fit."""
        self.running -= 1
        if demand.pool is not None:
            self.pool_used[demand.pool] -= demand.slots
        self.cpu_used -= round(demand.cpu * MILLI)
        self.memory_used -= demand.memory
        granted: list[asyncio.Future[bool]] = []
        for future, waiting in self._waiting.items():
            if self.running >= self.concurrency:
                break  # nothing more can start: do not walk a long queue for nothing
            if future.done() or self._fits(waiting):
                granted.append(future)
                if not future.done():
                    self._take(waiting)
                    future.set_result(True)
        for future in granted:
            del self._waiting[future]

    @property
    def waiting(self) -> int:
        return len(self._waiting)
