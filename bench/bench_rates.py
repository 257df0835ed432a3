"""What the broker benchmarks share: rates measured by the wall clock and by CPU time."""

from __future__ import annotations

import time
from collections.abc import Sequence
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


@dataclass(frozen=True, slots=True)
class Comparison:
    """One batch size: tideflow's rates beside the raw client's, and their ratios."""

    messages: int
    batch: int
    payload: int
    tideflow: Rates
    raw: Rates

    @property
    def publish_ratio(self) -> float:
        return self.tideflow.publish / self.raw.publish

    @property
    def consume_ratio(self) -> float:
        return self.tideflow.consume / self.raw.consume

    @property
    def publish_cpu_ratio(self) -> float:
        return self.tideflow.publish_cpu / self.raw.publish_cpu

    @property
    def consume_cpu_ratio(self) -> float:
        return self.tideflow.consume_cpu / self.raw.consume_cpu


def table_lines(title: str, results: Sequence[Comparison]) -> list[str]:
    """A title, a header and one row per batch size."""
    lines = [
        title,
        f"{'batch':>6} {'messages':>9} | {'publish':>9} {'raw':>9} {'ratio':>5} {'cpu':>5} | "
        f"{'consume':>9} {'raw':>9} {'ratio':>5} {'cpu':>5}",
    ]
    for r in results:
        lines.append(
            f"{r.batch:>6} {r.messages:>9,} | {r.tideflow.publish:>9,.0f} {r.raw.publish:>9,.0f} "
            f"{r.publish_ratio:>5.2f} {r.publish_cpu_ratio:>5.2f} | "
            f"{r.tideflow.consume:>9,.0f} {r.raw.consume:>9,.0f} "
            f"{r.consume_ratio:>5.2f} {r.consume_cpu_ratio:>5.2f}"
        )
    return lines


def verdict_lines(results: Sequence[Comparison], target: float) -> list[str]:
    """Whether each batch size met the target, by its lower wall-clock ratio."""
    lines = []
    for r in results:
        worst = min(r.publish_ratio, r.consume_ratio)
        verdict = "met" if worst >= target else "NOT met"
        lines.append(f"  batches of {r.batch}: {verdict} (lower wall-clock ratio {worst:.2f})")
    return lines
