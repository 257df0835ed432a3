"""The dashboard's questions to the store and every endpoint, on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from tideflow.compiler import compile_flow
from tideflow.compiler.irjson import to_json
from tideflow.runtime.model import (
    AttemptStatus,
    ErrorInfo,
    InstanceStats,
    InstanceStatus,
    RunStatus,
    TriggerKind,
)
from tideflow.runtime.store import Store

from .conftest import FLOW_FILE, make_client, write_scaling_history

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    try:
        admin = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with admin.begin() as conn:
            schema = f"tfweb_{uuid.uuid4().hex[:12]}"
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {str(exc).splitlines()[0]}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_every_endpoint_answers_on_postgresql(postgres_url: str) -> None:
    now = datetime.now(UTC)
    with Store.open(postgres_url) as store:
        ir = compile_flow(FLOW_FILE).ir
        assert ir is not None
        store.save_flow("shop", str(FLOW_FILE), to_json(ir))
        run = store.create_flow_run("shop", "extract", TriggerKind.SCHEDULE, scheduled_at=now)
        ids = store.create_job_runs(
            run, "shop", ["extract", "load"], TriggerKind.SCHEDULE, scheduled_at=now
        )
        first = store.start_attempt(ids["extract"], 1, at=now + timedelta(milliseconds=7))
        store.finish_attempt(first, AttemptStatus.SUCCESS, job_run_status=RunStatus.SUCCESS)
        failed = store.start_attempt(ids["load"], 1)
        store.finish_attempt(
            failed,
            AttemptStatus.FAILED,
            error=ErrorInfo("KeyError", "'sku'", "Traceback ...", "shop.load", "shop.py:3"),
            logs=[(now, "ERROR", "no sku")],
            job_run_status=RunStatus.FAILED,
        )
        store.register_orchestrator(["shop"])
        store.request_trigger("shop", "load", params={"n": 1})
        write_scaling_history(store, now)
        store.instance_heartbeat("inst-a", InstanceStats(status=InstanceStatus.RUNNING))
    with make_client(postgres_url) as client:
        for path in (
            "/api/overview",
            "/api/flows",
            "/api/flows/shop",
            "/api/flows/shop/ir",
            "/api/runs",
            f"/api/runs/{ids['load']}",
            "/api/upcoming",
            "/api/consumers",
            "/api/requests",
            "/api/scheduler",
            "/",
            "/flows/shop",
            f"/runs/{ids['load']}",
            "/upcoming",
            "/consumers",
            "/metrics",
        ):
            assert client.get(path).status_code == 200, path
        overview = client.get("/api/overview").json()
        assert overview["recent_failures"][0]["error"]["function"] == "shop.load"
        assert overview["pending_requests"][0]["params"] == {"n": 1}
        assert overview["scheduler"]["alive"] is True
        (workers,) = client.get("/api/consumers").json()["consumers"]
        assert workers["alive"] == 2 and len(workers["history"]) == 10
        metrics = client.get("/metrics").text
        assert 'tideflow_schedule_lateness_seconds_count{flow="shop",job="extract"} 1.0' in metrics
        assert 'tideflow_scale_events_total{consumer="workers",flow="shop",reason="scale_up"}' in (
            metrics
        )
