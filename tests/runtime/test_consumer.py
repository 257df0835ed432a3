"""A consumer instance in this process, on the embedded broker in a temporary folder
and a SQLite state store: handling and acknowledging, failures, redelivery and
dead-lettering, async handlers, `max_in_flight`, publishing from a handler,
draining, heartbeats. The handlers are Python functions of this module."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tideflow.compiler import compile_flow
from tideflow.compiler.ir import FlowIR
from tideflow.plugins.api import Broker, Message, OutgoingMessage
from tideflow.runtime import redaction
from tideflow.runtime.backends import open_topic_broker
from tideflow.runtime.consumer.handler import (
    ConsumerContext,
    HandlerError,
    HandlerMessage,
    decode_value,
    load_handler,
)
from tideflow.runtime.consumer.instance import ConsumerInstance, Outcome, nack_delay
from tideflow.runtime.context import PublishError, encode_payload
from tideflow.runtime.model import InstanceStatus
from tideflow.runtime.secrets import Redactor
from tideflow.runtime.store import Store

pytestmark = pytest.mark.anyio

FLOW = """\
flow "shop" {{
}}

broker "main" {{
  kind               = "embedded"
  path               = "broker.db"
  visibility_timeout = {lease}
}}

topic "orders" {{
  broker     = broker.main
  partitions = 3
}}

topic "dead" {{
  broker = broker.main
}}

topic "receipts" {{
  broker = broker.main
}}

consumer "workers" {{
  consumes      = topic.orders
  run           = "handlers:handle"
  batch_size    = {batch_size}
  max_in_flight = {max_in_flight}
  max_failures  = {max_failures}
  params        = {{ greeting = "hello" }}
{extra}
}}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def compile_text(
    folder: Path,
    *,
    lease: str = "30s",
    batch_size: int = 10,
    max_in_flight: int = 10,
    max_failures: int = 3,
    dead_letter: bool = True,
    extra: str = "",
) -> FlowIR:
    lines = [extra] if extra else []
    if dead_letter:
        lines.append("  dead_letter   = topic.dead")
    text = FLOW.format(
        lease=lease,
        batch_size=batch_size,
        max_in_flight=max_in_flight,
        max_failures=max_failures,
        extra="\n".join(lines),
    )
    path = folder / "shop.flow"
    path.write_text(text)
    result = compile_flow(path)
    assert result.ir is not None, result.diagnostics
    return result.ir


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as opened:
        yield opened


async def publish(flow: FlowIR, topic: str, values: list[Any], *, keyed: bool = True) -> None:
    async with open_topic_broker(flow, topic) as broker:
        await broker.ensure_topic(topic, ["workers"])
        await broker.publish(
            topic,
            [
                OutgoingMessage(encode_payload(v), encode_payload(f"k{i}") if keyed else None)
                for i, v in enumerate(values)
            ],
        )


async def drain_topic(flow: FlowIR, topic: str, count: int, timeout: float = 10.0) -> list[Message]:
    """What a fresh group of `topic` receives (the group starts at the oldest message)."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    async with open_topic_broker(flow, topic) as broker:
        while len(got) < count and time.monotonic() < deadline:
            batch = await broker.consume(topic, "inspector", max_messages=100, wait=0.2)
            await broker.ack(batch)
            got += batch
    return got


async def backlog(flow: FlowIR) -> int:
    async with open_topic_broker(flow, "orders") as broker:
        return (await broker.backlog("orders", "workers")).total


async def until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.01)


class Running:
    """A consumer instance running in a task of the test's loop."""

    def __init__(self, instance: ConsumerInstance) -> None:
        self.instance = instance
        self.task = asyncio.create_task(instance.run())

    async def stop(self, timeout: float = 15.0) -> Outcome:
        self.instance.request_stop("the test is done")
        return await asyncio.wait_for(self.task, timeout)


@pytest.fixture
async def running() -> AsyncIterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(
        flow: FlowIR,
        handler: Callable[..., Any],
        *,
        store: Store | None = None,
        instance_id: str = "w-1",
        **options: Any,
    ) -> Running:
        consumer = flow.consumers["workers"]
        broker = open_topic_broker(flow, consumer.consumes)
        instance = ConsumerInstance(
            flow, consumer, handler, broker, instance_id=instance_id, store=store, **options
        )
        started.append(Running(instance))
        return started[-1]

    yield start
    for run in started:
        if not run.task.done():
            await run.stop()


# --- handling and acknowledging ----------------------------------------------------------


