"""The first connection (issue 11, item 13): with no server at start, the log says
that the broker could not connect, not that it was "disconnected, reconnecting"
(it never connected); a connection that was up and is lost still says so."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.api import BackendError
from tideflow.plugins.nats_broker import NatsBroker

from tideflow.testing import unique_name
from tideflow.testing.nats import NatsServer, free_port

pytestmark = pytest.mark.anyio

TopicMaker = Callable[..., TopicNode]
LOGGER = "tideflow.plugins.nats_broker"


async def test_no_server_at_start_is_not_called_a_disconnection(
    new_topic: TopicMaker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    broker = NatsBroker(
        {"servers": [f"nats://127.0.0.1:{free_port()}"], "timeout": 1.0}, [new_topic()]
    )
    try:
        with pytest.raises(BackendError, match="could not connect to the nats servers"):
            await broker.ensure_topic(next(iter(broker.topics)), [unique_name("g")])
    finally:
        await broker.aclose()
    said = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert not [line for line in said if "disconnected" in line], said
    assert not [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


async def test_a_lost_connection_is_still_reported(
    isolated_nats_server: NatsServer, new_topic: TopicMaker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    topic = new_topic()
    broker = NatsBroker(
        {"servers": [isolated_nats_server.url], "timeout": 2.0, "reconnect_wait": 0.1}, [topic]
    )
    try:
        await broker.ensure_topic(topic.name, [unique_name("g")])
        isolated_nats_server.stop()
        with pytest.raises(BackendError):
            await broker.backlog(topic.name, unique_name("g"))
    finally:
        await broker.aclose()
    assert any("disconnected, reconnecting" in r.getMessage() for r in caplog.records)
