"""How a consumer dead-letters a message: the `tideflow-*` headers saying where it
came from and why (`dead_letter_headers`), and the group its dead-letter topic is
read as (`dead_letter_group`, what `tideflow dlq` uses).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from tideflow.plugins.api import Message
from tideflow.runtime.job_worker import error_fields

if TYPE_CHECKING:
    from tideflow.compiler.ir import ConsumerNode

__all__ = [
    "HEADER_PREFIX",
    "MAX_ERROR_TEXT",
    "dead_letter_group",
    "dead_letter_headers",
    "one_line",
]

#: Longest error text kept in a dead-letter header or the instance's `last_error`.
MAX_ERROR_TEXT: Final = 1000
#: Headers a dead-lettered message carries, each name starting with this.
HEADER_PREFIX: Final = "tideflow-"


def one_line(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def dead_letter_headers(
    message: Message,
    exc: BaseException,
    *,
    flow: str,
    consumer: str,
    redact: Callable[[str], str] = str,
) -> dict[str, str]:
    """The original headers plus `tideflow-*` headers saying where the message came
    from and why it was dead-lettered (error type, message, failures, place).

    `tideflow-*` headers the message came with are replaced: they are a broker's
    routing (NATS's `Tideflow-Subject` would steer the publish to the original
    topic's subject) or an earlier dead-lettering's; the original subject is kept
    as `tideflow-original-subject`."""
    kind, text, _, function, location = error_fields(exc)
    headers = {
        key: value
        for key, value in message.headers.items()
        if not key.lower().startswith(HEADER_PREFIX)
    }
    subject = next(
        (v for k, v in message.headers.items() if k.lower() == f"{HEADER_PREFIX}subject"), None
    )
    if subject is not None:
        headers[f"{HEADER_PREFIX}original-subject"] = subject
    headers.update(
        {
            f"{HEADER_PREFIX}error-type": kind,
            f"{HEADER_PREFIX}error-message": one_line(redact(text)),
            f"{HEADER_PREFIX}failures": str(message.delivery_count),
            f"{HEADER_PREFIX}original-topic": message.topic,
            f"{HEADER_PREFIX}original-partition": str(message.partition),
            f"{HEADER_PREFIX}original-id": message.id,
            f"{HEADER_PREFIX}group": message.group,
            f"{HEADER_PREFIX}consumer": consumer,
            f"{HEADER_PREFIX}flow": flow,
            f"{HEADER_PREFIX}dead-lettered-at": datetime.now(UTC).isoformat(),
        }
    )
    if function:
        headers[f"{HEADER_PREFIX}error-function"] = function
    if location:
        headers[f"{HEADER_PREFIX}error-location"] = location
    return headers


def dead_letter_group(consumer: ConsumerNode) -> str:
    """The consumer group `tideflow dlq` reads a consumer's dead-letter topic as. Each
    instance creates it (`ensure_topic`) before its first dead letter, so it counts
    every dead letter on every broker; a message acknowledged in it (replayed) is
    not listed again."""
    return f"tideflow-dlq-{consumer.group}"
