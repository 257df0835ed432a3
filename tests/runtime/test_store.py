"""The run history store, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from tideflow.runtime.model import AttemptStatus, ErrorInfo, RunStatus, TriggerKind
from tideflow.runtime.store import MAX_OUTPUT_CHARS, Store, StoreError, normalize_url, tables

T0 = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


def test_migrated_schema_matches_the_table_definitions(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), tables.metadata)
    assert diff == []


def test_opening_twice_migrates_once(store_url: str) -> None:
    with Store.open(store_url) as first:
        first.save_flow("f", "f.flow", {"format_version": 1})
    with Store.open(store_url) as second:
        record = second.flow("f")
    assert record is not None and record.ir == {"format_version": 1}


def test_a_run_with_attempts_and_logs(store: Store) -> None:
    flow_run = store.create_flow_run(
        "orders", "extract", TriggerKind.SCHEDULE, scheduled_at=T0, params={"day": "mon"}
    )
    ids = store.create_job_runs(
        flow_run, "orders", ["extract", "report"], TriggerKind.SCHEDULE, scheduled_at=T0
    )
    first = store.start_attempt(ids["extract"], 1, pid=100)
    error = ErrorInfo(
        "ValueError",
        "bad row 7",
        "Traceback ...\nValueError: bad row 7",
        "shop.jobs.extract",
        "shop/jobs.py:12",
    )
    store.finish_attempt(
        first,
        AttemptStatus.FAILED,
        exit_code=1,
        stderr="boom",
        error=error,
        logs=[(T0, "INFO", "reading"), (T0, "ERROR", "bad row 7")],
        job_run_status=RunStatus.RETRYING,
    )
    second = store.start_attempt(ids["extract"], 2, pid=101)
    store.finish_attempt(
        second,
        AttemptStatus.SUCCESS,
        exit_code=0,
        stdout="done\n",
        job_run_status=RunStatus.SUCCESS,
    )

    run = store.job_run(ids["extract"])
    assert run is not None
    assert (run.status, run.attempts, run.scheduled_at) == (RunStatus.SUCCESS, 2, T0)
    assert run.started_at is not None and run.finished_at is not None
    attempts = store.attempts(ids["extract"])
    assert [(a.number, a.status) for a in attempts] == [
        (1, AttemptStatus.FAILED),
        (2, AttemptStatus.SUCCESS),
    ]
    assert attempts[0].error == error and attempts[0].stderr == "boom"
    assert attempts[1].stdout == "done\n" and attempts[1].error is None
    assert [(line.level, line.message) for line in store.logs(first)] == [
        ("INFO", "reading"),
        ("ERROR", "bad row 7"),
    ]
    flow_row = store.flow_run(flow_run)
    assert flow_row is not None and flow_row.params == {"day": "mon"}


def test_queries_filter_and_count(store: Store) -> None:
    flow_run = store.create_flow_run("a", "x", TriggerKind.MANUAL)
    ids = store.create_job_runs(flow_run, "a", ["x", "y", "z"], TriggerKind.MANUAL)
    store.set_job_run_status(ids["x"], RunStatus.SUCCESS)
    store.set_job_run_status(ids["y"], RunStatus.FAILED)
    other = store.create_flow_run("b", "x", TriggerKind.MANUAL)
    store.create_job_runs(other, "b", ["x"], TriggerKind.MANUAL)

    assert {r.job for r in store.job_runs(flow="a")} == {"x", "y", "z"}
    assert [r.job for r in store.job_runs(status=RunStatus.FAILED)] == ["y"]
    assert store.job_runs(since=datetime.now(UTC) + timedelta(minutes=1)) == []
    counts = store.status_counts(flow="a")
    assert counts == {
        ("a", "x", RunStatus.SUCCESS): 1,
        ("a", "y", RunStatus.FAILED): 1,
        ("a", "z", RunStatus.PENDING): 1,
    }
    assert set(store.last_job_runs("b")) == {"x"}


def test_record_fire_never_accepts_the_same_instant_twice(store: Store) -> None:
    assert store.record_fire("f", "j", T0)
    assert not store.record_fire("f", "j", T0)
    assert not store.record_fire("f", "j", T0 - timedelta(minutes=1))
    assert store.record_fire("f", "j", T0 + timedelta(minutes=1))
    assert store.last_fired("f") == {"j": T0 + timedelta(minutes=1)}


def test_record_fire_is_exclusive_across_threads(store: Store) -> None:
    wins: list[bool] = []
    barrier = threading.Barrier(4)

    def fire() -> None:
        barrier.wait()
        wins.append(store.record_fire("f", "j", T0))

    threads = [threading.Thread(target=fire) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False, False, False, True]


def test_running_attempts_of_a_dead_orchestrator_are_marked_lost(store: Store) -> None:
    dead = store.register_orchestrator(["f"])
    flow_run = store.create_flow_run("f", "j", TriggerKind.MANUAL)
    ids = store.create_job_runs(flow_run, "f", ["j"], TriggerKind.MANUAL)
    attempt = store.start_attempt(ids["j"], 1, orchestrator_id=dead)
    alive = store.register_orchestrator(["f"])

    lost = store.mark_lost(["f"], except_orchestrator=alive)

    assert [(a.id, a.status) for a in lost] == [(attempt, AttemptStatus.LOST)]
    assert store.attempts(ids["j"])[0].status is AttemptStatus.LOST
    assert store.mark_lost(["f"], except_orchestrator=alive) == []


def test_cancel_requests_only_reach_unfinished_runs(store: Store) -> None:
    flow_run = store.create_flow_run("f", "j", TriggerKind.MANUAL)
    ids = store.create_job_runs(flow_run, "f", ["j", "k"], TriggerKind.MANUAL)
    store.set_job_run_status(ids["k"], RunStatus.SUCCESS)
    assert store.request_cancel(ids["j"])
    assert not store.request_cancel(ids["k"])
    assert store.cancel_requests(ids.values()) == {ids["j"]}


def test_huge_output_keeps_its_end(store: Store) -> None:
    flow_run = store.create_flow_run("f", "j", TriggerKind.MANUAL)
    ids = store.create_job_runs(flow_run, "f", ["j"], TriggerKind.MANUAL)
    attempt = store.start_attempt(ids["j"], 1)
    output = "x" * MAX_OUTPUT_CHARS + "THE END"
    store.finish_attempt(attempt, AttemptStatus.SUCCESS, stdout=output)
    kept = store.attempts(ids["j"])[0].stdout
    assert kept.endswith("THE END") and "characters cut" in kept
    assert len(kept) <= MAX_OUTPUT_CHARS


def test_times_come_back_aware_and_in_utc(store: Store) -> None:
    lisbon_summer = datetime(2026, 7, 1, 12, 0, tzinfo=UTC).astimezone()
    assert store.record_fire("f", "j", lisbon_summer)
    assert store.last_fired("f")["j"] == lisbon_summer
    assert store.last_fired("f")["j"].tzinfo == UTC


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        store.record_fire("f", "j", datetime(2026, 1, 1))


def test_bad_url_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="cannot open the state store"):
        Store.open("postgresql://nobody:secret@127.0.0.1:1/none")


def test_bad_url_message_hides_the_password() -> None:
    with pytest.raises(StoreError) as caught:
        Store.open("postgresql://nobody:hunter2@127.0.0.1:1/none")
    assert "hunter2" not in str(caught.value)


def test_url_forms() -> None:
    assert normalize_url("state.db") == "sqlite:///state.db"
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"


def test_an_old_state_file_is_upgraded_on_open(store_url: str) -> None:
    from alembic import command
    from tideflow.runtime.store.engine import create_engine
    from tideflow.runtime.store.migrate import alembic_config

    engine = create_engine(normalize_url(store_url))
    with engine.begin() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(
            sa.insert(tables.schedule_state).values(
                flow="f", job="j", last_fired_at=T0, updated_at=T0
            )
        )
    engine.dispose()

    with Store.open(store_url) as upgraded:
        assert upgraded.last_fired("f") == {"j": T0}  # kept across the upgrade
        request = upgraded.request_trigger("f", "j")  # a table of a later revision
        assert upgraded.trigger_request_run(request) == (False, None)


def test_trigger_requests_are_claimed_once_in_order(store: Store) -> None:
    first = store.request_trigger("f", "a", params={"n": 1}, requested_by="ops@host")
    second = store.request_trigger("f", "b")
    store.request_trigger("other", "c")
    orchestrator = store.register_orchestrator(["f"])

    claimed = store.claim_trigger_requests(["f"], orchestrator)

    assert [(r.id, r.job, r.params) for r in claimed] == [(first, "a", {"n": 1}), (second, "b", {})]
    assert claimed[0].requested_by == "ops@host"
    assert store.claim_trigger_requests(["f"], orchestrator) == []
    store.link_trigger_request(first, 42)
    assert store.trigger_request_run(first) == (True, 42)


def test_record_fires_in_one_batch_follows_the_same_rule(store: Store) -> None:
    assert store.record_fire("f", "a", T0)
    later = T0 + timedelta(minutes=1)
    accepted = store.record_fires("f", [("a", T0), ("b", T0), ("a", later), ("b", T0)])
    assert accepted == [False, True, True, False]
    assert store.last_fired("f") == {"a": later, "b": T0}


def test_consumer_instances_report_and_stop(store: Store) -> None:
    from tideflow.runtime.model import InstanceStats, InstanceStatus

    store.instance_started("i-1", "f", "workers", pid=10)
    store.instance_started("i-2", "f", "workers", pid=11)
    store.instance_heartbeat(
        "i-1",
        InstanceStats(
            InstanceStatus.RUNNING, handled=500, in_flight=20, rate=250.0, partitions=(0, 2)
        ),
    )
    store.instance_heartbeat("i-2", InstanceStats(InstanceStatus.STOPPED, handled=7))

    alive = store.instances(flow="f", consumer="workers", alive_within=60)
    assert [(i.id, i.stats.handled, i.stats.partitions) for i in alive] == [("i-1", 500, (0, 2))]
    everyone = {i.id: i for i in store.instances(consumer="workers")}
    assert everyone["i-2"].stopped_at is not None
    assert everyone["i-2"].stats.status is InstanceStatus.STOPPED


def test_scale_decisions_keep_their_inputs(store: Store) -> None:
    from tideflow.runtime.model import ScaleDecisionRow

    decision = ScaleDecisionRow(
        flow="f",
        consumer="workers",
        taken_at=T0,
        backlog=3412,
        per_partition={0: 3000, 5: 412},
        partitions=6,
        reading_error=None,
        current=2,
        desired=6,
        applied=True,
        reason="scale_up",
        explanation="backlog 3,412 / 500 per instance = 7; capped by 6 partitions -> 6",
        rule={"max": 12, "lag_per_instance": 500},
    )
    decision_id = store.record_decision(decision)
    later = dataclasses.replace(
        decision,
        taken_at=T0 + timedelta(seconds=2),
        backlog=None,
        per_partition={},
        reading_error="timeout",
        desired=6,
        applied=False,
        reason="hold_failed_reading",
    )
    store.record_decision(later)

    newest, oldest = store.decisions(flow="f", consumer="workers")
    assert oldest == dataclasses.replace(decision, id=decision_id)
    assert newest.reading_error == "timeout" and newest.backlog is None


def test_runs_that_ended_without_an_attempt_count_as_finished(store: Store) -> None:
    flow_run = store.create_flow_run("f", "a", TriggerKind.MANUAL)
    ids = store.create_job_runs(flow_run, "f", ["a", "b"], TriggerKind.MANUAL)
    store.set_job_run_status(ids["b"], RunStatus.UPSTREAM_FAILED, note="`a` failed")
    assert not store.request_cancel(ids["b"])
    (row,) = store.job_runs(status=RunStatus.UPSTREAM_FAILED)
    assert row.finished_at is not None and row.note == "`a` failed"
    assert [r.id for r in store.unfinished_flow_runs(["f"])] == [flow_run]


def test_dead_letters_are_counted_and_claimed_once(store: Store) -> None:
    from tideflow.runtime.model import DeadLetterRow

    def row(consumer: str, n: int, at: datetime) -> DeadLetterRow:
        return DeadLetterRow("orders", consumer, "w-1", at, "in", 0, str(n), 5, "dlq", f"E: {n}")

    store.record_dead_letters(
        [row("a", 1, T0), row("a", 2, T0 + timedelta(hours=2)), row("b", 3, T0)]
    )
    store.record_dead_letters([])  # nothing to insert: no statement
    assert store.dead_letter_counts() == {("orders", "a"): 2, ("orders", "b"): 1}
    assert store.dead_letter_counts(since=T0 + timedelta(hours=1)) == {("orders", "a"): 1}
    assert [d.message_id for d in store.dead_letters(consumer="a")] == ["2", "1"]
    claimed = store.claim_dead_letters(["orders"])
    assert [d.message_id for d in claimed] == ["1", "2", "3"]
    assert store.claim_dead_letters(["orders"]) == []
    store.record_dead_letters([row("a", 5, T0)])
    assert [d.message_id for d in store.claim_dead_letters(["orders", "other"])] == ["5"]
    assert store.claim_dead_letters(["other"]) == []


def test_consumer_log_lines_keep_the_newest_per_instance(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tideflow.runtime.model import ConsumerLogLine
    from tideflow.runtime.store import consumers as store_module

    monkeypatch.setattr(store_module, "CONSUMER_LOG_KEEP", 3)
    for instance in ("w-1", "w-2"):
        lines = [ConsumerLogLine(instance, T0, "INFO", f"{instance} line {n}") for n in range(5)]
        store.record_consumer_logs("orders", "a", instance, lines[:2])
        store.record_consumer_logs("orders", "a", instance, lines[2:])
    mine = store.consumer_logs("orders", "a", instance_id="w-1")
    assert [line.message for line in mine] == ["w-1 line 2", "w-1 line 3", "w-1 line 4"]
    assert len(store.consumer_logs("orders", "a")) == 6
    assert [line.message for line in store.consumer_logs(None, "a", limit=2)] == [
        "w-2 line 3",
        "w-2 line 4",
    ]
    assert store.consumer_logs("other", "a") == []


def test_the_head_revision_is_the_newest_migration() -> None:
    from alembic.script import ScriptDirectory
    from tideflow.runtime.store.migrate import HEAD_REVISION, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


def test_a_failing_database_raises_store_error_with_the_drivers_message(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE schedule_state"))
    with pytest.raises(StoreError, match="schedule_state") as caught:
        store.record_fire("f", "j", T0)
    assert isinstance(caught.value.__cause__, sa.exc.DBAPIError)
    with pytest.raises(StoreError, match="schedule_state"):
        store.last_fired("f")


def test_orchestrators_come_back_as_records(store: Store) -> None:
    both = store.register_orchestrator(["orders", "billing"])
    stopped = store.register_orchestrator(["orders"])
    store.orchestrator_stopped(stopped)

    (live,) = store.live_orchestrators(["orders", "other"], 30)
    assert dataclasses.is_dataclass(live)
    assert (live.id, live.flows) == (both, ("orders",))  # only the flows asked about
    assert store.live_orchestrators(["other"], 30) == []

    listed = {o.id: o for o in store.orchestrators(stale_after=30)}
    assert listed[both].alive and listed[both].flows == ("orders", "billing")
    assert not listed[stopped].alive and listed[stopped].stopped_at is not None


def test_trigger_requests_are_listed_newest_first(store: Store) -> None:
    first = store.request_trigger("f", "a", params={"n": 1}, requested_by="ops@host")
    second = store.request_trigger("f", "b")
    store.claim_trigger_requests(["f"], store.register_orchestrator(["f"]))
    third = store.request_trigger("f", "c")

    assert [r.id for r in store.trigger_requests()] == [third]
    every = store.trigger_requests(flow="f", pending_only=False)
    assert [(r.id, r.claimed) for r in every] == [(third, False), (second, True), (first, True)]
    assert every[-1].params == {"n": 1} and every[-1].requested_by == "ops@host"
