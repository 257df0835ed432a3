"""The quickstart's consumer: store each reading and flag the high ones."""

from __future__ import annotations

from . import Context, Message


def handle(ctx: Context, message: Message) -> bool:
    """Log one reading; return whether it is above `params.threshold`."""
    reading = message.value
    high = float(reading["value"]) > float(ctx.params.get("threshold", 75.0))
    if high:
        ctx.logger.warning("sensor %s reads %s", reading["sensor"], reading["value"])
    else:
        ctx.logger.info("sensor %s reads %s", reading["sensor"], reading["value"])
    return high
