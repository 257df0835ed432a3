"""What a consumer's handler sees: `handler(ctx, message)` with a `ConsumerContext`
and a `HandlerMessage` (docs/handlers.md), and how the handler named by a
consumer's `run` is found (`load_handler`).
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tideflow.plugins.api import Message, OutgoingMessage
from tideflow.runtime.context import PublishError, encode_payload, load_object, message_headers

if TYPE_CHECKING:
    from tideflow.compiler.ir import FlowIR

__all__ = [
    "ConsumerContext",
    "Handler",
    "HandlerError",
    "HandlerMessage",
    "decode_value",
    "flow_directory",
    "is_async",
    "load_handler",
]

Handler = Callable[["ConsumerContext", "HandlerMessage"], Any]


class HandlerError(Exception):
    """The handler named by a consumer's `run` cannot be loaded or called."""


def decode_value(data: bytes) -> Any:
    """A published value as a handler receives it: JSON when it parses as JSON, text
    when it is UTF-8, the bytes otherwise (the inverse of `context.encode_payload`
    for everything but strings that are themselves JSON)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass(frozen=True, slots=True)
class HandlerMessage:
    """A message as a handler receives it.

    `value` is the published value (`decode_value`), `key` the key as text; `data`
    and `raw_key` are the bytes as published. `delivery_count` is 1 on the first
    delivery and grows with each redelivery.
    """

    value: Any
    key: str | None
    data: bytes
    raw_key: bytes | None
    headers: Mapping[str, str]
    topic: str
    partition: int
    id: str
    delivery_count: int

    @classmethod
    def of(cls, message: Message) -> HandlerMessage:
        key = None if message.key is None else message.key.decode("utf-8", "replace")
        return cls(
            decode_value(message.value),
            key,
            message.value,
            message.key,
            message.headers,
            message.topic,
            message.partition,
            message.id,
            message.delivery_count,
        )


class ConsumerContext:
    """What a handler is given with each message.

    `consumer`, `flow`, `instance_id` (also `run_id`) name where it runs; `params`
    are the consumer's params; `logger` logs to the instance's output;
    `scheduled_at` is always None (messages are not scheduled).
    `publish(topic, value, key=None, headers=None, subject=None)` queues a message
    for any topic of the flow (bytes as they are, str as UTF-8, anything else as
    JSON; `subject` as for a job, docs/handlers.md); queued messages are
    published after the handler returns and before its message is acknowledged,
    and dropped when it raises.
    """

    __slots__ = ("_topics", "consumer", "flow", "instance_id", "logger", "outbox", "params")

    def __init__(
        self,
        *,
        consumer: str,
        flow: str,
        instance_id: str,
        params: Mapping[str, Any],
        logger: logging.Logger,
        topics: Iterable[str],
    ) -> None:
        self.consumer = consumer
        self.flow = flow
        self.instance_id = instance_id
        self.params = params
        self.logger = logger
        self._topics = frozenset(topics)
        self.outbox: list[tuple[str, OutgoingMessage]] = []

    @property
    def run_id(self) -> str:
        return self.instance_id

    @property
    def scheduled_at(self) -> datetime | None:
        return None

    def __repr__(self) -> str:
        return (
            f"ConsumerContext(flow={self.flow!r}, consumer={self.consumer!r}, "
            f"instance_id={self.instance_id!r})"
        )

    def publish(
        self,
        topic: str,
        value: object,
        key: object = None,
        *,
        headers: Mapping[str, str] | None = None,
        subject: str | None = None,
    ) -> None:
        """Queue `value` (and `key`) for `topic`, a topic of the flow. `headers` and
        `subject` as for a job (`JobContext.publish`)."""
        extra = message_headers(headers, subject)
        if topic not in self._topics:
            known = ", ".join(f"`{t}`" for t in sorted(self._topics)) or "none"
            raise PublishError(
                f'consumer "{self.consumer}" publishes to topic `{topic}`, which flow '
                f'"{self.flow}" does not define (topics: {known})'
            )
        encoded_key = None if key is None else encode_payload(key)
        outgoing = OutgoingMessage(encode_payload(value), encoded_key, extra or {})
        self.outbox.append((topic, outgoing))


def load_handler(target: str, sys_path: Sequence[str] = ()) -> Handler:
    """The handler `module:function`, imported with `sys_path` appended to `sys.path`
    (the flow file's folder, as for jobs). Raises `HandlerError` saying why not."""
    for directory in sys_path:
        if directory not in sys.path:
            sys.path.append(directory)
    try:
        handler = load_object(target)
    except ValueError as exc:
        raise HandlerError(str(exc)) from exc
    except Exception as exc:
        raise HandlerError(f"cannot import `{target}`: {type(exc).__name__}: {exc}") from exc
    if not callable(handler):
        raise HandlerError(f"`{target}` is not callable")
    try:
        inspect.signature(handler).bind(None, None)
    except TypeError:
        raise HandlerError(f"`{target}` must take two arguments, `(ctx, message)`") from None
    except ValueError:  # no signature to inspect (a builtin): trust it
        pass
    return handler  # type: ignore[no-any-return]


def is_async(handler: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def flow_directory(flow: FlowIR) -> list[str]:
    """Where a consumer's handler is imported from: the flow file's folder."""
    return [str(Path(flow.info.source).resolve().parent)] if flow.info.source else []
