"""The quickstart's jobs: a supplier and the small DAG that follows it."""

from __future__ import annotations

import random

from . import Context

TOPIC = "readings"


def supply(ctx: Context) -> int:
    """Publish `params.batch` readings, one per sensor in turn, keyed by sensor."""
    batch = int(ctx.params.get("batch", 10))
    sensors = list(ctx.params.get("sensors", ["default"]))
    # seeded by the run so that a retried attempt publishes the same values
    rng = random.Random(ctx.run_id)
    taken_at = ctx.scheduled_at.isoformat() if ctx.scheduled_at else None
    for index in range(batch):
        sensor = sensors[index % len(sensors)]
        value = round(rng.uniform(0.0, 100.0), 2)
        ctx.publish(TOPIC, {"sensor": sensor, "value": value, "taken_at": taken_at}, key=sensor)
    ctx.logger.info("published %d readings", batch)
    return batch


def audit(ctx: Context) -> None:
    """Note that the run's batch went out."""
    ctx.logger.info("run %s scheduled at %s published its batch", ctx.run_id, ctx.scheduled_at)


def report_failure(ctx: Context) -> None:
    """Runs only after a failure (trigger = one_failed)."""
    ctx.logger.warning("run %s: the supplier or the audit failed", ctx.run_id)


def tidy(ctx: Context) -> None:
    """Runs at the end of every run (trigger = all_done)."""
    ctx.logger.info("run %s finished", ctx.run_id)
