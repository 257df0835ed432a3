"""The `embedded` broker in one process: the contract suite, partitions, groups,
leases, backlog, retention and the file itself. Leases and retention run on a
clock the tests move, so nothing waits for wall-clock time to pass."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import threading
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import tideflow.plugins.embedded.broker as embedded
import tideflow.plugins.embedded.storage as storage
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.api import (
    BackendClosedError,
    BackendConfigError,
    BackendContext,
    BackendError,
    Message,
    OutgoingMessage,
)
from tideflow.plugins.embedded import EmbeddedBroker
from tideflow.plugins.manager import load_plugins

from tideflow.testing import BrokerContract

pytestmark = pytest.mark.anyio

LEASE = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """Wall-clock time for the file (leases, heartbeats, publish times), moved by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


BrokerMaker = Callable[..., EmbeddedBroker]


@pytest.fixture
def make(tmp_path: Path, clock: FakeClock) -> BrokerMaker:
    """Broker objects on one file and one clock: each is one consumer."""

    def make_broker(*topics: TopicNode, lease: float = LEASE) -> EmbeddedBroker:
        config = {"path": str(tmp_path / "broker.db"), "visibility_timeout": lease}
        return EmbeddedBroker(config, topics, clock=clock)

    return make_broker


def topic(name: str = "orders", partitions: int = 1, retention: float | None = None) -> TopicNode:
    return TopicNode(name=name, broker="main", partitions=partitions, retention=retention)


def out(*values: str, key: str | None = None) -> list[OutgoingMessage]:
    return [OutgoingMessage(v.encode(), key=None if key is None else key.encode()) for v in values]


def values(messages: Sequence[Message]) -> list[str]:
    return [m.value.decode() for m in messages]


def stored_messages(path: Path, topic_name: str) -> int:
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM messages WHERE topic = ?", (topic_name,)
        ).fetchone()
    conn.close()
    return int(count)


# --- the contract suite, enabled as a third party enables it --------------------------


class TestEmbeddedBrokerContract(BrokerContract):
    @pytest.fixture
    def tideflow_broker_factory(
        self, tmp_path: Path
    ) -> Callable[[Sequence[TopicNode]], EmbeddedBroker]:
        path = tmp_path / "contract.db"
        return lambda topics: EmbeddedBroker({"path": str(path)}, topics)

    @pytest.fixture
    def tideflow_quiet_period(self) -> float:
        return 0.5  # nothing is redelivered before the default 30 s visibility timeout


# --- registration and configuration -----------------------------------------------------