async def test_every_message_is_handled_once_and_acknowledged(
    tmp_path: Path, running: Callable[..., Running], store: Store
) -> None:
    flow = compile_text(tmp_path)
    seen: list[tuple[Any, str | None, str]] = []
    contexts: list[ConsumerContext] = []

    def handle(ctx: ConsumerContext, message: HandlerMessage) -> None:
        seen.append((message.value, message.key, message.topic))
        contexts.append(ctx)

    values = [{"id": i, "item": f"sku-{i}"} for i in range(45)]
    await publish(flow, "orders", values)
    run = running(flow, handle, store=store)
    await until(lambda: run.instance.stats().handled == 45, what="45 handled")
    assert await run.stop() is Outcome.DRAINED

    assert sorted(v["id"] for v, _, _ in seen) == list(range(45))
    assert {key for _, key, _ in seen} == {f"k{i}" for i in range(45)}
    assert {topic for _, _, topic in seen} == {"orders"}
    ctx = contexts[0]
    assert (ctx.consumer, ctx.flow, ctx.instance_id, ctx.run_id) == (
        "workers",
        "shop",
        "w-1",
        "w-1",
    )
    assert ctx.params == {"greeting": "hello"}
    assert ctx.scheduled_at is None
    assert ctx.logger.name == "tideflow.consumer.workers"
    assert await backlog(flow) == 0, "every handled message was acknowledged"
    (row,) = store.instances(flow="shop", consumer="workers")
    assert (row.stats.handled, row.stats.failed, row.stats.dead_lettered) == (45, 0, 0)
    assert row.stats.status is InstanceStatus.STOPPED
    assert row.stopped_at is not None
    assert row.pid == os.getpid()


async def test_heartbeats_report_progress_while_running(
    tmp_path: Path, running: Callable[..., Running], store: Store
) -> None:
    flow = compile_text(tmp_path)
    release = threading.Event()

    def handle(ctx: ConsumerContext, message: HandlerMessage) -> None:
        if message.value["id"] >= 20:
            release.wait(10)

    await publish(flow, "orders", [{"id": i} for i in range(23)])
    run = running(flow, handle, store=store)

    def reported() -> bool:
        rows = store.instances(consumer="workers", alive_within=10)
        return bool(rows) and rows[0].stats.handled == 20 and rows[0].stats.in_flight == 3

    try:
        await until(reported, what="a heartbeat with 20 handled and 3 in flight")
        (row,) = store.instances(consumer="workers", alive_within=10)
        assert row.stats.status is InstanceStatus.RUNNING
        assert row.stats.rate > 0
        assert row.id == "w-1"
    finally:
        release.set()
    assert await run.stop() is Outcome.DRAINED
    assert store.instances(consumer="workers")[0].stats.handled == 23


async def test_values_are_decoded_as_published() -> None:
    assert decode_value(encode_payload({"a": [1, 2]})) == {"a": [1, 2]}
    assert decode_value(encode_payload(42)) == 42
    assert decode_value(encode_payload("plain text")) == "plain text"
    assert decode_value(b"\xff\xfe raw") == b"\xff\xfe raw"


# --- failures, redelivery, dead letters -------------------------------------------------


async def test_a_failing_message_is_redelivered_then_dead_lettered_with_the_error(
    tmp_path: Path, running: Callable[..., Running], store: Store
) -> None:
    flow = compile_text(tmp_path, max_failures=3)
    deliveries: Counter[int] = Counter()
    counts: list[int] = []

    def handle(ctx: ConsumerContext, message: HandlerMessage) -> None:
        deliveries[message.value["id"]] += 1
        if message.value.get("poison"):
            counts.append(message.delivery_count)
            raise ValueError(f"cannot ship order {message.value['id']} with token s3cr3t")

    values = [{"id": i, "poison": i == 4} for i in range(10)]
    await publish(flow, "orders", values)
    run = running(flow, handle, store=store, redact=Redactor({"s3cr3t"}))
    await until(lambda: run.instance.stats().dead_lettered == 1, what="the dead letter")
    stats = run.instance.stats()
    assert await run.stop() is Outcome.DRAINED

    assert counts == [1, 2, 3]
    assert deliveries[4] == 3
    assert all(deliveries[i] == 1 for i in range(10) if i != 4)
    assert (stats.handled, stats.failed, stats.dead_lettered) == (9, 3, 1)
    assert stats.last_error == "ValueError: cannot ship order 4 with token [secret]"
    assert await backlog(flow) == 0, "the dead-lettered message was acknowledged"

    (dead,) = await drain_topic(flow, "dead", 1)
    assert json.loads(dead.value) == {"id": 4, "poison": True}
    assert dead.key == b"k4"
    headers = dict(dead.headers)
    assert headers["tideflow-error-type"] == "ValueError"
    assert headers["tideflow-error-message"] == "cannot ship order 4 with token [secret]"
    assert headers["tideflow-failures"] == "3"
    assert headers["tideflow-original-topic"] == "orders"
    assert headers["tideflow-consumer"] == "workers"
    assert headers["tideflow-flow"] == "shop"
    assert headers["tideflow-error-function"].endswith("handle")
    assert "test_consumer.py:" in headers["tideflow-error-location"]
    partition, offset = int(headers["tideflow-original-partition"]), headers["tideflow-original-id"]
    assert 0 <= partition < 3
    assert offset.isdigit()
    row = store.instances(consumer="workers")[0]
    assert (row.stats.failed, row.stats.dead_lettered) == (3, 1)


