"""`tideflow worker FILE CONSUMER --ir IR.json` (or `TIDEFLOW_FLOW_IR`): the instance
runs the flow compiled in the IR and never compiles FILE; an IR that cannot be read,
is not an IR or is another file's is a clear error with its exit status."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tideflow.compiler import compile_flow
from tideflow.compiler.ir import FlowIR
from tideflow.compiler.irjson import to_json
from tideflow.plugins.api import OutgoingMessage
from tideflow.runtime.backends import open_topic_broker
from tideflow.runtime.context import encode_payload
from tideflow.runtime.store import Store

pytestmark = pytest.mark.integration

#: Bounds a hang only; every wait is for a condition.
HANG_LIMIT = 60.0

FLOW = """\
flow "shop" {
}

broker "main" {
  kind = "embedded"
  path = "broker.db"
}

topic "orders" {
  broker = broker.main
}

consumer "workers" {
  consumes = topic.orders
  run      = "shop_worker_ir:handle"
}
"""


HANDLER = """\
from pathlib import Path


def handle(ctx, message):
    Path(__file__).with_name("handled").write_text(str(message.value))
"""


class Workspace:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.state = f"sqlite:///{folder / 'state.db'}"
        Store.open(self.state).close()
        (folder / "shop_worker_ir.py").write_text(HANDLER)
        self.flow_path = folder / "shop.flow"
        self.flow_path.write_text(FLOW)
        result = compile_flow(self.flow_path)
        assert result.ir is not None, result.diagnostics
        self.flow: FlowIR = result.ir
        self.ir_path = folder / "shop.ir.json"
        self.ir_path.write_text(json.dumps(to_json(self.flow)))
        self.processes: list[subprocess.Popen[str]] = []

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tideflow", "worker", *args],
            capture_output=True,
            text=True,
            timeout=HANG_LIMIT,
            cwd=self.folder,
            env={**os.environ, "NO_COLOR": "1", **(env or {})},
        )


async def publish(flow: FlowIR) -> None:
    async with open_topic_broker(flow, "orders") as broker:
        await broker.ensure_topic("orders", ["workers"])
        await broker.publish("orders", [OutgoingMessage(encode_payload({"id": 7}))])


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path)
    yield workspace
    for process in workspace.processes:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.parametrize("how", ["option", "environment"])
def test_an_instance_runs_the_ir_and_never_reads_the_file(work: Workspace, how: str) -> None:
    # compiled elsewhere: FILE still says where the handlers and the broker's file are
    document = to_json(work.flow)
    document["flow"]["source"] = "/elsewhere/shop.flow"
    work.ir_path.write_text(json.dumps(document))
    work.flow_path.write_text('flow "shop" {\n  nonsense = \n')  # no longer compiles
    args = ["--ir", str(work.ir_path)] if how == "option" else []
    env = {"TIDEFLOW_FLOW_IR": str(work.ir_path)} if how == "environment" else {}
    command = [sys.executable, "-m", "tideflow", "worker", str(work.flow_path), "workers"]
    process = subprocess.Popen(
        [*command, "--state", work.state, "--instance-id", "w-ir", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=work.folder,
        env={**os.environ, **env},
    )
    work.processes.append(process)
    store = Store.open(work.state)
    try:
        deadline = time.monotonic() + HANG_LIMIT
        while not any(i.id == "w-ir" for i in store.instances(consumer="workers")):
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the instance never started"
            time.sleep(0.05)
    finally:
        store.close()
    asyncio.run(publish(work.flow))
    handled = work.folder / "handled"
    deadline = time.monotonic() + HANG_LIMIT
    while not handled.exists():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "the message was never handled"
        time.sleep(0.05)
    assert handled.read_text() == "{'id': 7}"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=HANG_LIMIT)
    assert process.returncode == 0, output
    assert "instance w-ir started" in output


def test_an_unreadable_ir_is_a_usage_error(work: Workspace) -> None:
    result = work.run(str(work.flow_path), "workers", "--ir", str(work.folder / "nope.json"))
    assert result.returncode == 2, result.stderr
    assert "error: cannot read the IR `" in result.stderr
    assert "nope.json`: no such file or directory" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "Expecting property name"),
        ('{"flow": {}}', "it has no `format_version`"),
        ('{"format_version": 99}', "IR format version 99 is newer than this tideflow reads"),
    ],
)
def test_what_is_not_an_ir_is_a_configuration_problem(
    work: Workspace, text: str, reason: str
) -> None:
    work.ir_path.write_text(text)
    result = work.run(str(work.flow_path), "workers", "--ir", str(work.ir_path))
    assert result.returncode == 1, result.stderr
    assert f"error: `{work.ir_path}` is not a tideflow IR: " in result.stderr
    assert reason in result.stderr
    assert "Traceback" not in result.stderr


def test_the_ir_of_another_file_is_a_configuration_problem(work: Workspace) -> None:
    other = work.folder / "other.flow"
    other.write_text(FLOW)
    result = work.run(str(other), "workers", "--ir", str(work.ir_path))
    assert result.returncode == 1, result.stderr
    assert (
        f'error: `{work.ir_path}` is the IR of flow "shop" compiled from '
        f"`{work.flow.info.source}`, not from `{other}`"
    ) in result.stderr


def test_an_unknown_consumer_in_the_ir_is_a_usage_error(work: Workspace) -> None:
    result = work.run(str(work.flow_path), "wrokers", "--ir", str(work.ir_path))
    assert result.returncode == 2, result.stderr
    assert "has no consumer `wrokers`; did you mean `workers`?" in result.stderr
