"""confluent-kafka (librdkafka) as every part of the broker uses it: the library,
imported on first use, its errors in their own words, and its futures awaited
with a bound."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import logging
from types import ModuleType
from typing import Any, Final, TypeVar

from tideflow.plugins.api import BackendConfigError, BackendError

__all__ = ["GRACE", "LIBRDKAFKA_LOG", "bounded", "client_library", "describe", "error_name", "ms"]

T = TypeVar("T")

#: Extra time given to librdkafka, beyond its own timeout, to report a failure.
GRACE: Final = 2.0

#: librdkafka's own log (its `debug` setting makes it speak).
LIBRDKAFKA_LOG: Final = logging.getLogger(__name__)


def client_library() -> tuple[ModuleType, ModuleType]:
    """`confluent_kafka` and `confluent_kafka.admin`, imported on first use: the
    compiler and `tideflow plugins` list this broker without them."""
    try:
        return (
            importlib.import_module("confluent_kafka"),
            importlib.import_module("confluent_kafka.admin"),
        )
    except ImportError:  # an optional dependency: `pip install tideflow[kafka]`
        raise BackendConfigError(
            'the "kafka" broker needs confluent-kafka; install it with '
            "`pip install 'tideflow[kafka]'`"
        ) from None


def ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def describe(exc: BaseException) -> str:
    """A KafkaException as its error's own words (`KafkaError{code=...}` otherwise)."""
    error: Any = exc.args[0] if exc.args else None
    if hasattr(error, "str") and hasattr(error, "name"):
        return f"{error.str()} ({error.name()})"
    return str(exc) or type(exc).__name__


def error_name(exc: BaseException) -> str:
    error: Any = exc.args[0] if exc.args else None
    return str(error.name()) if hasattr(error, "name") else ""


async def bounded(future: concurrent.futures.Future[T], timeout: float, what: str) -> T:
    """Await a thread's or librdkafka's future; `BackendError` after `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.wrap_future(future)
    except TimeoutError:
        raise BackendError(f"{what}: no answer from the cluster within {timeout:g}s") from None