def test_the_hook_registers_the_class() -> None:
    plugins = load_plugins(
        default_plugins=("tideflow.plugins.embedded",),
        environ={"TIDEFLOW_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert plugins.broker_class("embedded") is EmbeddedBroker
    assert [p.message for p in plugins.problems] == []


def test_relative_path_is_relative_to_the_flow_file(tmp_path: Path) -> None:
    context = BackendContext(block="main", source=tmp_path / "flows" / "orders.flow")
    broker = EmbeddedBroker({}, [topic()], context=context)
    assert broker.path == tmp_path / "flows" / ".tideflow" / "broker.db"
    assert broker.visibility_timeout == 30.0


def test_visibility_timeout_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(BackendConfigError, match="visibility_timeout"):
        EmbeddedBroker({"path": str(tmp_path / "b.db"), "visibility_timeout": 0.0}, [topic()])


async def test_a_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    async with EmbeddedBroker({"path": str(path)}, [topic()]) as broker:
        with pytest.raises(BackendError, match="something else"):
            await broker.ensure_topic("orders")


async def test_a_newer_file_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {storage.FILE_FORMAT + 1}")
    conn.close()
    async with EmbeddedBroker({"path": str(path)}, [topic()]) as broker:
        with pytest.raises(BackendError, match="format"):
            await broker.ensure_topic("orders")


async def test_the_file_is_in_wal_mode(make: BrokerMaker, tmp_path: Path) -> None:
    async with make(topic()) as broker:
        await broker.ensure_topic("orders")
    with sqlite3.connect(tmp_path / "broker.db") as conn:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    conn.close()
    assert mode == "wal"


# --- partitions and ordering ------------------------------------------------------------


async def test_a_key_picks_its_partition_by_crc32(make: BrokerMaker) -> None:
    keys = [f"customer-{i}" for i in range(40)]
    async with make(topic(partitions=5)) as broker:
        await broker.ensure_topic("orders", ["g"])
        for key in keys:
            await broker.publish("orders", out(f"for {key}", key=key))
        got = await broker.consume("orders", "g", max_messages=100, wait=0)
    assert len(got) == len(keys)
    for message in got:
        assert message.key is not None
        assert message.partition == zlib.crc32(message.key) % 5


async def test_messages_without_a_key_go_round_robin(make: BrokerMaker) -> None:
    async with make(topic(partitions=4)) as broker:
        await broker.ensure_topic("orders", ["g"])
        await broker.publish("orders", out(*(f"m{i}" for i in range(10))))
        await broker.publish("orders", out(*(f"n{i}" for i in range(10))))
        reading = await broker.backlog("orders", "g")
    assert dict(reading.per_partition) == {0: 5, 1: 5, 2: 5, 3: 5}


async def test_each_partition_is_delivered_in_publish_order(make: BrokerMaker) -> None:
    keys = [f"k{i}" for i in range(8)]
    published: dict[str, list[str]] = defaultdict(list)
    async with make(topic(partitions=3)) as broker:
        await broker.ensure_topic("orders", ["g"])
        for batch in range(10):
            messages = []
            for i, key in enumerate(keys):
                value = f"{key}-{batch}-{i}"
                published[key].append(value)
                messages.append(OutgoingMessage(value.encode(), key=key.encode()))
            await broker.publish("orders", messages)
        received: list[Message] = []
        while batch_of := await broker.consume("orders", "g", max_messages=7, wait=0):
            received += batch_of
            await broker.ack(batch_of)
    by_partition: dict[int, list[int]] = defaultdict(list)
    by_key: dict[str, list[str]] = defaultdict(list)
    for message in received:
        by_partition[message.partition].append(int(message.id))
        assert message.key is not None
        by_key[message.key.decode()].append(message.value.decode())
    assert by_key == published
    for offsets in by_partition.values():
        assert offsets == list(range(len(offsets)))


async def test_a_redelivery_comes_before_newer_messages_of_its_partition(
    make: BrokerMaker,
) -> None:
    async with make(topic()) as broker:
        await broker.ensure_topic("orders", ["g"])
        await broker.publish("orders", out("a", "b", "c"))
        first = await broker.consume("orders", "g", max_messages=2, wait=0)
        await broker.ack(first[1:])
        await broker.nack(first[:1])
        again = await broker.consume("orders", "g", max_messages=10, wait=0)
    assert values(first) == ["a", "b"]
    assert values(again) == ["a", "c"]
    assert [m.delivery_count for m in again] == [2, 1]


# --- leases, acknowledgements, redelivery -----------------------------------------------


async def test_a_silent_consumers_messages_go_to_another_after_the_visibility_timeout(
    make: BrokerMaker, clock: FakeClock
) -> None:
    async with make(topic(), lease=10.0) as first, make(topic(), lease=10.0) as second:
        await first.ensure_topic("orders", ["g"])
        await first.publish("orders", out("x"))
        (taken,) = await first.consume("orders", "g", wait=0)
        clock.advance(9.9)
        assert await second.consume("orders", "g", wait=0) == []
        clock.advance(0.2)
        # the first consumer is gone as a member too: the second takes its partition
        (again,) = await second.consume("orders", "g", wait=0)
    assert (again.partition, again.id, again.value) == (taken.partition, taken.id, b"x")
    assert (taken.delivery_count, again.delivery_count) == (1, 2)


async def test_a_live_consumer_gets_its_own_expired_messages_again(
    make: BrokerMaker, clock: FakeClock
) -> None:
    async with make(topic(), lease=10.0) as first, make(topic(), lease=10.0) as second:
        await first.ensure_topic("orders", ["g"])
        await first.publish("orders", out("x"))
        (taken,) = await first.consume("orders", "g", wait=0)
        clock.advance(9.9)
        assert await first.consume("orders", "g", wait=0) == []
        clock.advance(0.2)
        assert await second.consume("orders", "g", wait=0) == []
        (again,) = await first.consume("orders", "g", wait=0)
    assert (again.id, again.delivery_count) == (taken.id, 2)


async def test_a_consumer_that_keeps_consuming_keeps_its_partition(
    make: BrokerMaker, clock: FakeClock
) -> None:
    async with make(topic(), lease=10.0) as first, make(topic(), lease=10.0) as second:
        await first.ensure_topic("orders", ["g"])
        for round_ in range(5):
            await first.publish("orders", out(f"m{round_}"))
            got = await first.consume("orders", "g", wait=0)
            assert values(got) == [f"m{round_}"]
            await first.ack(got)
            assert await second.consume("orders", "g", wait=0) == []
            clock.advance(6.0)  # more than the lease in all, less each time


async def test_nack_with_a_delay_holds_the_message_back(
    make: BrokerMaker, clock: FakeClock
) -> None:
    async with make(topic()) as broker:
        await broker.ensure_topic("orders", ["g"])
        await broker.publish("orders", out("slow", "next"))
        slow, following = await broker.consume("orders", "g", wait=0)
        await broker.nack([slow], delay=5.0)
        await broker.ack([following])
        assert await broker.consume("orders", "g", wait=0) == []
        clock.advance(5.0)
        (again,) = await broker.consume("orders", "g", wait=0)
        assert (again.id, again.delivery_count) == (slow.id, 2)
        assert (await broker.backlog("orders", "g")).total == 1


async def test_a_stale_nack_does_not_take_the_message_from_its_new_holder(
    make: BrokerMaker, clock: FakeClock
) -> None:
    async with make(topic(), lease=10.0) as first, make(topic(), lease=10.0) as second:
        await first.ensure_topic("orders", ["g"])
        await first.publish("orders", out("x"))
        (old,) = await first.consume("orders", "g", wait=0)
        clock.advance(11.0)
        (new,) = await second.consume("orders", "g", wait=0)
        await first.nack([old])
        assert await second.consume("orders", "g", wait=0) == []
        await second.ack([new])
        assert (await second.backlog("orders", "g")).total == 0


async def test_a_late_ack_still_counts(make: BrokerMaker, clock: FakeClock) -> None:
    async with make(topic(), lease=10.0) as first, make(topic(), lease=10.0) as second:
        await first.ensure_topic("orders", ["g"])
        await first.publish("orders", out("x"))
        (old,) = await first.consume("orders", "g", wait=0)
        clock.advance(11.0)
        (new,) = await second.consume("orders", "g", wait=0)
        await first.ack([old])
        assert (await second.backlog("orders", "g")).total == 0
        await second.ack([new])  # the message is gone already: nothing happens
        clock.advance(11.0)
        assert await second.consume("orders", "g", wait=0) == []


async def test_two_consumers_never_hold_the_same_message(make: BrokerMaker) -> None:
    count = 200
    node = topic(partitions=4)
    async with make(node) as first, make(node) as second:
        consumers = {"first": first, "second": second}
        await first.ensure_topic("orders", ["g"])
        await first.publish(
            "orders", [OutgoingMessage(f"{i}".encode(), key=f"{i}".encode()) for i in range(count)]
        )
        held: dict[str, list[Message]] = {"first": [], "second": []}
        for _ in range(6):  # without acknowledging, the two must stay disjoint
            for name, consumer in consumers.items():
                held[name] += await consumer.consume("orders", "g", max_messages=10, wait=0)
                ids = {name: {(m.partition, m.id) for m in held[name]} for name in held}
                assert not ids["first"] & ids["second"]
        assert held["first"]
        assert held["second"], "the second consumer never got a partition"

        seen = Counter((m.partition, m.id) for m in held["first"] + held["second"])
        for name, consumer in consumers.items():
            await consumer.ack(held[name])
        while sum(seen.values()) < count:
            for consumer in consumers.values():
                batch = await consumer.consume("orders", "g", max_messages=10, wait=0.5)
                seen.update((m.partition, m.id) for m in batch)
                await consumer.ack(batch)
    assert len(seen) == count
    assert max(seen.values()) == 1


async def test_a_partition_is_processed_by_one_consumer_at_a_time(
    make: BrokerMaker,
) -> None:
    count, node = 300, topic(partitions=4)
    rng = random.Random(7)
    consumers = {name: make(node) for name in ("a", "b", "c")}
    await consumers["a"].ensure_topic("orders", ["g"])
    await consumers["a"].publish(
        "orders", [OutgoingMessage(f"{i}".encode(), key=f"{i}".encode()) for i in range(count)]
    )
    held: dict[str, list[Message]] = {name: [] for name in consumers}
    processed: dict[int, list[int]] = defaultdict(list)  # partition -> offsets, as acked
    active = ["a", "b"]  # "c" joins later, "a" leaves
    for step in range(400):
        if step == 20:
            active.append("c")
        if step == 60:
            active.remove("a")
            await consumers["a"].aclose()  # gives its messages back
            held["a"] = []
        name = rng.choice(active)
        held[name] += await consumers[name].consume("orders", "g", max_messages=5, wait=0)
        holders: dict[int, set[str]] = defaultdict(set)
        for who, messages in held.items():
            for message in messages:
                holders[message.partition].add(who)
        assert all(len(who) == 1 for who in holders.values()), (step, dict(holders))
        if rng.random() < 0.5 and held[name]:  # finish the oldest few
            done, held[name] = held[name][:3], held[name][3:]
            await consumers[name].ack(done)
            for message in done:
                processed[message.partition].append(int(message.id))
    for name in active:
        await consumers[name].ack(held[name])
        for message in held[name]:
            processed[message.partition].append(int(message.id))
        await consumers[name].aclose()
    assert sum(map(len, processed.values())) > count / 2
    for offsets in processed.values():
        assert offsets == sorted(offsets)


async def test_closing_gives_the_messages_back_at_once(make: BrokerMaker) -> None:
    node = topic(partitions=2)
    async with make(node) as first:
        await first.ensure_topic("orders", ["g"])
        await first.publish("orders", out("a", "b", "c", "d"))
        taken = await first.consume("orders", "g", wait=0)
    async with make(node) as second:
        again = await second.consume("orders", "g", wait=0)
    assert sorted(values(again)) == sorted(values(taken)) == ["a", "b", "c", "d"]
    assert {m.delivery_count for m in again} == {2}


async def test_a_cancelled_consume_gives_back_what_it_claimed(
    make: BrokerMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make(topic()) as broker:
        await broker.ensure_topic("orders", ["g"])
        await broker.publish("orders", out("a", "b"))
        # The claim is held on the broker's thread until the consume is cancelled:
        # a transaction that has started completes, and what it claimed must come back.
        claiming, may_finish = threading.Event(), threading.Event()
        claim = broker._claim

        def held_claim(*args: Any) -> Any:
            claiming.set()
            may_finish.wait(60)
            return claim(*args)

        monkeypatch.setattr(broker, "_claim", held_claim)
        # with the connection taken, the claim cannot run at once on the event loop
        # (as it may when the connection is free) and goes to the broker's thread
        with broker._lock:
            task = asyncio.create_task(broker.consume("orders", "g", wait=0))
            await asyncio.sleep(0)  # the task submits its claim and waits for it
        assert await asyncio.to_thread(claiming.wait, 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        may_finish.set()
        got = await broker.consume("orders", "g", wait=10.0)
    assert values(got) == ["a", "b"]
    assert [m.delivery_count for m in got] == [1, 1]


async def test_a_waiting_consumer_wakes_for_a_publish_from_another_object(
    make: BrokerMaker,
) -> None:
    async with make(topic()) as consumer, make(topic()) as publisher:
        await consumer.ensure_topic("orders", ["g"])
        # the fake clock never brings the lease re-check: only the publish can wake it
        # before its `wait` ends (60 s bounds a hang only; it wakes in milliseconds)
        waiting = asyncio.create_task(consumer.consume("orders", "g", wait=3600.0))
        await asyncio.sleep(0.05)
        await publisher.publish("orders", out("hello"))
        got = await asyncio.wait_for(waiting, 60.0)
    assert values(got) == ["hello"]


async def test_a_waiting_consumer_wakes_for_its_own_objects_publish(make: BrokerMaker) -> None:
    async with make(topic()) as broker:
        await broker.ensure_topic("orders", ["g"])
        # the fake clock never brings the lease re-check: only the publish can wake it
        # before its `wait` ends (60 s bounds a hang only; it wakes in milliseconds)
        waiting = asyncio.create_task(broker.consume("orders", "g", wait=3600.0))
        await asyncio.sleep(0.05)
        await broker.publish("orders", out("hello"))
        got = await asyncio.wait_for(waiting, 60.0)
    assert values(got) == ["hello"]


async def test_a_message_from_another_file_is_refused(make: BrokerMaker, tmp_path: Path) -> None:
    other_path = tmp_path / "other.db"
    async with (
        make(topic()) as broker,
        EmbeddedBroker({"path": str(other_path)}, [topic()]) as other,
    ):
        await other.ensure_topic("orders", ["g"])
        await other.publish("orders", out("x"))
        (message,) = await other.consume("orders", "g", wait=0)
        with pytest.raises(BackendError, match="not received from"):
            await broker.ack([message])


async def test_bad_arguments_are_refused(make: BrokerMaker) -> None:
    async with make(topic()) as broker:
        with pytest.raises(TypeError):
            await broker.publish("orders", [OutgoingMessage("text", key=None)])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_messages"):
            await broker.consume("orders", "g", max_messages=0)
        with pytest.raises(ValueError, match="delay"):
            await broker.nack([], delay=-1.0)


# --- backlog ------------------------------------------------------------------------------


async def test_backlog_is_exact_per_partition(make: BrokerMaker) -> None:
    keys = [f"key-{i}" for i in range(30)]
    expected = Counter(zlib.crc32(k.encode()) % 3 for k in keys)
    async with make(topic(partitions=3)) as broker:
        await broker.ensure_topic("orders", ["g"])
        await broker.publish("orders", [OutgoingMessage(b"x", key=k.encode()) for k in keys])
        reading = await broker.backlog("orders", "g")
        assert reading.partitions == 3
        assert dict(reading.per_partition) == {p: expected[p] for p in range(3)}
        assert reading.total == 30

        taken = await broker.consume("orders", "g", max_messages=12, wait=0)
        assert (await broker.backlog("orders", "g")).total == 30  # in flight still counts
        await broker.ack(taken[:5])
        await broker.nack(taken[5:8])
        reading = await broker.backlog("orders", "g")
        assert reading.total == 25
        acked = Counter(m.partition for m in taken[:5])
        assert dict(reading.per_partition) == {p: expected[p] - acked[p] for p in range(3)}


async def test_a_group_ensured_later_counts_only_later_messages(make: BrokerMaker) -> None:
    async with make(topic(partitions=2)) as broker:
        await broker.ensure_topic("orders", ["early"])
        await broker.publish("orders", out("1", "2", "3"))
        await broker.ensure_topic("orders", ["early", "late"])
        await broker.publish("orders", out("4", "5"))
        assert (await broker.backlog("orders", "early")).total == 5
        assert (await broker.backlog("orders", "late")).total == 2
        got = await broker.consume("orders", "late", wait=0)
    assert sorted(values(got)) == ["4", "5"]


async def test_a_group_first_seen_by_consume_starts_at_the_oldest_message(
    make: BrokerMaker,
) -> None:
    async with make(topic()) as broker:
        await broker.publish("orders", out("1", "2"))
        assert (await broker.backlog("orders", "newcomer")).total == 2
        got = await broker.consume("orders", "newcomer", wait=0)
    assert values(got) == ["1", "2"]


async def test_ensure_topic_is_idempotent(make: BrokerMaker) -> None:
    async with make(topic(partitions=2)) as broker:
        await broker.ensure_topic("orders", ["g"])
        await broker.publish("orders", out("a", "b"))
        await broker.ensure_topic("orders", ["g", "g"])
        await broker.ensure_topics({"orders": ["g"]})
        reading = await broker.backlog("orders", "g")
        assert (reading.total, reading.partitions) == (2, 2)
        got = await broker.consume("orders", "g", wait=0)
    assert sorted(values(got)) == ["a", "b"]


async def test_a_topic_grows_but_never_shrinks(make: BrokerMaker) -> None:
    async with make(topic(partitions=2)) as small:
        await small.ensure_topic("orders", ["g"])
        await small.publish("orders", out("a", "b"))
    async with make(topic(partitions=4)) as bigger:
        await bigger.ensure_topic("orders", ["g"])
        await bigger.publish("orders", out("c", "d", "e", "f"))
        reading = await bigger.backlog("orders", "g")
        assert (reading.partitions, reading.total) == (4, 6)
        got = await bigger.consume("orders", "g", max_messages=10, wait=0)
        assert sorted(values(got)) == ["a", "b", "c", "d", "e", "f"]
    async with make(topic(partitions=3)) as smaller:
        with pytest.raises(BackendError, match="cannot shrink"):
            await smaller.publish("orders", out("g"))


# --- retention and the file's size --------------------------------------------------------


async def test_acknowledged_messages_are_deleted(make: BrokerMaker, tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    async with make(topic(partitions=2)) as broker:
        await broker.ensure_topic("orders", ["fast", "slow"])
        await broker.publish("orders", out(*(f"{i}" for i in range(10))))
        await broker.ack(await broker.consume("orders", "fast", max_messages=10, wait=0))
        await broker.compact()
        assert stored_messages(path, "orders") == 10  # "slow" has not read them
        slow = await broker.consume("orders", "slow", max_messages=10, wait=0)
        await broker.ack(slow[:4])
        await broker.compact()
        # per partition, what precedes the slow group's first unacknowledged message
        assert stored_messages(path, "orders") == 10 - 4
        await broker.ack(slow[4:])
        await broker.compact()
        assert stored_messages(path, "orders") == 0
        assert (await broker.backlog("orders", "slow")).total == 0


async def test_a_topic_without_groups_keeps_its_messages(make: BrokerMaker, tmp_path: Path) -> None:
    async with make(topic()) as broker:
        await broker.publish("orders", out("a", "b"))
        await broker.compact()
    assert stored_messages(tmp_path / "broker.db", "orders") == 2


async def test_retention_drops_old_messages_read_or_not(
    make: BrokerMaker, clock: FakeClock, tmp_path: Path
) -> None:
    async with make(topic(retention=60.0)) as broker:
        await broker.ensure_topic("orders", ["g"])
        await broker.publish("orders", out("old-1", "old-2", "old-3"))
        (in_flight,) = await broker.consume("orders", "g", max_messages=1, wait=0)
        clock.advance(61.0)
        await broker.publish("orders", out("new"))
        await broker.compact()
        assert stored_messages(tmp_path / "broker.db", "orders") == 1
        assert (await broker.backlog("orders", "g")).total == 1
        await broker.ack([in_flight])  # dropped meanwhile: nothing to do
        got = await broker.consume("orders", "g", max_messages=10, wait=0)
    assert values(got) == ["new"]


async def test_clean_up_runs_by_itself_and_the_file_stops_growing(
    make: BrokerMaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "CLEANUP_INTERVAL", 0.0)
    path = tmp_path / "broker.db"
    payload = b"p" * 1000
    sizes = []
    async with make(topic(partitions=2)) as broker:
        await broker.ensure_topic("orders", ["g"])
        for _ in range(30):
            await broker.publish("orders", [OutgoingMessage(payload) for _ in range(200)])
            while got := await broker.consume("orders", "g", max_messages=100, wait=0):
                await broker.ack(got)
            # it runs on the broker's thread, after the call that made it due
            for _ in range(500):
                if stored_messages(path, "orders") == 0:
                    break
                await asyncio.sleep(0.01)
            assert stored_messages(path, "orders") == 0
            sizes.append(path.stat().st_size)
    # 30 rounds of 200 kB: the file stops growing after the first few
    assert max(sizes[10:]) <= max(sizes[:10]) < 30 * 200 * len(payload) / 3


# --- waiting for the lock -------------------------------------------------------------


async def test_a_call_waits_for_the_lock_off_the_event_loop(
    make: BrokerMaker, tmp_path: Path
) -> None:
    """Another process's write transaction holds SQLite's lock: the call cannot
    run on the event loop, so it waits on the broker's thread while the loop
    goes on, and completes once the lock is free."""
    async with make(topic()) as broker:
        await broker.ensure_topic("orders", ["g"])
        other = sqlite3.connect(tmp_path / "broker.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        publishing = asyncio.create_task(broker.publish("orders", out("waited")))
        ticks = 0
        for _ in range(20):  # 0.2 s in which the loop must keep running
            await asyncio.sleep(0.01)
            ticks += 1
        assert not publishing.done()
        other.execute("COMMIT")
        other.close()
        await asyncio.wait_for(publishing, 60.0)  # bounds a hang only
        assert ticks == 20
        assert values(await broker.consume("orders", "g", wait=0)) == ["waited"]


async def test_a_lock_held_past_the_busy_timeout_is_an_error(
    make: BrokerMaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "BUSY_TIMEOUT", 0.2)
    async with make(topic()) as broker:
        await broker.ensure_topic("orders", ["g"])
        other = sqlite3.connect(tmp_path / "broker.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(BackendError, match="database is locked"):
                await broker.publish("orders", out("refused"))
        finally:
            other.execute("ROLLBACK")
            other.close()
        await broker.publish("orders", out("later"))  # the broker is still usable
        assert values(await broker.consume("orders", "g", wait=0)) == ["later"]


# --- closing ------------------------------------------------------------------------------


async def test_aclose_before_any_use_and_twice(make: BrokerMaker) -> None:
    broker = make(topic())
    await broker.aclose()
    await broker.aclose()
    with pytest.raises(BackendClosedError):
        await broker.consume("orders", "g", wait=0)


async def test_aclose_after_a_failed_call(make: BrokerMaker, tmp_path: Path) -> None:
    async with make(topic(partitions=2)) as grown:
        await grown.ensure_topic("orders")
    broker = make(topic(partitions=1))
    with pytest.raises(BackendError):
        await broker.ensure_topic("orders")
    await broker.aclose()
    await broker.aclose()


def test_a_forked_copy_refuses_to_work_and_closes_quietly(tmp_path: Path) -> None:
    broker = EmbeddedBroker({"path": str(tmp_path / "broker.db")}, [topic()])
    asyncio.run(broker.ensure_topic("orders", ["g"]))  # its thread and connection exist

    async def in_child() -> int:
        try:
            # without the check, the parent's (absent) thread would never answer
            await asyncio.wait_for(broker.publish("orders", out("x")), 5.0)
        except BackendError as exc:
            await asyncio.wait_for(broker.aclose(), 5.0)
            return 0 if "forked" in str(exc) else 2
        except TimeoutError:
            return 3
        return 1

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        os._exit(asyncio.run(in_child()))
    _, status = os.waitpid(pid, 0)
    asyncio.run(broker.aclose())
    assert os.waitstatus_to_exitcode(status) == 0
