"""The `local` scaler hands its instances the flow's IR (`BackendContext.flow_ir_json`):
they run the flow as the orchestrator compiled it and never compile the file again,
so an edit of the file (here: one that no longer compiles) does not reach them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tideflow.compiler import compile_flow
from tideflow.compiler.ir import FlowIR
from tideflow.compiler.irjson import from_json, to_json
from tideflow.plugins.api import BackendContext, OutgoingMessage
from tideflow.plugins.local import LocalScaler
from tideflow.runtime.backends import open_topic_broker, scaler_context
from tideflow.runtime.context import encode_payload
from tideflow.runtime.store import Store

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

#: Bounds a hang only; every wait is for a condition.
HANG_LIMIT = 60.0

HANDLERS = """\
import os


def handle(ctx, message):
    with open(os.path.join(ctx.params["out"], str(message.value["id"])), "w") as stream:
        stream.write(ctx.instance_id)
"""

FLOW = """\
flow "shop" {{
}}

broker "main" {{
  kind = "embedded"
  path = "broker.db"
}}

topic "orders" {{
  broker     = broker.main
  partitions = 2
}}

consumer "workers" {{
  consumes = topic.orders
  run      = "shop_ir_handlers:handle"
  params   = {{ out = "{out}" }}
  scale {{
    backend = "local"
    max     = 2
  }}
}}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FlowIR:
    state = f"sqlite:///{tmp_path / 'state.db'}"
    Store.open(state).close()
    monkeypatch.setenv("TIDEFLOW_STATE", state)  # what the orchestrator sets
    (tmp_path / "out").mkdir()
    (tmp_path / "shop_ir_handlers.py").write_text(HANDLERS)
    path = tmp_path / "shop.flow"
    path.write_text(FLOW.format(out=tmp_path / "out"))
    result = compile_flow(path)
    assert result.ir is not None, result.diagnostics
    return result.ir


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG_LIMIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def cmdline(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [part.decode() for part in raw.split(b"\0") if part]


def test_the_scaler_context_carries_the_flow_ir(flow: FlowIR) -> None:
    context = scaler_context(flow, flow.consumers["workers"])
    assert context.block == "workers"
    assert context.source == Path(flow.info.source)
    assert context.flow_ir_json is not None
    assert to_json(from_json(json.loads(context.flow_ir_json))) == to_json(flow)
    assert "flow_ir_json" not in repr(context)  # a whole flow is no one's log line


async def test_instances_run_the_ir_they_were_given_not_the_file(flow: FlowIR) -> None:
    source = Path(flow.info.source)
    consumer = flow.consumers["workers"]
    assert consumer.scale is not None
    scaler = LocalScaler(consumer.scale.options, consumer, context=scaler_context(flow, consumer))
    # the file changes after the orchestrator compiled it: instances must not see it
    source.write_text('flow "shop" {\n  nonsense = \n')
    try:
        await scaler.scale(1)
        await until(lambda: scaler.health()["running"] == 1, "a running instance")
        (instance,) = scaler.health()["instances"]
        argv = cmdline(instance["pid"])
        assert argv[argv.index("worker") + 1 : argv.index("worker") + 3] == [
            str(source.resolve()),
            "workers",
        ]
        ir_file = Path(argv[argv.index("--ir") + 1])
        assert to_json(from_json(json.loads(ir_file.read_text()))) == to_json(flow)
        assert ir_file.stat().st_mode & 0o077 == 0  # this user's only

        async with open_topic_broker(flow, "orders") as broker:
            await broker.ensure_topic("orders", ["workers"])
            await broker.publish(
                "orders", [OutgoingMessage(encode_payload({"id": i})) for i in range(5)]
            )
        out = source.parent / "out"
        await until(lambda: len(list(out.iterdir())) == 5, "5 messages handled")
        assert scaler.health()["recent_exits"] == []
    finally:
        await scaler.aclose()
    assert not ir_file.exists(), "closing the scaler removes the IR it wrote"


async def test_without_an_ir_instances_compile_the_file(flow: FlowIR) -> None:
    source = Path(flow.info.source)
    consumer = flow.consumers["workers"]
    assert consumer.scale is not None
    context = BackendContext("workers", source)  # a caller that has no IR
    scaler = LocalScaler(consumer.scale.options, consumer, context=context)
    try:
        await scaler.scale(1)
        await until(lambda: scaler.health()["running"] == 1, "a running instance")
        (instance,) = scaler.health()["instances"]
        assert "--ir" not in cmdline(instance["pid"])
    finally:
        await scaler.aclose()