async def test_without_a_dead_letter_topic_a_poison_message_is_dropped_loudly(
    tmp_path: Path, running: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    flow = compile_text(tmp_path, max_failures=2, dead_letter=False)
    handled: list[int] = []

    def handle(ctx: ConsumerContext, message: HandlerMessage) -> None:
        if message.value["id"] == 0:
            raise RuntimeError("never works")
        handled.append(message.value["id"])

    # one key: one partition, so a blocked partition would hold back the others
    async with open_topic_broker(flow, "orders") as broker:
        await broker.ensure_topic("orders", ["workers"])
        await broker.publish(
            "orders", [OutgoingMessage(encode_payload({"id": i}), b"same") for i in range(5)]
        )
    with caplog.at_level(logging.ERROR, logger="tideflow.consumer"):
        run = running(flow, handle)
        await until(lambda: run.instance.stats().dead_lettered == 1, what="the drop")
        await until(lambda: len(handled) == 4, what="the rest of the partition")
        assert await run.stop() is Outcome.DRAINED
    assert sorted(handled) == [1, 2, 3, 4]
    assert await backlog(flow) == 0
    (record,) = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert "no dead_letter topic" in record.getMessage()
    assert "RuntimeError: never works" in record.getMessage()


async def test_redelivery_waits_a_growing_backoff() -> None:
    assert nack_delay(1) == pytest.approx(0.25)
    assert nack_delay(2) == pytest.approx(0.5)
    assert nack_delay(3) == pytest.approx(1.0)
    assert nack_delay(50) == pytest.approx(10.0)


# --- concurrency and async handlers -----------------------------------------------------


async def test_async_handlers_are_awaited_concurrently_up_to_max_in_flight(
    tmp_path: Path, running: Callable[..., Running]
) -> None:
    flow = compile_text(tmp_path, batch_size=4, max_in_flight=6)
    active = 0
    most = 0
    done: list[int] = []
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    async def handle(ctx: ConsumerContext, message: HandlerMessage) -> None:
        nonlocal active, most
        threads.add(threading.get_ident())
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.05)
        active -= 1
        done.append(message.value["id"])

    await publish(flow, "orders", [{"id": i} for i in range(40)])
    run = running(flow, handle)
    await until(lambda: run.instance.stats().handled == 40, what="40 handled")
    assert await run.stop() is Outcome.DRAINED
    assert sorted(done) == list(range(40))
    assert threads == {loop_thread}, "async handlers run on the event loop"
    assert 2 <= most <= 6


async def test_sync_handlers_run_in_threads_within_max_in_flight(
    tmp_path: Path, running: Callable[..., Running]
) -> None:
    flow = compile_text(tmp_path, batch_size=10, max_in_flight=3)
    lock = threading.Lock()
    active = 0
    most = 0
    threads: set[int] = set()

    def handle(ctx: ConsumerContext, message: HandlerMessage) -> None:
        nonlocal active, most
        with lock:
            threads.add(threading.get_ident())
            active += 1
            most = max(most, active)
        time.sleep(0.02)
        with lock:
            active -= 1

    await publish(flow, "orders", [{"id": i} for i in range(30)])
    run = running(flow, handle)
    await until(lambda: run.instance.stats().handled == 30, what="30 handled")
    assert await run.stop() is Outcome.DRAINED
    assert most == 3
    assert threading.get_ident() not in threads


# --- publishing from a handler --------------------------------------------------------------


