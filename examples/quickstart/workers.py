"""The quickstart's consumer: store each reading and flag the high ones."""

from __future__ import annotations

import time

from . import Context, Message


def handle(ctx: Context, message: Message) -> bool:
    """Log one reading; return whether it is above `params.threshold`.

    `params.work_ms` stands for real work (a database write, an API call), so that
    a burst builds a backlog the autoscaler answers with more instances."""
    time.sleep(float(ctx.params.get("work_ms", 0)) / 1000)
    reading = message.value
    high = float(reading["value"]) > float(ctx.params.get("threshold", 75.0))
    ctx.logger.info(
        "sensor %s reads %s%s", reading["sensor"], reading["value"], " (high)" if high else ""
    )
    return high
