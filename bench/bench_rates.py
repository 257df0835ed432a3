"""What the broker benchmarks share: rates measured by the wall clock and by CPU time."""

from __future__ import annotations

import time
from dataclasses import dataclass

Mark = tuple[float, float]  # (wall clock, process CPU time)


def mark() -> Mark:
    return time.perf_counter(), time.process_time()


@dataclass(frozen=True, slots=True)
class Rates:
    """Messages per second publishing, and consuming (consume + ack), by the wall
    clock and by CPU time (all threads of the process)."""

    publish: float
    consume: float
    publish_cpu: float
    consume_cpu: float

    @staticmethod
    def of(messages: int, start: Mark, published: Mark, consumed: Mark) -> Rates:
        return Rates(
            messages / (published[0] - start[0]),
            messages / (consumed[0] - published[0]),
            messages / max(published[1] - start[1], 1e-9),
            messages / max(consumed[1] - published[1], 1e-9),
        )

    def best(self, other: Rates) -> Rates:
        return Rates(
            max(self.publish, other.publish),
            max(self.consume, other.consume),
            max(self.publish_cpu, other.publish_cpu),
            max(self.consume_cpu, other.consume_cpu),
        )