async def test_a_handler_publishes_before_its_message_is_acknowledged(
    tmp_path: Path, running: Callable[..., Running]
) -> None:
    flow = compile_text(tmp_path)

    def handle(ctx: ConsumerContext, message: HandlerMessage) -> None:
        order = message.value
        ctx.publish("receipts", {"order": order["id"], "by": ctx.instance_id}, key=order["id"])
        if order["id"] == 3 and message.delivery_count == 1:
            ctx.publish("receipts", {"order": "never sent"})
            raise ValueError("fails after publishing once")

    await publish(flow, "orders", [{"id": i} for i in range(6)])
    run = running(flow, handle)
    await until(lambda: run.instance.stats().handled == 6, what="6 handled")
    assert await run.stop() is Outcome.DRAINED
    receipts = await drain_topic(flow, "receipts", 6)
    assert sorted(json.loads(m.value)["order"] for m in receipts) == list(range(6)), (
        "what a failed attempt published is dropped with it"
    )
    assert {json.loads(m.value)["by"] for m in receipts} == {"w-1"}
    assert {m.key for m in receipts} == {str(i).encode() for i in range(6)}


async def test_publishing_to_an_unknown_topic_fails_the_message(tmp_path: Path) -> None:
    flow = compile_text(tmp_path)
    ctx = ConsumerContext(
        consumer="workers",
        flow="shop",
        instance_id="w",
        params={},
        logger=logging.getLogger("t"),
        topics=flow.topics,
    )
    with pytest.raises(
        PublishError, match=r"topic `reciepts`, which flow \"shop\" does not define"
    ):
        ctx.publish("reciepts", {"x": 1})
    assert ctx.outbox == []


# --- stopping ------------------------------------------------------------------------------


async def test_stopping_finishes_and_acknowledges_what_is_in_flight(
    tmp_path: Path, running: Callable[..., Running]
) -> None:
    flow = compile_text(tmp_path, batch_size=5, max_in_flight=5)
    started: list[int] = []
    finished: list[int] = []

    def handle(ctx: ConsumerContext, message: HandlerMessage) -> None:
        started.append(message.value["id"])
        time.sleep(0.3)
        finished.append(message.value["id"])

    await publish(flow, "orders", [{"id": i} for i in range(30)])
    run = running(flow, handle)
    await until(lambda: len(started) >= 3, what="handlers started")
    assert await run.stop() is Outcome.DRAINED
    assert sorted(started) == sorted(finished), "everything started was finished"
    assert len(finished) < 30
    assert await backlog(flow) == 30 - len(finished), "and acknowledged; the rest waits"


async def test_a_drain_that_runs_out_of_time_hands_the_messages_back(
    tmp_path: Path, running: Callable[..., Running]
) -> None:
    flow = compile_text(tmp_path, lease="60s")
    release = threading.Event()
    entered = threading.Event()

    def stuck(ctx: ConsumerContext, message: HandlerMessage) -> None:
        entered.set()
        release.wait(60)

    await publish(flow, "orders", [{"id": 1}])
    run = running(flow, stuck, drain_timeout=0.5)
    try:
        await until(entered.is_set, what="the handler to start")
        began = time.monotonic()
        assert await run.stop() is Outcome.DRAIN_TIMED_OUT
        # the 0.5 s drain timeout, not the handler's own end (60 s), however loaded
        assert time.monotonic() - began < 30
    finally:
        release.set()
    # handed back at once: another consumer gets it long before the 60 s lease ends
    again: list[HandlerMessage] = []
    second = running(flow, lambda ctx, m: again.append(m), instance_id="w-2")
    await until(lambda: len(again) == 1, timeout=30, what="the redelivery")
    assert again[0].delivery_count == 2
    assert await second.stop() is Outcome.DRAINED


async def test_the_instance_stops_when_its_lifeline_closes(
    tmp_path: Path, running: Callable[..., Running]
) -> None:
    flow = compile_text(tmp_path)
    read_end, write_end = os.pipe()
    try:
        run = running(flow, lambda ctx, m: None, lifeline_fd=read_end)
        await until(lambda: run.instance.status is InstanceStatus.RUNNING, what="running")
        assert not run.task.done()
        os.close(write_end)
        write_end = -1
        assert await asyncio.wait_for(run.task, 60) is Outcome.DRAINED  # bounds a hang
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


