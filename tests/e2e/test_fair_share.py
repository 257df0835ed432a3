"""Scaling out shares a backlog (issue 11, item 2): on each broker, a backlog of
`INSTANCES * LAG_PER_INSTANCE` messages, a consumer with the default `batch_size`
and `max_in_flight`, scaled from 0 to `INSTANCES` `tideflow worker` processes by
the `local` scaler; every instance handles a fair share, and the dashboard's
balance verdict says so.

The share follows from the protocol, not from the OS scheduler. An instance holds
at most `max_in_flight` messages (a "lot"); handlers block until others start:

- NATS (one queue shared by all): in rounds. A handler of an instance's r-th lot
  waits until `r * INSTANCES * lot` messages were started across all instances.
  Since none holds more than a lot, a round fills only once every instance holds
  its lot: each handles exactly its share.
- embedded and Kafka (a group member is assigned partitions; the topic has
  `INSTANCES` partitions of `LAG_PER_INSTANCE` messages): handlers wait until the
  test sees, in the instances' heartbeats, every instance owning one partition.
  Each then handles its partition, give or take the lot the first instance held
  before the others joined (on Kafka the new owner of such a partition handles
  those messages again: at least once).

An instance that holds more than its slots (the whole backlog, as in the issue),
or that keeps its partitions while busy, leaves the others nothing: a round
never fills or the partitions never spread, the waits give up after
`PATIENCE`, and the spread shows it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tideflow.compiler import compile_flow, schema
from tideflow.compiler.ir import FlowIR
from tideflow.plugins.api import BackendContext, OutgoingMessage
from tideflow.plugins.local import LocalScaler
from tideflow.runtime.backends import open_topic_broker
from tideflow.runtime.context import encode_payload
from tideflow.runtime.model import InstanceRow
from tideflow.runtime.store import Store

from tideflow.testing.kafka import kafka_bootstrap, kafka_server
from tideflow.testing.nats import nats_server, nats_url
from tideflow.web.service import assess_balance

__all__ = ["kafka_bootstrap", "kafka_server", "nats_server", "nats_url"]  # fixtures

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

INSTANCES = 3
LAG_PER_INSTANCE = 20
MESSAGES = INSTANCES * LAG_PER_INSTANCE
DEFAULT_MAX_IN_FLIGHT: int = schema.CONSUMER.by_name["max_in_flight"].default
#: Longest a handler waits for the others before it gives up (the test then fails).
PATIENCE = 60.0

HANDLERS = """\
import os
import threading
import time

_lock = threading.Lock()


def _started(folder):
    total = 0
    for name in os.listdir(folder):
        if name.endswith(".started"):
            with open(os.path.join(folder, name)) as stream:
                total += sum(1 for _ in stream)
    return total


