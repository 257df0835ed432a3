"""Fixtures for tideflow-redis's tests: a real Redis server, one key prefix per test.

The server is `TIDEFLOW_REDIS_URL` (default redis://127.0.0.1:6379/0). Each test
works under its own key prefix and deletes its keys afterwards; nothing else on
the server is touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence

import pytest
import redis
from tideflow_redis import RedisBroker

from tideflow.testing import TopicNode

REDIS_URL = os.environ.get("TIDEFLOW_REDIS_URL", "redis://127.0.0.1:6379/0")
# short enough for the contract suite's redelivery tests to wait for it
TEST_VISIBILITY_TIMEOUT = 1.0


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        pytest.skip(f"no Redis server at {REDIS_URL}: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"tideflow-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def tideflow_broker_factory(
    redis_url: str, redis_prefix: str
) -> Callable[[Sequence[TopicNode]], RedisBroker]:
    """What the contract suite (tideflow.testing) builds its brokers with."""

    def make(topics: Sequence[TopicNode]) -> RedisBroker:
        return RedisBroker(
            {
                "url": redis_url,
                "key_prefix": redis_prefix,
                "visibility_timeout": TEST_VISIBILITY_TIMEOUT,
            },
            topics,
        )

    return make


@pytest.fixture
def tideflow_quiet_period() -> float:
    return TEST_VISIBILITY_TIMEOUT + 0.5
