"""The `embedded` broker across real processes sharing one file: a publisher and a
consumer killed with SIGKILL lose nothing, and eight consumer processes drain one
group without two of them ever holding the same message."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.api import Message, OutgoingMessage
from tideflow.plugins.embedded import EmbeddedBroker

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

BATCH = 50

PUBLISHER = """
import asyncio, sys
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.api import OutgoingMessage
from tideflow.plugins.embedded import EmbeddedBroker

async def main():
    path, partitions = sys.argv[1], int(sys.argv[2])
    broker = EmbeddedBroker({"path": path}, [TopicNode("orders", "main", partitions)])
    batch = 0
    while True:
        await broker.publish(
            "orders",
            [OutgoingMessage(f"{batch}:{i}".encode(), key=str(i).encode()) for i in range(BATCH)],
        )
        print(batch, flush=True)  # only once the publish returned
        batch += 1

asyncio.run(main())
""".replace("BATCH", str(BATCH))

STUCK_CONSUMER = """
import asyncio, json, sys, time
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.embedded import EmbeddedBroker

async def main():
    path, lease = sys.argv[1], float(sys.argv[2])
    broker = EmbeddedBroker(
        {"path": path, "visibility_timeout": lease}, [TopicNode("orders", "main", 2)]
    )
    before = time.time()
    got = await broker.consume("orders", "g", max_messages=5, wait=30)
    print(json.dumps({"before": before, "ids": [[m.partition, m.id] for m in got]}), flush=True)
    time.sleep(3600)  # mid-batch: claimed, never acknowledged

asyncio.run(main())
"""

WORKER = """
import asyncio, json, os, sys, time
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.embedded import EmbeddedBroker

async def main():
    path, partitions, out, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    node = TopicNode("orders", "main", partitions)
    records = []
    async with EmbeddedBroker({"path": path}, [node]) as broker:
        await broker.keep_membership("orders", "work")
        print("joined", flush=True)
        while True:
            batch = await broker.consume("orders", "work", max_messages=100, wait=0.5)
            claimed = time.time()
            if batch:
                await broker.ack(batch)
                acked = time.time()
                records += [[m.value.decode(), m.delivery_count, claimed, acked] for m in batch]
            elif os.path.exists(stop):
                break
    with open(out, "w") as f:
        json.dump({"pid": os.getpid(), "records": records}, f)

asyncio.run(main())
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes a test starts; killed at the end whatever happened."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def spawn(
    children: list[subprocess.Popen[str]], script: Path, *args: object
) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, str(script), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    children.append(child)
    return child


def read_line(child: subprocess.Popen[str]) -> str:
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        assert child.stderr is not None
        pytest.fail(f"child exited ({child.wait()}): {child.stderr.read()}")
    return line


async def drain(broker: EmbeddedBroker, group: str, *, wait: float = 0.2) -> list[Message]:
    received: list[Message] = []
    while batch := await broker.consume("orders", group, max_messages=1000, wait=wait):
        await broker.ack(batch)
        received += batch
    return received


@pytest.mark.parametrize("reported_before_kill", [1, 17, 60])
async def test_a_killed_publisher_loses_no_batch_it_reported(
    tmp_path: Path, children: list[subprocess.Popen[str]], reported_before_kill: int
) -> None:
    path = tmp_path / "broker.db"
    node = TopicNode("orders", "main", 3)
    async with EmbeddedBroker({"path": str(path)}, [node]) as setup:
        await setup.ensure_topic("orders", ["audit"])
    script = tmp_path / "publisher.py"
    script.write_text(PUBLISHER)
    child = spawn(children, script, path, 3)
    reported = [int(read_line(child)) for _ in range(reported_before_kill)]
    os.kill(child.pid, signal.SIGKILL)  # while it publishes the next batches
    assert child.wait(timeout=10) == -signal.SIGKILL
    assert child.stdout is not None
    reported += [int(line) for line in child.stdout.read().split()]

    async with EmbeddedBroker({"path": str(path)}, [node]) as reader:
        received = await drain(reader, "audit")
    per_batch = Counter(int(m.value.split(b":")[0]) for m in received)
    assert set(reported) <= set(per_batch)
    # a batch is all there or not at all; at most the one in flight was not reported
    assert set(per_batch.values()) == {BATCH}
    assert len(per_batch) - len(reported) in (0, 1)