async def test_an_unusable_broker_ends_the_run_as_crashed(
    tmp_path: Path, store: Store, running: Callable[..., Running]
) -> None:
    flow = compile_text(tmp_path)
    closed: Broker = open_topic_broker(flow, "orders")
    await closed.aclose()
    consumer = flow.consumers["workers"]
    instance = ConsumerInstance(
        flow, consumer, lambda ctx, m: None, closed, instance_id="w-x", store=store
    )
    assert await asyncio.wait_for(instance.run(), 10) is Outcome.CRASHED
    (row,) = store.instances(consumer="workers")
    assert row.stats.status is InstanceStatus.CRASHED
    assert row.stats.last_error is not None
    assert "closed" in row.stats.last_error


# --- loading the handler -------------------------------------------------------------------


def test_the_handler_is_imported_from_the_flow_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shop_handlers_ok.py").write_text("def handle(ctx, message):\n    return 1\n")
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    handler: Any = load_handler("shop_handlers_ok:handle", [str(tmp_path)])
    assert handler(None, None) == 1


@pytest.mark.parametrize(
    ("source", "target", "problem"),
    [
        ("handle = 3\n", "shop_h1:handle", "`shop_h1:handle` is not callable"),
        (
            "def handle(message):\n    pass\n",
            "shop_h2:handle",
            "must take two arguments, `(ctx, message)`",
        ),
        ("import not_a_module_anywhere\n", "shop_h3:handle", "ModuleNotFoundError"),
        ("def handle(ctx, message):\n    pass\n", "shop_h4.handle", "expected `module:function`"),
        ("def handle(ctx, message):\n    pass\n", "shop_h5:hadnle", "AttributeError"),
    ],
)
def test_a_handler_that_cannot_be_loaded_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, target: str, problem: str
) -> None:
    module = target.split(":")[0].split(".")[0]
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    with pytest.raises(HandlerError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        load_handler(target, [str(tmp_path)])


def test_dead_letter_headers_replace_the_source_brokers_routing() -> None:
    from tideflow.runtime.consumer.dead_letter import dead_letter_headers

    message = Message(
        topic="orders",
        group="g",
        value=b"{}",
        key=None,
        headers={"Tideflow-Subject": "orders.eu", "trace-id": "abc", "tideflow-failures": "9"},
        partition=0,
        id="7",
        delivery_count=5,
    )
    headers = dead_letter_headers(message, KeyError("sku"), flow="f", consumer="c")
    assert "Tideflow-Subject" not in headers  # it would steer the publish to "orders.eu"
    assert headers["tideflow-original-subject"] == "orders.eu"
    assert headers["trace-id"] == "abc"
    assert headers["tideflow-failures"] == "5" and headers["tideflow-error-type"] == "KeyError"


async def test_dead_letters_and_log_lines_reach_the_store(
    tmp_path: Path,
    running: Callable[..., Running],
    store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tideflow")  # as `tideflow worker` sets it
    flow = compile_text(tmp_path, max_failures=2)

    redaction.remember(["pr0cess-wide"])  # a secret the process read elsewhere

    def handle(ctx: ConsumerContext, message: HandlerMessage) -> None:
        ctx.logger.info("handling order %s [bold] pr0cess-wide", message.value["id"])
        if message.value["id"] == 1:
            raise ValueError("cannot ship with token s3cr3t")

    await publish(flow, "orders", [{"id": i} for i in range(3)])
    run = running(flow, handle, store=store, redact=Redactor({"s3cr3t"}))
    await until(lambda: bool(store.dead_letters(consumer="workers")), what="the stored dead letter")
    assert await run.stop() is Outcome.DRAINED

    (row,) = store.dead_letters(consumer="workers")
    (dead,) = await drain_topic(flow, "dead", 1)
    assert (row.flow, row.instance_id, row.topic, row.dead_letter_topic) == (
        "shop",
        "w-1",
        "orders",
        "dead",
    )
    assert (str(row.partition), row.message_id) == (
        dead.headers["tideflow-original-partition"],
        dead.headers["tideflow-original-id"],
    )
    assert row.failures == 2
    assert row.error == "ValueError: cannot ship with token [secret]"
    assert store.dead_letter_counts(flow="shop") == {("shop", "workers"): 1}

    lines = store.consumer_logs("shop", "workers")
    texts = [line.message for line in lines]
    assert "handling order 0 [bold] [secret]" in texts
    assert {line.instance_id for line in lines} == {"w-1"}
    assert any("dead-lettered" in t and "[secret]" in t for t in texts), texts
    assert not any("s3cr3t" in t for t in texts)
    assert any(line.level == "WARNING" for line in lines)
    assert "stopped: 2 handled" in texts[-1]