def handle(ctx, message):
    params = ctx.params
    out, lot = params["out"], int(params["lot"])
    mine = os.path.join(out, ctx.instance_id + ".started")
    with _lock:  # this instance's n-th start, exactly
        with open(mine, "a") as stream:
            stream.write(f"{message.value['id']}\\n")
        with open(mine) as stream:
            nth = sum(1 for _ in stream)
    go = os.path.join(out, "go")
    wanted = min(int(params["total"]), -(-nth // lot) * int(params["round"]))
    if params["mode"] == "rounds":
        ready = lambda: os.path.exists(go) and _started(out) >= wanted
    else:
        ready = lambda: os.path.exists(go)
    deadline = time.monotonic() + float(params["patience"])
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.02)
    with _lock:
        with open(os.path.join(out, ctx.instance_id + ".ids"), "a") as stream:
            stream.write(f"{message.value['id']}\\n")
"""

EMBEDDED_BROKER = """\
broker "main" {
  kind               = "embedded"
  path               = "broker.db"
  visibility_timeout = 30s
}
"""

NATS_BROKER = """\
broker "main" {{
  kind     = "nats"
  servers  = "{url}"
  ack_wait = 30s
}}
"""

KAFKA_BROKER = """\
broker "main" {{
  kind               = "kafka"
  bootstrap          = "{bootstrap}"
  session_timeout    = 6s
  heartbeat_interval = 500ms
  offset_reset       = "earliest"
  config             = {{ "producer.batch.num.messages" = "1" }}
}}
"""

# no batch_size nor max_in_flight: the defaults are what is tested
FLOW = """\
flow "share" {
  timezone = "UTC"
}

@BROKER@

topic "@TOPIC@" {
  broker     = broker.main
  partitions = @PARTITIONS@
}

consumer "workers" {
  consumes = topic.@TOPIC@
  group    = "@TOPIC@-workers"
  run      = "share_handlers:handle"
  params = {
    out = "@OUT@", mode = "@MODE@", lot = @LOT@, round = @ROUND@, total = @TOTAL@,
    patience = @PATIENCE@
  }
  scale {
    backend          = "local"
    max              = @INSTANCES@
    lag_per_instance = @LAG@
    drain_timeout    = 10s
  }
}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def counts(out: Path, suffix: str) -> dict[str, Counter[int]]:
    """Per instance, how often it handled (or started) each message."""
    found: dict[str, Counter[int]] = {}
    for path in out.glob(f"*{suffix}"):
        found[path.name.removesuffix(suffix)] = Counter(
            int(line) for line in path.read_text().splitlines() if line
        )
    return found


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture(params=["embedded", "nats", "kafka"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path, FlowIR]]:
    kind = str(request.param)
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "share_handlers.py").write_text(HANDLERS)
    if kind == "kafka":
        broker = KAFKA_BROKER.format(bootstrap=request.getfixturevalue("kafka_bootstrap"))
    elif kind == "nats":
        broker = NATS_BROKER.format(url=request.getfixturevalue("nats_url"))
    else:
        broker = EMBEDDED_BROKER
    topic = f"share_{kind}_{time.monotonic_ns()}"
    lot = DEFAULT_MAX_IN_FLIGHT
    flow_path = tmp_path / "share.flow"
    replacements = {
        "@BROKER@": broker,
        "@TOPIC@": topic,
        "@OUT@": str(out),
        "@MODE@": "rounds" if kind == "nats" else "partitions",
        "@LOT@": str(lot),
        "@ROUND@": str(INSTANCES * lot),
        "@TOTAL@": str(MESSAGES),
        "@PATIENCE@": f"{PATIENCE:g}",
        "@PARTITIONS@": str(INSTANCES),
        "@INSTANCES@": str(INSTANCES),
        "@LAG@": str(LAG_PER_INSTANCE),
    }
    text = FLOW
    for marker, value in replacements.items():
        text = text.replace(marker, value)
    flow_path.write_text(text)
    result = compile_flow(flow_path)
    assert result.ir is not None, result.diagnostics
    assert result.ir.consumers["workers"].max_in_flight == lot
    yield kind, flow_path, result.ir


