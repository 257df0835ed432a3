"""/metrics: what Prometheus scrapes, read from the store at scrape time."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from tideflow.runtime.model import AttemptStatus, RunStatus, ScaleDecisionRow, TriggerKind
from tideflow.runtime.store import Store, StoreError

from .conftest import State


def scrape(client: TestClient) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Samples by name, then by their sorted labels."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def test_job_runs_are_counted_by_flow_job_and_status(client: TestClient, state: State) -> None:
    samples = scrape(client)["tideflow_job_runs"]
    with Store.open(state.url) as store:
        expected = {
            (("flow", flow), ("job", job), ("status", status.value)): float(count)
            for (flow, job, status), count in store.status_counts().items()
        }
    assert samples == expected
    assert samples[(("flow", "shop"), ("job", "load"), ("status", "failed"))] == 1


def test_attempt_durations_are_a_histogram_of_finished_attempts(
    client: TestClient, state: State
) -> None:
    samples = scrape(client)
    counts = samples["tideflow_attempt_duration_seconds_count"]
    assert counts == {
        (("flow", "shop"), ("job", "extract"), ("status", "success")): 1.0,
        (("flow", "shop"), ("job", "load"), ("status", "failed")): 2.0,
    }
    with Store.open(state.url) as store:
        took = sum(
            (a.finished_at - a.started_at).total_seconds()
            for a in store.attempts(state.history.load)
            if a.finished_at is not None
        )
    load = (("flow", "shop"), ("job", "load"), ("status", "failed"))
    assert samples["tideflow_attempt_duration_seconds_sum"][load] == pytest.approx(took)
    # a second scrape counts nothing twice
    assert scrape(client)["tideflow_attempt_duration_seconds_count"] == counts


def test_new_attempts_are_added_at_the_next_scrape(client: TestClient, state: State) -> None:
    scrape(client)
    with Store.open(state.url) as store:
        run = store.create_flow_run("shop", "report", TriggerKind.MANUAL)
        (job_run,) = store.create_job_runs(run, "shop", ["report"], TriggerKind.MANUAL).values()
        started = datetime.now(UTC)
        attempt = store.start_attempt(job_run, 1, at=started)
        store.finish_attempt(
            attempt,
            AttemptStatus.TIMEOUT,
            at=started + timedelta(seconds=12),
            job_run_status=RunStatus.FAILED,
        )
    samples = scrape(client)
    key = (("flow", "shop"), ("job", "report"), ("status", "timeout"))
    assert samples["tideflow_attempt_duration_seconds_count"][key] == 1
    assert samples["tideflow_attempt_duration_seconds_sum"][key] == pytest.approx(12.0)
    buckets = samples["tideflow_attempt_duration_seconds_bucket"]
    assert buckets[(*key[:2], ("le", "10.0"), key[2])] == 0
    assert buckets[(*key[:2], ("le", "30.0"), key[2])] == 1


def test_schedule_lateness_is_measured_on_the_root_job_only(
    client: TestClient, state: State
) -> None:
    samples = scrape(client)
    counts = samples["tideflow_schedule_lateness_seconds_count"]
    assert counts == {(("flow", "shop"), ("job", "extract")): 1.0}
    with Store.open(state.url) as store:
        run = store.job_run(state.history.extract)
        (first,) = store.attempts(state.history.extract)
    assert run is not None and run.scheduled_at is not None
    late = (first.started_at - run.scheduled_at).total_seconds()
    total = samples["tideflow_schedule_lateness_seconds_sum"][
        (("flow", "shop"), ("job", "extract"))
    ]
    assert total == pytest.approx(late)


def test_consumers_report_backlog_instances_and_scale_events(
    client: TestClient, state: State
) -> None:
    samples = scrape(client)
    labels = (("consumer", "workers"), ("flow", "shop"))
    with Store.open(state.url) as store:
        latest = store.decisions(flow="shop", consumer="workers", limit=1)[0]
        applied = Counter(d.reason for d in store.decisions(limit=None) if d.applied)
    assert samples["tideflow_consumer_backlog_messages"][labels] == latest.backlog
    assert samples["tideflow_consumer_instances_desired"][labels] == latest.desired
    assert samples["tideflow_consumer_instances_current"][labels] == latest.current
    assert samples["tideflow_consumer_instances_alive"][labels] == 2
    partitions = samples["tideflow_consumer_partition_backlog_messages"]
    assert {dict(k)["partition"]: v for k, v in partitions.items()} == {
        str(p): float(n) for p, n in latest.per_partition.items()
    }
    events = samples["tideflow_scale_events_total"]
    assert {dict(k)["reason"]: v for k, v in events.items()} == {
        reason: float(n) for reason, n in applied.items()
    }
    with Store.open(state.url) as store:
        store.record_decision(
            ScaleDecisionRow(
                flow="shop",
                consumer="workers",
                taken_at=datetime.now(UTC),
                backlog=900,
                per_partition={0: 900},
                partitions=4,
                reading_error=None,
                current=1,
                desired=4,
                applied=True,
                reason="scale_up",
                explanation="backlog 900 / 100 per instance = 9; capped by max 4 -> 4",
                rule={},
            )
        )
    again = scrape(client)
    assert again["tideflow_scale_events_total"][(*labels, ("reason", "scale_up"))] == (
        applied["scale_up"] + 1
    )
    assert again["tideflow_consumer_backlog_messages"][labels] == 900


def test_the_scheduler_tick_and_next_fires_tell_dead_from_idle(
    client: TestClient, state: State
) -> None:
    before = datetime.now(UTC)
    samples = scrape(client)
    with Store.open(state.url) as store:
        beat = store.last_heartbeat()
    assert beat is not None
    assert samples["tideflow_scheduler_last_tick_timestamp_seconds"][()] == pytest.approx(
        beat.timestamp()
    )
    next_fires = samples["tideflow_job_next_fire_timestamp_seconds"]
    assert set(next_fires) == {
        (("flow", "shop"), ("job", "extract")),
        (("flow", "shop"), ("job", "heartbeat")),
    }
    for value in next_fires.values():
        assert before.timestamp() < value <= before.timestamp() + 86400


def test_a_store_that_cannot_be_read_says_so(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.app.state.dashboard.store  # type: ignore[attr-defined]

    def broken(**_: object) -> None:
        raise StoreError("(sqlite3.OperationalError) database is locked")

    monkeypatch.setattr(store, "status_counts", broken)
    samples = scrape(client)
    assert samples["tideflow_store_up"][()] == 0
    assert "tideflow_job_runs" not in samples
    monkeypatch.undo()
    assert scrape(client)["tideflow_store_up"][()] == 1


def test_dead_letters_are_counted_per_consumer(client: TestClient, state: State) -> None:
    from tideflow.runtime.model import DeadLetterRow

    labels = (("consumer", "workers"), ("flow", "shop"))
    before = scrape(client).get("tideflow_consumer_dead_letters_total", {}).get(labels, 0.0)
    with Store.open(state.url) as store:
        store.record_dead_letters(
            [
                DeadLetterRow(
                    "shop", "workers", "w-1", datetime.now(UTC), "orders", 0, str(n), 5, "dlq", "E"
                )
                for n in range(3)
            ]
        )
    after = scrape(client)["tideflow_consumer_dead_letters_total"]
    assert after[labels] == before + 3


def test_the_leader_and_its_standbys_are_told_apart(client: TestClient, state: State) -> None:
    with Store.open(state.url) as store:
        leader = store.register_orchestrator(["shop"])
        standby = store.register_orchestrator(["shop"])
        grant = store.acquire_lease("shop", leader, 30.0)
        assert grant is not None and store.acquire_lease("shop", standby, 30.0) is None
    samples = scrape(client)
    roles = {
        dict(labels)["orchestrator"]: value
        for labels, value in samples["tideflow_orchestrator_leader"].items()
    }
    assert roles[str(leader)] == 1 and roles[str(standby)] == 0
    assert samples["tideflow_orchestrator_lease_token"][(("flows", "shop"),)] == grant.token
    scheduler = client.get("/api/scheduler").json()
    by_id = {o["id"]: o["role"] for o in scheduler["orchestrators"]}
    assert by_id[leader] == "leader" and by_id[standby] == "standby"
