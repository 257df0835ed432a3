"""Fixtures of the kafka broker's tests: one Tansu server for the session (from
`tideflow.testing.kafka`), and brokers configured for it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.kafka import KafkaBroker

from tideflow.testing import BrokerFactory
from tideflow.testing.kafka import (
    FAST_GROUPS,
    ONE_RECORD_PER_BATCH,
    kafka_bootstrap,
    kafka_server,
)

__all__ = ["kafka_bootstrap", "kafka_server"]

#: Long enough for a loaded 2-core machine, short enough for outage tests.
REQUEST_TIMEOUT = 10.0

KafkaBrokerMaker = Callable[..., KafkaBroker]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def kafka_config(kafka_bootstrap: str) -> dict[str, Any]:
    """Options of a broker on the session's server: fast group joins, and one
    record per produce batch so that Tansu's log-end offsets are exact."""
    return {
        "bootstrap": kafka_bootstrap,
        **FAST_GROUPS,
        "request_timeout": REQUEST_TIMEOUT,
        "config": dict(ONE_RECORD_PER_BATCH),
    }


@pytest.fixture
def make_broker(kafka_config: dict[str, Any]) -> KafkaBrokerMaker:
    """`make_broker(topics, **options)`: a broker with `kafka_config` and `options`."""

    def make(topics: Sequence[TopicNode], **options: Any) -> KafkaBroker:
        return KafkaBroker({**kafka_config, **options}, topics)

    return make


@pytest.fixture
def tideflow_broker_factory(kafka_config: Mapping[str, Any]) -> BrokerFactory:
    return lambda topics: KafkaBroker(kafka_config, topics)
