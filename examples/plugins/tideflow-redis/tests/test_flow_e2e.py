"""The third-party path end to end: a `.flow` file names `kind = "redis"`, the
compiler checks the block against the plugin's option schema (found through the
installed entry point), and the broker built from the compiled IR carries
messages through the real server."""

from __future__ import annotations

from pathlib import Path

import pytest
from tideflow.plugins.api import BackendContext, OutgoingMessage
from tideflow_redis import RedisBroker

from tideflow.testing import PluginSet, compile_flow, receive

FLOW = """
flow "orders" {{ description = "redis plugin, end to end" }}

broker "events" {{
  kind               = "redis"
  url                = "{url}"
  key_prefix         = "{prefix}"
  visibility_timeout = 2s
}}

topic "orders" {{ broker = broker.events }}

job "extract" {{
  run       = "shop.jobs:extract"
  schedule  = every(10m)
  publishes = topic.orders
}}

consumer "order_workers" {{
  consumes = topic.orders
  group    = "order-workers"
  run      = "shop.workers:handle"
}}
"""


def write_flow(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orders.flow"
    path.write_text(text)
    return path


def test_plugin_is_installed_through_its_entry_point(tideflow_installed_plugins: PluginSet) -> None:
    plugins = tideflow_installed_plugins
    (info,) = [p for p in plugins.plugins if p.name == "redis"]
    assert (info.distribution, info.module) == ("tideflow-redis", "tideflow_redis.plugin")
    assert info.backends == (("broker", "redis"),)
    assert plugins.broker_class("redis") is RedisBroker
    assert [str(p) for p in plugins.problems if p.plugin == "redis"] == []


@pytest.mark.anyio
async def test_flow_compiles_and_its_broker_carries_messages(
    tmp_path: Path, redis_url: str, redis_prefix: str, tideflow_installed_plugins: PluginSet
) -> None:
    path = write_flow(tmp_path, FLOW.format(url=redis_url, prefix=redis_prefix))
    result = compile_flow(path)
    assert [d.message for d in result.diagnostics] == []
    ir = result.ir
    assert ir is not None

    node = ir.brokers["events"]
    assert node.kind == "redis"
    topics = [t for t in ir.topics.values() if t.broker == node.name]
    consumer = ir.consumers["order_workers"]
    broker_class = tideflow_installed_plugins.broker_class(node.kind)
    context = BackendContext(block=node.name, source=path)

    async with broker_class(node.options, topics, context=context) as publisher:
        await publisher.ensure_topic("orders", [consumer.group])
        await publisher.publish("orders", [OutgoingMessage(b"order-%d" % i) for i in range(50)])
        assert (await publisher.backlog("orders", consumer.group)).total == 50
    async with broker_class(node.options, topics, context=context) as worker:
        got = await receive(worker, consumer.consumes, consumer.group, 50, timeout=10)
        assert sorted(m.value for m in got) == sorted(b"order-%d" % i for i in range(50))
        assert (await worker.backlog("orders", consumer.group)).total == 0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.usefixtures("tideflow_installed_plugins")
def test_option_mistakes_are_reported_with_the_plugins_schema(tmp_path: Path) -> None:
    text = """
broker "events" {
  kind           = "redis"
  url            = "redis://127.0.0.1:6379/0"
  key_prefx      = "shop:"
  socket_timeout = "soon"
}
broker "spare" { kind = "redis" }
"""
    result = compile_flow(write_flow(tmp_path, text))
    found = {(d.code, d.message, d.help) for d in result.diagnostics if d.is_error}
    assert found == {
        (
            "E202",
            'unknown attribute `key_prefx` in broker "events"',
            "did you mean `key_prefix`?",
        ),
        (
            "E203",
            'wrong type for `socket_timeout` in broker "events": expected duration, found a string',
            None,
        ),
        (
            "E204",
            'missing required attribute `url` in broker "spare"',
            'add it: `url = env("REDIS_URL", "redis://localhost:6379/0")`',
        ),
    }
    assert result.ir is None
