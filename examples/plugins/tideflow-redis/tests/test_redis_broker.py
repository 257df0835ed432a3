"""What the Redis broker does beyond the contract: XAUTOCLAIM of stuck messages,
the backlog from XINFO GROUPS, the stream layout, delays, closing, errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio
import pytest
import redis
from tideflow.plugins.api import (
    BackendClosedError,
    BackendConfigError,
    BackendError,
    OutgoingMessage,
)
from tideflow_redis import RedisBroker
from tideflow_redis.broker import RELEASED_CONSUMER

from tideflow.testing import TopicNode, receive, unique_name

pytestmark = pytest.mark.anyio

Factory = Callable[[Sequence[TopicNode]], RedisBroker]
TIMEOUT = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def new_topic(**fields: object) -> TopicNode:
    return TopicNode(name=unique_name("orders"), broker="r", **fields)  # type: ignore[arg-type]


async def test_stuck_message_is_claimed_by_another_consumer(
    tideflow_broker_factory: Factory,
) -> None:
    topic, group = new_topic(), unique_name("workers")
    async with (
        tideflow_broker_factory([topic]) as stuck,
        tideflow_broker_factory([topic]) as healthy,
    ):
        await stuck.ensure_topic(topic.name, [group])
        await stuck.publish(topic.name, [OutgoingMessage(b"order-1")])
        (held,) = await receive(stuck, topic.name, group, 1, timeout=TIMEOUT, ack=False)
        # `stuck` stays open and never acknowledges: only the visibility timeout
        # (1 s in these tests) hands the message over
        (claimed,) = await receive(healthy, topic.name, group, 1, timeout=TIMEOUT)
        assert claimed.id == held.id
        assert claimed.value == b"order-1"
        assert claimed.delivery_count == 2
        assert (await healthy.backlog(topic.name, group)).total == 0


async def test_backlog_is_lag_plus_pending_from_xinfo_groups(
    tideflow_broker_factory: Factory, redis_client: redis.Redis, redis_prefix: str
) -> None:
    topic, group = new_topic(), unique_name("workers")
    async with tideflow_broker_factory([topic]) as broker:
        await broker.ensure_topic(topic.name, [group])
        await broker.publish(topic.name, [OutgoingMessage(b"%d" % i) for i in range(7)])
        await receive(broker, topic.name, group, 3, timeout=TIMEOUT, ack=False, max_messages=3)
        reading = await broker.backlog(topic.name, group)
    (info,) = redis_client.xinfo_groups(f"{redis_prefix}{topic.name}")
    assert (info["lag"], info["pending"]) == (4, 3)
    assert reading.total == 7
    assert dict(reading.per_partition) == {0: 7}
    assert reading.partitions == 1


async def test_backlog_counts_entries_when_redis_has_no_lag(
    tideflow_broker_factory: Factory, redis_client: redis.Redis, redis_prefix: str
) -> None:
    topic, group = new_topic(), unique_name("workers")
    key = f"{redis_prefix}{topic.name}"
    async with tideflow_broker_factory([topic]) as broker:
        await broker.ensure_topic(topic.name, [group])
        await broker.publish(topic.name, [OutgoingMessage(b"%d" % i) for i in range(5)])
        await receive(broker, topic.name, group, 1, timeout=TIMEOUT, ack=False, max_messages=1)
        undelivered = redis_client.xrange(key)[3][0]
        redis_client.xdel(key, undelivered)  # a hole after the group's position
        assert redis_client.xinfo_groups(key)[0]["lag"] is None
        assert (await broker.backlog(topic.name, group)).total == 4  # 3 undelivered + 1 pending


async def test_backlog_of_missing_stream_and_group(tideflow_broker_factory: Factory) -> None:
    topic = new_topic()
    async with tideflow_broker_factory([topic]) as broker:
        assert (await broker.backlog(topic.name, "nobody")).total == 0
        await broker.publish(topic.name, [OutgoingMessage(b"a"), OutgoingMessage(b"b")])
        # a group not created yet will start at the beginning of the stream
        assert (await broker.backlog(topic.name, "later")).total == 2
        got = await receive(broker, topic.name, "later", 2, timeout=TIMEOUT)
        assert [m.value for m in got] == [b"a", b"b"]


async def test_stream_layout(
    tideflow_broker_factory: Factory, redis_client: redis.Redis, redis_prefix: str
) -> None:
    topic = new_topic()
    async with tideflow_broker_factory([topic]) as broker:
        await broker.publish(
            topic.name, [OutgoingMessage(b"body", key=b"id-7", headers={"source": "shop"})]
        )
    ((_, fields),) = redis_client.xrange(f"{redis_prefix}{topic.name}")
    assert fields == {b"v": b"body", b"k": b"id-7", b"h:source": b"shop"}


async def test_nack_delay_holds_the_message_back(tideflow_broker_factory: Factory) -> None:
    topic, group = new_topic(), unique_name("workers")
    async with tideflow_broker_factory([topic]) as broker:
        await broker.ensure_topic(topic.name, [group])
        await broker.publish(topic.name, [OutgoingMessage(b"later")])
        first = await receive(broker, topic.name, group, 1, timeout=TIMEOUT, ack=False)
        await broker.nack(first, delay=0.8)
        assert await broker.consume(topic.name, group, wait=0) == []
        (again,) = await receive(broker, topic.name, group, 1, timeout=TIMEOUT)
        assert again.delivery_count == 2


async def test_close_gives_messages_back_and_leaves_the_group(
    tideflow_broker_factory: Factory, redis_client: redis.Redis, redis_prefix: str
) -> None:
    topic, group = new_topic(), unique_name("workers")
    key = f"{redis_prefix}{topic.name}"
    broker = tideflow_broker_factory([topic])
    await broker.ensure_topic(topic.name, [group])
    await broker.publish(topic.name, [OutgoingMessage(b"x"), OutgoingMessage(b"y")])
    await receive(broker, topic.name, group, 2, timeout=TIMEOUT, ack=False)
    names = {c["name"].decode() for c in redis_client.xinfo_consumers(key, group)}
    assert broker.consumer_name in names
    await broker.aclose()
    consumers = {c["name"].decode(): c["pending"] for c in redis_client.xinfo_consumers(key, group)}
    assert consumers == {RELEASED_CONSUMER: 2}


async def test_errors_name_redis_and_close_still_works() -> None:
    topic = new_topic()
    # port 1 on the loopback interface: nothing listens there
    broker = RedisBroker({"url": "redis://127.0.0.1:1/0", "socket_timeout": 2.0}, [topic])
    with pytest.raises(BackendError, match="redis: cannot publish"):
        await broker.publish(topic.name, [OutgoingMessage(b"x")])
    reading = await broker.read_backlog(topic.name, "g", timeout=5)
    assert reading.error.startswith("BackendError: redis: cannot read the backlog")  # type: ignore[union-attr]
    await broker.aclose()
    await broker.aclose()
    with pytest.raises(BackendClosedError):
        await broker.consume(topic.name, "g")


async def test_retention_trims_old_entries(
    tideflow_broker_factory: Factory, redis_client: redis.Redis, redis_prefix: str
) -> None:
    topic = new_topic(retention=0.05)
    key = f"{redis_prefix}{topic.name}"
    async with tideflow_broker_factory([topic]) as broker:
        await broker.publish(topic.name, [OutgoingMessage(b"old")] * 300)
        # trimming is approximate (whole stream nodes), and only entries older than
        # the retention go: publish until a node of old entries has been dropped
        with anyio.fail_after(TIMEOUT):
            while redis_client.xlen(key) >= 300:
                await broker.publish(topic.name, [OutgoingMessage(b"new")])
                await anyio.sleep(0.02)


def test_options_are_checked_when_constructed() -> None:
    with pytest.raises(BackendConfigError, match="did you mean `key_prefix`"):
        RedisBroker({"url": "redis://127.0.0.1:6379/0", "key_prefx": "x:"})
    with pytest.raises(BackendConfigError, match="missing required option `url`"):
        RedisBroker({})
    broker = RedisBroker({"url": "redis://127.0.0.1:6379/0"})
    assert broker.config["key_prefix"] == "tideflow:"
    assert broker.config["visibility_timeout"] == 30.0
