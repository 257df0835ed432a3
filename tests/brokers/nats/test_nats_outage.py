"""The server stops and starts again (same port, same store, file storage) while a
publisher and two consumers of one group run: the same broker objects carry on by
themselves, and no message whose `publish` returned is lost."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import anyio
import pytest
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.api import BackendError, OutgoingMessage
from tideflow.plugins.nats_broker import NatsBroker

from tideflow.testing import receive, unique_name
from tideflow.testing.nats import NatsServer

pytestmark = pytest.mark.anyio

TopicMaker = Callable[..., TopicNode]

BATCHES = 40
BATCH = 50
RESTART_AFTER = 12  # batches published before the server goes away
DEADLINE = 45.0
WAIT = 10.0


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
async def test_publishers_and_consumers_ride_out_a_restart(
    isolated_nats_server: NatsServer, new_topic: TopicMaker, kill: bool
) -> None:
    server = isolated_nats_server
    topic, group = new_topic(), unique_name("tf-group")
    options = {
        "servers": [server.url],
        "storage": "file",
        "timeout": 3.0,
        "reconnect_wait": 0.1,
        "ack_wait": 3.0,  # an acknowledgement lost in the outage costs 3 s, not 30
    }
    publisher = NatsBroker(options, [topic])
    consumers = [NatsBroker(options, [topic]) for _ in range(2)]
    acknowledged: set[bytes] = set()  # values whose publish() returned
    received: Counter[bytes] = Counter()
    failures: Counter[str] = Counter()
    published_enough, restarted, publishing_done = anyio.Event(), anyio.Event(), anyio.Event()

    async def publish() -> None:
        for number in range(BATCHES):
            batch = [f"b{number:03}-m{i:03}".encode() for i in range(BATCH)]
            while True:
                try:
                    await publisher.publish(topic.name, [OutgoingMessage(v) for v in batch])
                    break
                except BackendError:
                    failures["publish"] += 1  # the caller's retry, as a job would
            acknowledged.update(batch)
            if number + 1 == RESTART_AFTER:
                published_enough.set()
        publishing_done.set()

    async def drained() -> bool:
        if not (publishing_done.is_set() and acknowledged <= set(received)):
            return False
        try:  # duplicates (batches published again, acks lost) drain too
            return (await publisher.backlog(topic.name, group)).total == 0
        except BackendError:
            return False

    async def consume(broker: NatsBroker) -> None:
        while not await drained():
            try:
                batch = await broker.consume(topic.name, group, max_messages=20, wait=0.3)
            except BackendError:
                failures["consume"] += 1
                continue
            received.update(m.value for m in batch)
            try:
                await broker.ack(batch)
            except BackendError:
                failures["ack"] += 1  # delivered again after ack_wait

    async def restart() -> None:
        await published_enough.wait()
        await anyio.to_thread.run_sync(lambda: server.stop(kill=kill))
        await anyio.to_thread.run_sync(server.start)
        restarted.set()

    try:
        await publisher.ensure_topic(topic.name, [group])
        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(publish)
                tasks.start_soon(restart)
                for consumer in consumers:
                    tasks.start_soon(consume, consumer)
        assert restarted.is_set()
        missing = acknowledged - set(received)
        assert not missing, f"{len(missing)} acknowledged messages never delivered"
        assert len(acknowledged) == BATCHES * BATCH
        # and the stream still holds them: a new group, starting at the oldest, reads all
        stored = await receive(
            publisher,
            topic.name,
            unique_name("tf-late"),
            len(acknowledged),
            timeout=WAIT,
            max_messages=500,
        )
        assert {m.value for m in stored} >= acknowledged
        duplicates = sum(received.values()) - len(received)
        how = "sigkill" if kill else "sigterm"
        print(f"{how}: failures {dict(failures)}, duplicates {duplicates}")
    finally:
        for broker in (publisher, *consumers):
            await broker.aclose()


async def test_memory_streams_lost_in_a_restart_are_made_again(
    isolated_nats_server: NatsServer, new_topic: TopicMaker
) -> None:
    """A memory-storage stream and its durable vanish with the server: the same
    broker objects make them again, and carry on with what is published next."""
    server = isolated_nats_server
    topic, group = new_topic(), unique_name("tf-group")
    options = {"servers": [server.url], "storage": "memory", "timeout": 3.0}
    publisher = NatsBroker({**options, "reconnect_wait": 0.1}, [topic])
    consumer = NatsBroker({**options, "reconnect_wait": 0.1}, [topic])
    try:
        await publisher.ensure_topic(topic.name, [group])
        await publisher.publish(topic.name, [OutgoingMessage(b"before")])
        assert [m.value for m in await receive(consumer, topic.name, group, 1, timeout=WAIT)] == [
            b"before"
        ]
        await anyio.to_thread.run_sync(server.restart)
        with anyio.fail_after(WAIT):
            while True:
                try:
                    await publisher.publish(topic.name, [OutgoingMessage(b"after")])
                    break
                except BackendError:
                    pass  # still reconnecting
        got: list[bytes] = []
        with anyio.fail_after(WAIT):
            while not got:
                try:
                    batch = await consumer.consume(topic.name, group, wait=0.5)
                except BackendError:
                    continue
                await consumer.ack(batch)
                got.extend(m.value for m in batch)
        assert got == [b"after"]
    finally:
        await publisher.aclose()
        await consumer.aclose()