def produce_evenly(bootstrap: str, topic: str) -> None:
    """Message i to partition i % INSTANCES, with the plain confluent-kafka client."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "batch.num.messages": 1})
    for i in range(MESSAGES):
        producer.produce(topic, encode_payload({"id": i}), partition=i % INSTANCES)
    assert producer.flush(30) == 0, "every message delivered"


def sharing(kind: str, rows: list[InstanceRow]) -> bool:
    """Whether every instance holds its lot (NATS) or owns one partition of its own."""
    alive = [r for r in rows if r.stopped_at is None]
    if len(alive) != INSTANCES:
        return False
    if kind == "nats":
        return all(r.stats.in_flight > 0 for r in alive)
    owned = [set(r.stats.partitions) for r in alive]
    return all(len(o) == 1 for o in owned) and set().union(*owned) == set(range(INSTANCES))


async def wait_for_sharing(kind: str, flow: FlowIR) -> list[InstanceRow]:
    """Wait (at most PATIENCE) until the instances' heartbeats show the work shared;
    checks the dashboard's balance verdict at that moment against the heartbeats
    (balanced when every instance works, else it counts the idle ones) and returns
    the heartbeats."""
    consumer = flow.consumers["workers"]
    deadline = time.monotonic() + PATIENCE
    with Store.open(None) as store:
        rows = store.instances(consumer="workers")
        while not sharing(kind, rows) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            rows = store.instances(consumer="workers")
    async with open_topic_broker(flow, consumer.consumes) as broker:
        reading = await broker.backlog(consumer.consumes, consumer.group)
    alive = [r for r in rows if r.stopped_at is None]
    verdict = assess_balance(reading.per_partition, alive, LAG_PER_INSTANCE)
    print(f"\n{kind}: dashboard verdict: {verdict.summary}")
    idle = [r for r in alive if r.stats.in_flight == 0 and r.stats.rate == 0]
    if idle and reading.total:
        assert verdict.balanced is False, verdict.summary
        assert f"{len(idle)} of {len(alive)} live instances handle nothing" in verdict.summary
    else:
        assert verdict.balanced is True, verdict.summary
    return rows


async def test_scaling_out_shares_the_backlog(
    project: tuple[str, Path, FlowIR],
    monkeypatch: pytest.MonkeyPatch,
    record_property: Callable[[str, object], None],
) -> None:
    kind, flow_path, flow = project
    consumer = flow.consumers["workers"]
    lot = consumer.max_in_flight
    assert MESSAGES % (INSTANCES * lot) == 0, "whole rounds"
    out = Path(consumer.params["out"])
    monkeypatch.setenv("TIDEFLOW_STATE", f"sqlite:///{flow_path.parent / 'state.db'}")
    Store.open(None).close()

    async with open_topic_broker(flow, consumer.consumes) as broker:
        await broker.ensure_topic(consumer.consumes, [consumer.group])
        if kind == "kafka":
            # LAG_PER_INSTANCE in each partition: librdkafka's partitioner sends
            # messages without a key to one partition at a time
            await asyncio.to_thread(
                produce_evenly, flow.brokers["main"].options["bootstrap"], consumer.consumes
            )
        else:  # embedded: without keys, round-robin over the partitions
            await broker.publish(
                consumer.consumes,
                [OutgoingMessage(encode_payload({"id": i})) for i in range(MESSAGES)],
            )
        # the server counts a durable's pending messages a moment after it acknowledged
        # the publish (NATS does so asynchronously): wait for the count, not for time
        reading = await broker.backlog(consumer.consumes, consumer.group)
        deadline = time.monotonic() + 60
        while reading.total != MESSAGES and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            reading = await broker.backlog(consumer.consumes, consumer.group)
        assert reading.total == MESSAGES
        if kind != "nats":
            assert set(reading.per_partition.values()) == {LAG_PER_INSTANCE}

    assert consumer.scale is not None
    async with LocalScaler(
        consumer.scale.options, consumer, context=BackendContext("workers", flow_path)
    ) as scaler:
        await scaler.scale(INSTANCES)
        # every instance holds its lot (NATS), or owns its partition: the dashboard's
        # verdict then, and the handlers may go on
        shared = await wait_for_sharing(kind, flow)
        (out / "go").touch()
        await until(
            lambda: set().union(*counts(out, ".ids").values()) >= set(range(MESSAGES)),
            3 * PATIENCE,
            "every message handled",
        )
        await scaler.scale(0)

    handled = counts(out, ".ids")
    spread = sorted((sum(c.values()) for c in handled.values()), reverse=True)
    spread += [0] * (INSTANCES - len(spread))
    record_property(f"spread_{kind}", spread)
    print(f"\n{kind}: {MESSAGES} messages, {INSTANCES} instances, lot {lot}: spread {spread}")
    assert len(spread) == INSTANCES
    assert sharing(kind, shared), "the work was shared (see the heartbeats)"
    if kind != "nats":
        # per partition, give or take what the first instance held before the others joined
        assert sum(spread) >= MESSAGES
        assert all(LAG_PER_INSTANCE - lot <= n <= LAG_PER_INSTANCE + lot for n in spread), spread
    else:
        assert spread == [LAG_PER_INSTANCE] * INSTANCES, spread