async def test_a_consumer_killed_mid_batch_loses_nothing(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    path, lease = tmp_path / "broker.db", 1.0
    node = TopicNode("orders", "main", 2)
    config = {"path": str(path), "visibility_timeout": lease}
    async with EmbeddedBroker(config, [node]) as publisher:
        await publisher.ensure_topic("orders", ["g"])
        await publisher.publish("orders", [OutgoingMessage(f"{i}".encode()) for i in range(12)])
    script = tmp_path / "stuck.py"
    script.write_text(STUCK_CONSUMER)
    child = spawn(children, script, path, lease)
    claim = json.loads(read_line(child))
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    claimed = {(p, i) for p, i in claim["ids"]}
    assert len(claimed) == 5

    async with EmbeddedBroker(config, [node]) as survivor:
        received: dict[tuple[int, str], Message] = {}
        first_redelivery: float | None = None
        deadline = time.monotonic() + 20 * lease
        while len(received) < 12 and time.monotonic() < deadline:
            batch = await survivor.consume("orders", "g", max_messages=100, wait=lease)
            now = time.time()
            if first_redelivery is None and any((m.partition, m.id) in claimed for m in batch):
                first_redelivery = now
            await survivor.ack(batch)
            received.update({(m.partition, m.id): m for m in batch})
        assert (await survivor.backlog("orders", "g")).total == 0
    assert sorted(int(m.value) for m in received.values()) == list(range(12))
    assert {key: received[key].delivery_count for key in claimed} == dict.fromkeys(claimed, 2)
    assert first_redelivery is not None
    assert first_redelivery >= claim["before"] + lease  # not while the dead one's lease held


@pytest.mark.slow
async def test_eight_consumer_processes_drain_one_group(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    count, partitions, consumers = 100_000, 8, 8
    path, stop = tmp_path / "broker.db", tmp_path / "stop"
    node = TopicNode("orders", "main", partitions)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    async with EmbeddedBroker({"path": str(path)}, [node]) as broker:
        await broker.ensure_topic("orders", ["work"])
        outputs = [tmp_path / f"worker-{n}.json" for n in range(consumers)]
        for output in outputs:
            spawn(children, script, path, partitions, output, stop)
        # Every process is a member before the first message: a process that starts
        # late (the OS decides when) would find the backlog drained by the others.
        # From then on each owns one partition, and only its owner drains it.
        for child in children:
            assert read_line(child) == "joined\n"
        started = time.monotonic()
        for start in range(0, count, 1000):
            await broker.publish(
                "orders", [OutgoingMessage(str(i).encode()) for i in range(start, start + 1000)]
            )
        published = time.monotonic()
        deadline = started + 120
        while (await broker.backlog("orders", "work")).total and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        drained = time.monotonic()
        assert (await broker.backlog("orders", "work")).total == 0
    stop.touch()
    for child in children:
        assert child.wait(timeout=30) == 0, child.stderr.read() if child.stderr else ""

    results = [json.loads(output.read_text()) for output in outputs]
    deliveries = Counter(value for r in results for value, *_ in r["records"])
    assert set(deliveries) == {str(i) for i in range(count)}
    duplicates = sum(deliveries.values()) - count
    # a message held by two processes at once would show as overlapping holds
    holds: dict[str, list[tuple[float, float, int]]] = {}
    for result in results:
        for value, _, claimed, acked in result["records"]:
            holds.setdefault(value, []).append((claimed, acked, result["pid"]))
    overlapping = [
        value
        for value, spans in holds.items()
        if len(spans) > 1
        and any(
            a[2] != b[2] and a[0] < b[1] and b[0] < a[1]
            for i, a in enumerate(spans)
            for b in spans[i + 1 :]
        )
    ]
    busy = sum(1 for r in results if r["records"])
    print(
        f"\n{count} messages, {consumers} processes ({busy} got work), {partitions} partitions: "
        f"published in {published - started:.1f} s, drained in {drained - started:.1f} s "
        f"({count / (drained - started):,.0f} msg/s end to end), duplicates {duplicates}"
    )
    assert overlapping == []
    assert duplicates == 0  # no consumer died and no lease ran out
    assert busy == consumers
