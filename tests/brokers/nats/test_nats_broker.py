"""The `nats` broker against a real nats-server: streams and durables as the
topics and options ask, exact backlogs, acknowledgements, redelivery limits and
delays, keys, subjects and de-duplication, and bounded failures when the server is
gone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy, StorageType
from nats.js.client import JetStreamContext
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.api import (
    BackendClosedError,
    BackendConfigError,
    BackendError,
    BacklogFailure,
    Message,
    OutgoingMessage,
)
from tideflow.plugins.manager import load_plugins
from tideflow.plugins.nats_broker import (
    KEY_HEADER,
    SUBJECT_HEADER,
    NatsBroker,
    _sequence_and_deliveries,
    durable_name,
    stream_name,
    subject_captures,
)

from tideflow.testing import receive, unique_name
from tideflow.testing.nats import NatsServer

pytestmark = pytest.mark.anyio

BrokerMaker = Callable[..., NatsBroker]
TopicMaker = Callable[..., TopicNode]

WAIT = 60.0  # longest wait for something that must happen: bounds a hang only


async def backlog_total(broker: NatsBroker, topic: str, group: str) -> int:
    return (await broker.backlog(topic, group)).total


async def assert_backlog(broker: NatsBroker, topic: str, group: str, expected: int) -> None:
    """The backlog reaches `expected`. The server counts a durable's pending messages a
    moment after it acknowledged them (in its own goroutine), so a reading taken at
    once may lag on a loaded machine: read again until it matches (a hang fails)."""
    deadline = asyncio.get_running_loop().time() + 30
    while (total := await backlog_total(broker, topic, group)) != expected:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"backlog {total}, expected {expected}")
        await asyncio.sleep(0.02)


async def server_backlog(js: JetStreamContext, topic: str, group: str) -> int:
    info = await js.consumer_info(stream_name(topic), durable_name(group))
    return int(info.num_pending + info.num_ack_pending)


# --- names and subjects (no server) --------------------------------------------------


def test_stream_names_keep_safe_names_and_tell_sanitized_ones_apart() -> None:
    assert stream_name("orders") == "orders"
    assert stream_name("Order_Lines-2") == "Order_Lines-2"
    dotted, underscored = stream_name("events.clicks"), stream_name("events_clicks")
    assert dotted != underscored
    assert dotted.startswith("events_clicks_")
    for name in ("a b", "x*y", "p>q", "dir/name", "ünï"):
        assert all(c.isascii() and (c.isalnum() or c in "_-") for c in stream_name(name))
    assert durable_name("order.workers") != durable_name("order_workers")


@pytest.mark.parametrize(
    ("pattern", "subject", "captured"),
    [
        ("orders", "orders", True),
        ("orders", "orders.x", False),
        ("events.*", "events.a", True),
        ("events.*", "events.a.b", False),
        ("events.>", "events.a.b", True),
        ("events.>", "events", False),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.d", False),
    ],
)
def test_subject_captures(pattern: str, subject: str, captured: bool) -> None:
    assert subject_captures(pattern, subject) is captured


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.orders.workers.3.1042.977.1700000000000000000.12",
        "$JS.ACK.hub.ACCHASH.orders.workers.3.1042.977.1700000000000000000.12.x7Yz",
        "$JS.ACK.hub.ACCHASH.orders.workers.3.1042.977.1700000000000000000.12",
    ],
    ids=["v1", "v2", "v2-without-token"],
)
def test_sequence_and_delivery_count_read_like_nats_py_does(reply: str) -> None:
    msg = Msg(_client=None, subject="orders", reply=reply)  # type: ignore[arg-type]
    assert _sequence_and_deliveries(msg) == ("1042", 3)
    assert (msg.metadata.sequence.stream, msg.metadata.num_delivered) == (1042, 3)


def test_registered_under_its_name_through_the_hook() -> None:
    plugins = load_plugins(
        default_plugins=("tideflow.plugins.nats_broker",),
        environ={"TIDEFLOW_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert plugins.broker_class("nats") is NatsBroker
    assert [p.message for p in plugins.problems] == []


def test_unknown_option_is_refused() -> None:
    with pytest.raises(BackendConfigError, match="ack_wiat"):
        NatsBroker({"servers": ["nats://127.0.0.1:1"], "ack_wiat": 5.0})


# --- streams and durables -----------------------------------------------------------


async def test_stream_follows_the_topic_and_options(
    brokers: BrokerMaker, new_topic: TopicMaker, raw_js: JetStreamContext
) -> None:
    name = unique_name("tf-nats")
    topic = new_topic(name=name, subjects=(f"{name}.a", f"{name}.b.>"), retention=3600.0)
    broker = brokers([topic], storage="memory")
    await broker.ensure_topic(topic.name, [])
    await broker.ensure_topic(topic.name, [])  # idempotent
    config = (await raw_js.stream_info(stream_name(name))).config
    assert sorted(config.subjects or []) == [f"{name}.a", f"{name}.b.>"]
    assert config.storage == StorageType.MEMORY
    assert config.num_replicas == 1
    assert config.max_age == pytest.approx(3600.0)


async def test_topic_without_subjects_uses_its_name(
    brokers: BrokerMaker, new_topic: TopicMaker, raw_js: JetStreamContext
) -> None:
    topic = new_topic()
    await brokers([topic]).ensure_topic(topic.name, [])
    config = (await raw_js.stream_info(stream_name(topic.name))).config
    assert config.subjects == [topic.name]
    assert config.storage == StorageType.FILE
    assert not config.max_age


async def test_ensure_topic_updates_a_stream_that_differs(
    brokers: BrokerMaker, new_topic: TopicMaker, raw_js: JetStreamContext
) -> None:
    name = unique_name("tf-nats")
    before = new_topic(name=name, subjects=(f"{name}.a",), retention=600.0)
    await brokers([before]).ensure_topic(name, [])
    after = TopicNode(name=name, broker="nats", subjects=(f"{name}.a", f"{name}.c"), retention=60.0)
    await brokers([after]).ensure_topic(name, [])
    config = (await raw_js.stream_info(stream_name(name))).config
    assert sorted(config.subjects or []) == [f"{name}.a", f"{name}.c"]
    assert config.max_age == pytest.approx(60.0)
    assert config.duplicate_window == pytest.approx(60.0)  # no longer than the max age


async def test_storage_cannot_change(brokers: BrokerMaker, new_topic: TopicMaker) -> None:
    topic = new_topic()
    await brokers([topic], storage="memory").ensure_topic(topic.name, [])
    with pytest.raises(BackendError, match="storage"):
        await brokers([topic], storage="file").ensure_topic(topic.name, [])


async def test_replicas_reach_the_server(brokers: BrokerMaker, new_topic: TopicMaker) -> None:
    topic = new_topic()
    # one server cannot keep three replicas: its refusal comes back as it was said
    with pytest.raises(BackendError, match=r"replicas > 1 not supported"):
        await brokers([topic], replicas=3).ensure_topic(topic.name, [])


async def test_durable_per_group_with_the_options(
    brokers: BrokerMaker, new_topic: TopicMaker, raw_js: JetStreamContext
) -> None:
    topic, group = new_topic(), unique_name("tf-group")
    await brokers([topic], ack_wait=12.0, max_deliver=4).ensure_topic(topic.name, [group])
    config = (await raw_js.consumer_info(stream_name(topic.name), durable_name(group))).config
    assert config.durable_name == durable_name(group)
    assert config.deliver_policy == DeliverPolicy.NEW
    assert config.ack_wait == pytest.approx(12.0)
    assert config.max_deliver == 4
    assert not config.backoff  # applied by nack, see the module's docstring

    await brokers([topic], ack_wait=20.0, max_deliver=7).ensure_topic(topic.name, [group])
    config = (await raw_js.consumer_info(stream_name(topic.name), durable_name(group))).config
    assert config.ack_wait == pytest.approx(20.0)
    assert config.max_deliver == 7
    assert config.deliver_policy == DeliverPolicy.NEW


async def test_group_counts_only_what_is_published_after_it_was_ensured(
    brokers: BrokerMaker, new_topic: TopicMaker
) -> None:
    topic, group = new_topic(), unique_name("tf-group")
    broker = brokers([topic])
    await broker.ensure_topic(topic.name, [])
    await broker.publish(topic.name, [OutgoingMessage(b"before") for _ in range(5)])
    await broker.ensure_topic(topic.name, [group])
    await assert_backlog(broker, topic.name, group, 0)
    await broker.publish(topic.name, [OutgoingMessage(b"after") for _ in range(3)])
    await assert_backlog(broker, topic.name, group, 3)
    got = await receive(broker, topic.name, group, 3, timeout=WAIT)
    assert [m.value for m in got] == [b"after"] * 3


async def test_group_first_seen_in_consume_starts_at_the_oldest_message(
    brokers: BrokerMaker, new_topic: TopicMaker
) -> None:
    topic, group = new_topic(), unique_name("tf-group")
    broker = brokers([topic])
    await broker.publish(topic.name, [OutgoingMessage(f"{i}".encode()) for i in range(4)])
    await assert_backlog(broker, topic.name, group, 4)  # no durable yet
    got = await receive(broker, topic.name, group, 4, timeout=WAIT)
    assert [m.value for m in got] == [b"0", b"1", b"2", b"3"]
    await assert_backlog(broker, topic.name, group, 0)


async def test_backlog_of_a_topic_never_created_is_an_error(
    brokers: BrokerMaker, new_topic: TopicMaker
) -> None:
    topic = new_topic()
    with pytest.raises(BackendError, match="ensure_topic"):
        await brokers([topic]).backlog(topic.name, "g")


# --- backlog, acknowledgements, redelivery ---------------------------------------------


async def test_backlog_is_exact_pending_plus_ack_pending(
    brokers: BrokerMaker, new_topic: TopicMaker, raw_js: JetStreamContext
) -> None:
    topic, group = new_topic(), unique_name("tf-group")
    broker = brokers([topic])
    await broker.ensure_topic(topic.name, [group])
    await broker.publish(topic.name, [OutgoingMessage(f"{i}".encode()) for i in range(50)])
    await assert_backlog(broker, topic.name, group, 50)

    held = await receive(broker, topic.name, group, 20, timeout=WAIT, ack=False, max_messages=20)
    info = await raw_js.consumer_info(stream_name(topic.name), durable_name(group))
    assert (info.num_pending, info.num_ack_pending) == (30, 20)
    reading = await broker.backlog(topic.name, group)
    assert reading.total == 50
    assert reading.per_partition == {0: 50}
    assert reading.partitions == 1

    # each ack() returns once the server applied it: the backlog is exact at once
    for done, start in enumerate(range(0, 20, 2), start=1):
        await broker.ack(held[start : start + 2])
        await assert_backlog(broker, topic.name, group, 50 - 2 * done)
        assert await server_backlog(raw_js, topic.name, group) == 50 - 2 * done
    await receive(broker, topic.name, group, 30, timeout=WAIT)
    await assert_backlog(broker, topic.name, group, 0)


async def test_one_ack_call_for_two_groups_is_exact_for_both(
    brokers: BrokerMaker, new_topic: TopicMaker
) -> None:
    topic, groups = new_topic(), [unique_name("tf-group"), unique_name("tf-group")]
    broker = brokers([topic])
    await broker.ensure_topic(topic.name, groups)
    await broker.publish(topic.name, [OutgoingMessage(f"{i}".encode()) for i in range(30)])
    held = [
        m
        for group in groups
        for m in await receive(broker, topic.name, group, 30, timeout=WAIT, ack=False)
    ]
    await broker.ack(held)
    for group in groups:
        await assert_backlog(broker, topic.name, group, 0)


async def test_acknowledging_twice_is_harmless(brokers: BrokerMaker, new_topic: TopicMaker) -> None:
    topic, group = new_topic(), unique_name("tf-group")
    broker = brokers([topic])
    await broker.ensure_topic(topic.name, [group])
    await broker.publish(topic.name, [OutgoingMessage(b"a"), OutgoingMessage(b"b")])
    got = await receive(broker, topic.name, group, 2, timeout=WAIT)  # acknowledged
    await broker.ack(got)
    await broker.ack(got[:1])
    await assert_backlog(broker, topic.name, group, 0)


async def test_max_deliver_is_respected(
    brokers: BrokerMaker, new_topic: TopicMaker, raw_js: JetStreamContext
) -> None:
    topic, group = new_topic(), unique_name("tf-group")
    broker = brokers([topic], max_deliver=3)
    await broker.ensure_topic(topic.name, [group])
    await broker.publish(topic.name, [OutgoingMessage(b"poison"), OutgoingMessage(b"fine")])
    counts: list[int] = []
    fine: list[Message] = []
    deadline = anyio.current_time() + WAIT
    while len(counts) < 3 and anyio.current_time() < deadline:
        for message in await broker.consume(topic.name, group, wait=0.5):
            if message.value == b"poison":
                counts.append(message.delivery_count)
                await broker.nack([message])
            else:
                fine.append(message)
                await broker.ack([message])
    assert counts == [1, 2, 3]
    assert [m.value for m in fine] == [b"fine"]
    # no fourth delivery: the server gave up on it, and it left the backlog
    quiet_until = anyio.current_time() + 1.5
    while anyio.current_time() < quiet_until:
        assert await broker.consume(topic.name, group, wait=0.5) == []
    await assert_backlog(broker, topic.name, group, 0)
    info = await raw_js.consumer_info(stream_name(topic.name), durable_name(group))
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_nack_with_delay_redelivers_after_the_delay(
    brokers: BrokerMaker, new_topic: TopicMaker
) -> None:
    topic, group = new_topic(), unique_name("tf-group")
    broker = brokers([topic], ack_wait=60.0)
    await broker.ensure_topic(topic.name, [group])
    await broker.publish(topic.name, [OutgoingMessage(b"later")])
    (first,) = await receive(broker, topic.name, group, 1, timeout=WAIT, ack=False)
    delay = 1.0
    nacked_at = time.monotonic()
    await broker.nack([first], delay=delay)
    # still owed to the group while it waits
    await assert_backlog(broker, topic.name, group, 1)
    (again,) = await receive(broker, topic.name, group, 1, timeout=WAIT)
    waited = time.monotonic() - nacked_at
    assert waited >= delay * 0.9
    # after the delay, not after ack_wait (60 s); how soon after depends on the load
    assert waited < 30.0
    assert (again.id, again.value) == (first.id, b"later")
    assert again.delivery_count == 2


async def test_nack_without_delay_uses_the_backoff_option(
    brokers: BrokerMaker, new_topic: TopicMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the delays asked of the server, recorded: how much longer a redelivery takes
    # depends on the machine's load, so wall-clock upper bounds cannot tell 0.1 from 0.8
    asked: list[float] = []
    redelivery_delay = NatsBroker._redelivery_delay

    def recorded(self: NatsBroker, message: Message, delay: float) -> float:
        asked.append(redelivery_delay(self, message, delay))
        return asked[-1]

    monkeypatch.setattr(NatsBroker, "_redelivery_delay", recorded)
    topic, group = new_topic(), unique_name("tf-group")
    broker = brokers([topic], backoff=[0.1, 0.8])
    await broker.ensure_topic(topic.name, [group])
    await broker.publish(topic.name, [OutgoingMessage(b"x")])
    waits: list[float] = []
    (message,) = await receive(broker, topic.name, group, 1, timeout=WAIT, ack=False)
    for _ in range(3):
        nacked_at = time.monotonic()
        await broker.nack([message])
        (message,) = await receive(broker, topic.name, group, 1, timeout=WAIT, ack=False)
        waits.append(time.monotonic() - nacked_at)
    await broker.ack([message])
    assert message.delivery_count == 4
    assert asked == [0.1, 0.8, 0.8]
    assert waits[0] >= 0.09  # backoff[0] = 0.1s
    assert waits[1] >= 0.7  # backoff[1] = 0.8s
    assert waits[2] >= 0.7  # the last entry once the list runs out


async def test_close_gives_back_what_it_held(brokers: BrokerMaker, new_topic: TopicMaker) -> None:
    topic, group = new_topic(), unique_name("tf-group")
    first = brokers([topic], ack_wait=60.0)
    await first.ensure_topic(topic.name, [group])
    await first.publish(topic.name, [OutgoingMessage(f"{i}".encode()) for i in range(3)])
    held = await receive(first, topic.name, group, 3, timeout=WAIT, ack=False)
    await first.ack(held[:1])
    await first.aclose()
    second = brokers([topic], ack_wait=60.0)
    started = time.monotonic()
    again = await receive(second, topic.name, group, 2, timeout=WAIT)
    # half of ack_wait: a loaded machine may take seconds, never the 60 s of ack_wait
    assert time.monotonic() - started < 30.0, "given back at once, not after ack_wait"
    assert sorted(m.value for m in again) == [b"1", b"2"]


# --- keys, headers, subjects, de-duplication ----------------------------------------


async def test_keys_and_headers_round_trip(brokers: BrokerMaker, new_topic: TopicMaker) -> None:
    topic, group = new_topic(), unique_name("tf-group")
    broker = brokers([topic])
    await broker.ensure_topic(topic.name, [group])
    keys = [b"", b"\x00\xff\r\n: binary", "clé".encode()]
    await broker.publish(
        topic.name,
        [OutgoingMessage(b"v", key=k, headers={"trace": f"t{i}"}) for i, k in enumerate(keys)],
    )
    got = await receive(broker, topic.name, group, len(keys), timeout=WAIT)
    assert [m.key for m in got] == keys
    for index, message in enumerate(got):
        assert message.headers == {"trace": f"t{index}", SUBJECT_HEADER: topic.name}
        assert KEY_HEADER not in message.headers
        assert message.partition == 0
    assert [int(m.id) for m in got] == sorted(int(m.id) for m in got)


async def test_messages_from_other_clients_are_consumed(
    brokers: BrokerMaker, new_topic: TopicMaker, raw_js: JetStreamContext
) -> None:
    topic, group = new_topic(), unique_name("tf-group")
    broker = brokers([topic])
    await broker.ensure_topic(topic.name, [group])
    await raw_js.publish(topic.name, b"raw", headers={"origin": "elsewhere"})
    (message,) = await receive(broker, topic.name, group, 1, timeout=WAIT)
    assert (message.value, message.key) == (b"raw", None)
    assert message.headers["origin"] == "elsewhere"


async def test_a_message_id_set_by_the_publisher_deduplicates(
    brokers: BrokerMaker, new_topic: TopicMaker
) -> None:
    topic, group = new_topic(), unique_name("tf-group")
    broker = brokers([topic])
    await broker.ensure_topic(topic.name, [group])
    once = OutgoingMessage(b"once", headers={"Nats-Msg-Id": "order-17"})
    await broker.publish(topic.name, [once])
    await broker.publish(topic.name, [once, OutgoingMessage(b"other")])
    await assert_backlog(broker, topic.name, group, 2)
    got = await receive(broker, topic.name, group, 2, timeout=WAIT)
    assert sorted(m.value for m in got) == [b"once", b"other"]
    assert all("Nats-Msg-Id" not in m.headers for m in got)


async def test_every_message_gets_an_id_unless_deduplicate_is_off(
    brokers: BrokerMaker, new_topic: TopicMaker, raw_js: JetStreamContext
) -> None:
    for deduplicate in (True, False):
        topic = new_topic()
        broker = brokers([topic], deduplicate=deduplicate)
        await broker.ensure_topic(topic.name, [])
        await broker.publish(topic.name, [OutgoingMessage(b"plain"), OutgoingMessage(b"same")])
        await broker.publish(topic.name, [OutgoingMessage(b"keyed", key=b"k")])
        stored = [await raw_js.get_msg(stream_name(topic.name), seq=seq) for seq in range(1, 4)]
        ids = [(m.headers or {}).get("Nats-Msg-Id") for m in stored]
        if deduplicate:
            assert all(ids) and len(set(ids)) == 3, ids
        else:
            assert ids == [None, None, None]
            assert stored[0].headers is None  # a plain PUB, nothing to encode or parse
            assert (stored[2].headers or {}).get(KEY_HEADER) == "aw=="


async def test_subject_header_picks_a_captured_subject(
    brokers: BrokerMaker, new_topic: TopicMaker
) -> None:
    name = unique_name("tf-nats")
    topic = new_topic(name=name, subjects=(f"{name}.main", f"{name}.by-region.*"))
    group = unique_name("tf-group")
    broker = brokers([topic])
    await broker.ensure_topic(topic.name, [group])
    await broker.publish(
        topic.name,
        [
            OutgoingMessage(b"default"),
            OutgoingMessage(b"eu", headers={SUBJECT_HEADER: f"{name}.by-region.eu"}),
        ],
    )
    got = {m.value: m for m in await receive(broker, topic.name, group, 2, timeout=WAIT)}
    assert got[b"default"].headers[SUBJECT_HEADER] == f"{name}.main"
    assert got[b"eu"].headers[SUBJECT_HEADER] == f"{name}.by-region.eu"

    for wrong in (f"{name}.elsewhere", f"{name}.by-region.*", "other.topic"):
        with pytest.raises(BackendError, match="not one topic"):
            await broker.publish(
                topic.name, [OutgoingMessage(b"x", headers={SUBJECT_HEADER: wrong})]
            )
    await assert_backlog(broker, topic.name, group, 0)  # nothing of a refused batch


async def test_wildcard_only_topic_needs_a_subject(
    brokers: BrokerMaker, new_topic: TopicMaker
) -> None:
    name = unique_name("tf-nats")
    topic = new_topic(name=name, subjects=(f"{name}.>",))
    broker = brokers([topic])
    await broker.ensure_topic(topic.name, [])
    with pytest.raises(BackendError, match=SUBJECT_HEADER):
        await broker.publish(topic.name, [OutgoingMessage(b"x")])
    await broker.publish(
        topic.name, [OutgoingMessage(b"x", headers={SUBJECT_HEADER: f"{name}.a.b"})]
    )
    await assert_backlog(broker, topic.name, "new-group", 1)


async def test_publish_creates_a_missing_stream(
    brokers: BrokerMaker, new_topic: TopicMaker
) -> None:
    topic, group = new_topic(), unique_name("tf-group")
    publisher = brokers([topic])
    await publisher.publish(topic.name, [OutgoingMessage(b"first")])
    (message,) = await receive(brokers([topic]), topic.name, group, 1, timeout=WAIT)
    assert message.value == b"first"


# --- failures are bounded --------------------------------------------------------------


async def test_no_server_fails_within_the_timeout(new_topic: TopicMaker) -> None:
    from tideflow.testing.nats import free_port

    topic = new_topic()
    broker = NatsBroker(
        {"servers": [f"nats://127.0.0.1:{free_port()}"], "timeout": 1.0, "reconnect_wait": 0.1},
        [topic],
    )
    started = time.monotonic()
    with pytest.raises(BackendError, match="could not connect"):
        await broker.publish(topic.name, [OutgoingMessage(b"x")])
    assert time.monotonic() - started < 4.0
    await broker.aclose()
    await broker.aclose()
    with pytest.raises(BackendClosedError):
        await broker.backlog(topic.name, "g")


async def test_calls_during_an_outage_fail_within_bounds(
    isolated_nats_server: NatsServer, new_topic: TopicMaker
) -> None:
    topic, group = new_topic(), unique_name("tf-group")
    options: dict[str, Any] = {"servers": [isolated_nats_server.url], "timeout": 1.0}
    broker = NatsBroker({**options, "reconnect_wait": 0.1}, [topic])
    try:
        await broker.ensure_topic(topic.name, [group])
        await broker.publish(topic.name, [OutgoingMessage(b"held")])
        held = await receive(broker, topic.name, group, 1, timeout=WAIT, ack=False)
        isolated_nats_server.stop(kill=True)

        async def bounded(call: Any, limit: float) -> None:
            started = time.monotonic()
            with pytest.raises(BackendError):
                await call
            assert time.monotonic() - started < limit

        await bounded(broker.publish(topic.name, [OutgoingMessage(b"lost")]), 3.0)
        await bounded(broker.backlog(topic.name, group), 3.0)
        await bounded(broker.consume(topic.name, group, wait=0.2), 3.0)
        await bounded(broker.ack(held), 3.0)
        failure = await broker.read_backlog(topic.name, group, timeout=0.5)
        assert isinstance(failure, BacklogFailure)
    finally:
        started = time.monotonic()
        await broker.aclose()
        await broker.aclose()
        assert time.monotonic() - started < 3.0


async def test_unacknowledged_publish_raises_and_says_how_many(
    isolated_nats_server: NatsServer, new_topic: TopicMaker
) -> None:
    topic = new_topic()
    broker = NatsBroker(
        {"servers": [isolated_nats_server.url], "timeout": 1.0, "reconnect_wait": 0.1}, [topic]
    )
    try:
        await broker.ensure_topic(topic.name, [])
        isolated_nats_server.stop()
        with pytest.raises(BackendError, match=r"3 of 3 messages not acknowledged"):
            await broker.publish(topic.name, [OutgoingMessage(b"x") for _ in range(3)])
    finally:
        await broker.aclose()


async def test_concurrent_consumers_of_one_object_take_turns(
    brokers: BrokerMaker, new_topic: TopicMaker
) -> None:
    topic, group = new_topic(), unique_name("tf-group")
    broker = brokers([topic])
    await broker.ensure_topic(topic.name, [group])
    await broker.publish(topic.name, [OutgoingMessage(f"{i}".encode()) for i in range(40)])

    async def take() -> list[Message]:
        got: list[Message] = []
        while len(got) < 10:
            batch = await broker.consume(topic.name, group, max_messages=10 - len(got), wait=1)
            await broker.ack(batch)
            got.extend(batch)
        return got

    batches = await asyncio.gather(*(take() for _ in range(4)))
    values = sorted(m.value for batch in batches for m in batch)
    assert values == sorted(f"{i}".encode() for i in range(40))
