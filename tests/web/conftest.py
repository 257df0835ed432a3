"""A run history made by a real run, shared by the dashboard's tests.

Once per session, the executor runs the flow in `shop.flow` (its jobs are in
`webjobs.py`): `extract` succeeds and prints a secret (which the executor redacts),
`load` fails twice with a traceback, `report` is then upstream_failed. Consumer
instances and autoscaler decisions are written through the store's API. Each
test gets its own copy of that SQLite file.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tideflow.compiler import compile_flow
from tideflow.compiler.irjson import to_json
from tideflow.runtime.executor import Executor, RunRequest
from tideflow.runtime.model import (
    InstanceStats,
    InstanceStatus,
    RunStatus,
    ScaleDecisionRow,
    TriggerKind,
)
from tideflow.runtime.store import Store

from tideflow.web import create_app

HERE = Path(__file__).resolve().parent
FLOW_FILE = HERE / "shop.flow"
SECRET_VALUE = "s3cr3t-VALUE-never-shown"
SCHEDULED_AT = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
RUNNING_INSTANCES = {"inst-a": (0, 1), "inst-b": (2, 3)}  # and their partitions


@dataclass(frozen=True, slots=True)
class History:
    """What the session's real run left in the store."""

    path: Path
    orchestrator: int
    flow_run: int
    extract: int  # job run ids
    load: int
    report: int


@dataclass(frozen=True, slots=True)
class State:
    url: str
    history: History


async def _run_flow(store: Store) -> int:
    result = compile_flow(FLOW_FILE)
    assert result.ir is not None, result.diagnostics
    store.save_flow("shop", str(FLOW_FILE), to_json(result.ir))
    async with Executor(result.ir, store, kill_grace=0.5) as executor:
        flow_run = await executor.submit(RunRequest("extract", TriggerKind.SCHEDULE, SCHEDULED_AT))
        assert await executor.wait(flow_run) is RunStatus.FAILED
    return flow_run


def write_scaling_history(store: Store, now: datetime) -> None:
    """Two live instances, one stopped, and half an hour of decisions for `workers`."""
    for name, partitions in [*RUNNING_INSTANCES.items(), ("inst-old", ())]:
        store.instance_started(name, "shop", "workers", pid=1000 + len(name))
        status = InstanceStatus.STOPPED if name == "inst-old" else InstanceStatus.RUNNING
        store.instance_heartbeat(
            name,
            InstanceStats(status=status, handled=120, rate=3.5, partitions=partitions),
        )
    backlogs = [0, 40, 180, 420, 390, 260, None, 150, 90, 30]
    current = 0
    for step, backlog in enumerate(backlogs):
        desired = current if backlog is None else min(4, -(-backlog // 100))
        per_partition = {} if backlog is None else dict.fromkeys(range(4), backlog // 4)
        if backlog is not None and backlog >= 100:
            per_partition[0] += backlog - sum(per_partition.values())
        store.record_decision(
            ScaleDecisionRow(
                flow="shop",
                consumer="workers",
                taken_at=now - timedelta(minutes=30) + timedelta(minutes=3 * step),
                backlog=backlog,
                per_partition=per_partition,
                partitions=4,
                reading_error="broker unreachable" if backlog is None else None,
                current=current,
                desired=desired,
                applied=desired != current,
                reason=(
                    "hold_failed_reading"
                    if backlog is None
                    else "scale_up"
                    if desired > current
                    else "scale_down"
                    if desired < current
                    else "steady"
                ),
                explanation=(
                    "backlog could not be read: holding"
                    if backlog is None
                    else f"backlog {backlog:,} / 100 per instance = {desired}"
                ),
                rule={"lag_per_instance": 100, "max": 4},
            )
        )
        current = desired


@pytest.fixture(scope="session")
def recorded_history(tmp_path_factory: pytest.TempPathFactory) -> History:
    folder = tmp_path_factory.mktemp("web-history")
    path = folder / "state.db"
    saved = {key: os.environ.get(key) for key in ("WEB_TEST_SECRET", "PYTHONPATH")}
    # worker processes import webjobs from here (the executor also adds the flow's folder)
    os.environ["WEB_TEST_SECRET"] = SECRET_VALUE
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), saved["PYTHONPATH"]]))
    try:
        with Store.open(f"sqlite:///{path}") as store:
            flow_run = asyncio.run(_run_flow(store))
            runs = {r.job: r.id for r in store.job_runs(flow_run_id=flow_run, limit=None)}
            orchestrator = store.register_orchestrator(["shop"])
            write_scaling_history(store, datetime.now(UTC))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return History(path, orchestrator, flow_run, runs["extract"], runs["load"], runs["report"])


def copy_history(history: History, folder: Path) -> str:
    """A copy of the recorded history whose orchestrator and instances look alive now
    (their heartbeats are seconds old, whenever the session recorded them)."""
    copy = folder / "state.db"
    shutil.copyfile(history.path, copy)
    url = f"sqlite:///{copy}"
    with Store.open(url) as store:
        store.heartbeat(history.orchestrator)
        for name, partitions in RUNNING_INSTANCES.items():
            store.instance_heartbeat(
                name,
                InstanceStats(
                    status=InstanceStatus.RUNNING, handled=120, rate=3.5, partitions=partitions
                ),
            )
    return url


@pytest.fixture
def state(recorded_history: History, tmp_path: Path) -> State:
    """A copy of the recorded history for one test."""
    return State(copy_history(recorded_history, tmp_path), recorded_history)


def make_client(url: str, **options: Any) -> TestClient:
    options.setdefault("token", None)
    options.setdefault("timezone", "UTC")
    options.setdefault("refresh_seconds", None)
    return TestClient(create_app(url, **options), base_url="http://127.0.0.1")


@pytest.fixture
def client(state: State) -> Iterator[TestClient]:
    with make_client(state.url) as opened:
        yield opened


def csrf_headers(client: TestClient) -> dict[str, str]:
    """The double-submit token: the cookie a page set, echoed in the header."""
    if "tideflow_csrf" not in client.cookies:
        client.get("/")
    return {"X-CSRF-Token": client.cookies["tideflow_csrf"]}
