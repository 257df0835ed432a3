"""/metrics for Prometheus: a collector that reads the run history at scrape time.

Nothing is counted in the dashboard's own memory except where a history would be
too long to read at every scrape: attempt durations, schedule lateness and scale
events are read incrementally (only what finished since the previous scrape, with
a margin for late commits), so those histograms and counters only grow, as
Prometheus expects; they start with the last `lookback` (24 h) when the dashboard
starts. The rest is read whole at each scrape:

- `tideflow_job_runs{flow,job,status}`: job runs recorded, by their current status;
- `tideflow_consumer_backlog_messages{flow,consumer}` and
  `tideflow_consumer_partition_backlog_messages{flow,consumer,partition}`: the
  backlog the autoscaler read last;
- `tideflow_consumer_instances_desired` / `_current` (the last decision) and
  `_alive` (instances whose heartbeat is recent);
- `tideflow_consumer_dead_letters_total{flow,consumer}`: messages consumer
  instances gave up on after `max_failures` (dead-lettered, or dropped without a
  dead-letter topic), counted from the stored dead letters;
- `tideflow_scheduler_last_tick_timestamp_seconds`: the newest orchestrator
  heartbeat, and `tideflow_job_next_fire_timestamp_seconds{flow,job}`: when each
  schedule fires next; together they tell "the scheduler is dead" from "nothing is
  due yet";
- `tideflow_orchestrator_leader{orchestrator,host,flows}`: 1 for the orchestrator
  holding its flows' lease, 0 for each live one standing by; and
  `tideflow_orchestrator_lease_token{flows}`: the lease's fencing token, which
  grows at every change of leader (`changes()` counts failovers);
- `tideflow_store_up`: 0 when the store could not be read (the rest is then absent).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tideflow.compiler.irjson import from_json
from tideflow.runtime.schedule import next_fire
from tideflow.runtime.store import Store, StoreError, utcnow

__all__ = ["DURATION_BUCKETS", "LATENESS_BUCKETS", "StoreCollector"]

log = logging.getLogger("tideflow.web")

DURATION_BUCKETS: Final = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200)
LATENESS_BUCKETS: Final = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# an attempt committed this long after the time it records as its end is still counted
_LATE_COMMIT: Final = timedelta(minutes=5)


class _Histogram:
    """Cumulative bucket counts and sum for one label set."""

    __slots__ = ("buckets", "counts", "total")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        out: list[tuple[str, float]] = []
        # the `le` label as Prometheus writes it: 10 -> "10.0", 0.005 -> "0.005"
        bounds = (*(repr(float(b)) for b in self.buckets), "+Inf")
        for bound, count in zip(bounds, self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class _Incremental:
    """Observations read a window at a time, each row once (by id)."""

    def __init__(self, start: datetime) -> None:
        self.mark = start
        self.seen: dict[int, datetime] = {}  # ids near the mark, to skip them next time

    def fresh(self, rows: Iterable[tuple[int, datetime]]) -> Iterator[int]:
        """The ids not seen before, and moves the mark to the newest time seen."""
        newest = self.mark
        for row_id, at in rows:
            if row_id in self.seen:
                continue
            self.seen[row_id] = at
            newest = max(newest, at)
            yield row_id
        self.mark = newest
        horizon = self.mark - _LATE_COMMIT
        self.seen = {i: at for i, at in self.seen.items() if at >= horizon}

    @property
    def since(self) -> datetime:
        return self.mark - _LATE_COMMIT


class StoreCollector(Collector):
    """Reads the store at each scrape. Register it on a `CollectorRegistry`."""

    def __init__(
        self,
        store: Store,
        *,
        instance_alive_seconds: float = 15.0,
        lookback: timedelta = timedelta(hours=24),
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.instance_alive_seconds = instance_alive_seconds
        self.now = now
        start = now() - lookback
        self._lock = threading.Lock()
        self._durations: dict[tuple[str, str, str], _Histogram] = {}
        self._lateness: dict[tuple[str, str], _Histogram] = {}
        self._duration_rows = _Incremental(start)
        self._lateness_rows = _Incremental(start)
        self._scale_events: dict[tuple[str, str, str], int] = defaultdict(int)
        self._decision_mark = 0

    def describe(self) -> list[Metric]:
        # without describe(), registering would call collect() (and read the store) once
        return []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                families = self._read()
            except StoreError as exc:
                log.warning("metrics: the state store could not be read: %s", exc)
                families = []
                up = 0
            else:
                up = 1
        store_up = GaugeMetricFamily(
            "tideflow_store_up", "1 when the run history could be read at this scrape"
        )
        store_up.add_metric([], up)
        yield store_up
        yield from families

    # --- reading ---------------------------------------------------------------------

    def _read(self) -> list[Metric]:
        now = self.now()
        return [
            self._job_runs(),
            *self._attempt_durations(),
            *self._schedule_lateness(),
            *self._consumers(now),
            self._dead_letters(),
            self._scale_event_counter(),
            *self._scheduler(now),
            *self._orchestrators(),
        ]

    def _job_runs(self) -> Metric:
        family = GaugeMetricFamily(
            "tideflow_job_runs",
            "Job runs recorded, by flow, job and current status (totals since the history began)",
            labels=["flow", "job", "status"],
        )
        for (flow, job, status), count in sorted(self.store.status_counts().items()):
            family.add_metric([flow, job, status.value], count)
        return family

    def _attempt_durations(self) -> list[Metric]:
        rows = self.store.finished_attempts(since=self._duration_rows.since)
        by_id = {row.id: row for row in rows}
        for row_id in self._duration_rows.fresh((r.id, r.finished_at) for r in rows):
            row = by_id[row_id]
            key = (row.flow, row.job, row.status)
            seconds = max(0.0, (row.finished_at - row.started_at).total_seconds())
            self._durations.setdefault(key, _Histogram(DURATION_BUCKETS)).observe(seconds)
        family = HistogramMetricFamily(
            "tideflow_attempt_duration_seconds",
            "How long finished attempts ran, by flow, job and attempt status",
            labels=["flow", "job", "status"],
        )
        for key, histogram in sorted(self._durations.items()):
            family.add_metric(list(key), histogram.cumulative(), histogram.total)
        return [family]

    def _schedule_lateness(self) -> list[Metric]:
        rows = self.store.first_starts(since=self._lateness_rows.since)
        by_id = {row.attempt_id: row for row in rows}
        for row_id in self._lateness_rows.fresh((r.attempt_id, r.started_at) for r in rows):
            row = by_id[row_id]
            late = max(0.0, (row.started_at - row.scheduled_at).total_seconds())
            self._lateness.setdefault((row.flow, row.job), _Histogram(LATENESS_BUCKETS)).observe(
                late
            )
        family = HistogramMetricFamily(
            "tideflow_schedule_lateness_seconds",
            "First attempt's start minus the schedule instant, for scheduled job runs",
            labels=["flow", "job"],
        )
        for key, histogram in sorted(self._lateness.items()):
            family.add_metric(list(key), histogram.cumulative(), histogram.total)
        return [family]

    def _consumers(self, now: datetime) -> list[Metric]:
        backlog = GaugeMetricFamily(
            "tideflow_consumer_backlog_messages",
            "Messages waiting for a consumer, as the autoscaler last read them",
            labels=["flow", "consumer"],
        )
        partition_backlog = GaugeMetricFamily(
            "tideflow_consumer_partition_backlog_messages",
            "Messages waiting in each partition, as the autoscaler last read them",
            labels=["flow", "consumer", "partition"],
        )
        desired = GaugeMetricFamily(
            "tideflow_consumer_instances_desired",
            "Instances the autoscaler last asked for",
            labels=["flow", "consumer"],
        )
        current = GaugeMetricFamily(
            "tideflow_consumer_instances_current",
            "Instances running when the autoscaler last decided",
            labels=["flow", "consumer"],
        )
        alive = GaugeMetricFamily(
            "tideflow_consumer_instances_alive",
            "Instances not stopped whose last heartbeat is recent",
            labels=["flow", "consumer"],
        )
        for flow, consumer in sorted(self.store.consumers_seen()):
            labels = [flow, consumer]
            latest = self.store.decisions(flow=flow, consumer=consumer, limit=1)
            if latest:
                decision = latest[0]
                if decision.backlog is not None:
                    backlog.add_metric(labels, decision.backlog)
                for partition, waiting in sorted(decision.per_partition.items()):
                    partition_backlog.add_metric([*labels, str(partition)], waiting)
                desired.add_metric(labels, decision.desired)
                current.add_metric(labels, decision.current)
            running = self.store.instances(
                flow=flow, consumer=consumer, alive_within=self.instance_alive_seconds
            )
            alive.add_metric(labels, len(running))
        return [backlog, partition_backlog, desired, current, alive]

    def _dead_letters(self) -> Metric:
        family = CounterMetricFamily(
            "tideflow_consumer_dead_letters",
            "Messages consumer instances gave up on after max_failures handler failures "
            "(dead-lettered, or dropped without a dead-letter topic)",
            labels=["flow", "consumer"],
        )
        for (flow, consumer), count in sorted(self.store.dead_letter_counts().items()):
            family.add_metric([flow, consumer], count)
        return family

    def _scale_event_counter(self) -> Metric:
        applied = self.store.applied_decisions(after_id=self._decision_mark)
        self._decision_mark = applied.mark
        for key, count in applied.counts.items():
            self._scale_events[key] += count
        family = CounterMetricFamily(
            "tideflow_scale_events",
            "Autoscaler decisions that changed the number of instances, by reason",
            labels=["flow", "consumer", "reason"],
        )
        for key, count in sorted(self._scale_events.items()):
            family.add_metric(list(key), count)
        return family

    def _orchestrators(self) -> list[Metric]:
        leader = GaugeMetricFamily(
            "tideflow_orchestrator_leader",
            "1 for the orchestrator that leads its flows (holds their lease), 0 for a live "
            "one standing by",
            labels=["orchestrator", "host", "flows"],
        )
        leases = self.store.leases()
        leaders = {lease.holder for lease in leases if lease.led}
        for o in self.store.orchestrators(stale_after=self.instance_alive_seconds):
            if o.alive:
                labels = [str(o.id), o.host, ",".join(sorted(o.flows))]
                leader.add_metric(labels, 1 if o.id in leaders else 0)
        token = GaugeMetricFamily(
            "tideflow_orchestrator_lease_token",
            "The fencing token of each set of flows' lease; it grows at every change of leader",
            labels=["flows"],
        )
        for lease in leases:
            token.add_metric([lease.key], lease.token)
        return [leader, token]

    def _scheduler(self, now: datetime) -> list[Metric]:
        tick = GaugeMetricFamily(
            "tideflow_scheduler_last_tick_timestamp_seconds",
            "Unix time of the newest orchestrator heartbeat (the scheduler's last tick)",
        )
        last = self.store.last_heartbeat()
        if last is not None:
            tick.add_metric([], last.timestamp())
        next_fires = GaugeMetricFamily(
            "tideflow_job_next_fire_timestamp_seconds",
            "Unix time at which each job's schedule fires next",
            labels=["flow", "job"],
        )
        for record in self.store.flows():
            try:
                ir = from_json(record.ir)
            except ValueError:
                continue
            for name, job in sorted(ir.jobs.items()):
                if job.schedule is None:
                    continue
                try:
                    instant = next_fire(job.schedule, now)
                except ValueError:
                    continue
                next_fires.add_metric([record.name, name], instant.timestamp())
        return [tick, next_fires]
