"""What a Python job receives (`JobContext`), and how it publishes (`Publisher`).

A job's callable is called with one argument, a `JobContext` (a callable that
takes no argument is called without it). `ctx.publish(topic, value, key=None,
headers=None, subject=None)` hands a message to a `Publisher`; messages are
batched and flushed before the attempt reports success, so a successful attempt
has published everything it published (at least once: a retried attempt
publishes again). Values and keys: bytes as they are, str as UTF-8, anything
else as JSON. docs/handlers.md is the user's reference.

Publishers are built in the process that publishes (the job's worker process,
or the orchestrator for a command's `publish_stdout`) by a *publisher factory*,
`factory(flow_ir_json, topic) -> Publisher`, named "module:function" so it can
be imported there. The default, `make_publisher`, constructs the broker plugin
the topic's `broker` block names. `flow_ir_json` is the part of the IR a
publisher needs (see `publishing_ir_json`), in the IR's JSON format
(`compiler.irjson`): the flow's info, the topic and its broker, with
`env()`/`secret()` kept as references and resolved where the publisher is built.

This module is imported by every worker process: it imports nothing heavy at
module level (the compiler and the plugins are imported when first needed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Protocol

from tideflow.compiler.ir import EdgeKind, FlowIR
from tideflow.compiler.irjson import from_json, to_json
from tideflow.plugins.api import SUBJECT_HEADER, Broker, OutgoingMessage

DEFAULT_PUBLISHER_FACTORY: Final = "tideflow.runtime.context:make_publisher"
FLUSH_EVERY: Final = 1000  # messages buffered per topic before a flush is forced


class Publisher(Protocol):
    """Where a job's messages go. Not thread-safe; one per publishing process.

    `publish` is called with `headers` only when the message has some, so a
    publisher that takes none still works for jobs that give none."""

    def publish(
        self, topic: str, value: bytes, key: bytes | None, headers: Mapping[str, str] | None = None
    ) -> None:
        """Queue a message (it may be sent later, in a batch)."""

    def flush(self) -> None:
        """Send everything queued; returns when the broker has accepted it, or raises."""

    def close(self) -> None:
        """Release the connection; queued messages not flushed are dropped."""


PublisherFactory = Callable[[str, str], Publisher]


class PublishError(Exception):
    """A job published where it may not, or a publisher could not be built."""


def encode_payload(value: object) -> bytes:
    """bytes as they are, str as UTF-8, anything else as compact JSON."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def message_headers(
    headers: Mapping[str, str] | None, subject: str | None
) -> dict[str, str] | None:
    """The headers of a message published with `headers` and `subject` (None when
    there are none): `subject` becomes the `Tideflow-Subject` header, which a broker
    that routes by subject (NATS) publishes the message on. Raises `TypeError` for
    a name or value that is not a string."""
    if not headers and subject is None:
        return None
    chosen: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(
                f"message headers are text: got {type(name).__name__} {name!r} = "
                f"{type(value).__name__} {value!r}"
            )
        chosen[name] = value
    if subject is not None:
        if not isinstance(subject, str) or not subject:
            raise TypeError(f"`subject` is a non-empty string, got {subject!r}")
        chosen[SUBJECT_HEADER] = subject
    return chosen


def load_object(target: str) -> Any:
    """The object named "package.module:attribute.path"."""
    import importlib

    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected `module:function`, got `{target}`")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


class JobContext:
    """What a job's callable is given.

    `run_id` is the job run's id in the run history; `attempt` counts from 1;
    `scheduled_at` is the schedule instant (None for a manual run); `params`
    are the job's params overlaid with the run's; `env` is the job's resolved
    `env` (also set in `os.environ` while the attempt runs); records logged
    through `logger` are stored with the attempt, with their level and time.
    """

    __slots__ = (
        "_publisher_for",
        "_used",
        "attempt",
        "env",
        "flow",
        "job",
        "logger",
        "params",
        "publishes",
        "run_id",
        "scheduled_at",
    )

    def __init__(
        self,
        *,
        run_id: int,
        flow: str,
        job: str,
        attempt: int,
        scheduled_at: datetime | None,
        params: Mapping[str, Any],
        logger: logging.Logger,
        env: Mapping[str, str],
        publishes: Sequence[str] = (),
        publisher_for: Callable[[str], Publisher] | None = None,
    ) -> None:
        self.run_id = run_id
        self.flow = flow
        self.job = job
        self.attempt = attempt
        self.scheduled_at = scheduled_at
        self.params = params
        self.logger = logger
        self.env = env
        self.publishes = tuple(publishes)
        self._publisher_for = publisher_for
        self._used: dict[str, Publisher] = {}

    def __repr__(self) -> str:
        return (
            f"JobContext(flow={self.flow!r}, job={self.job!r}, run_id={self.run_id}, "
            f"attempt={self.attempt})"
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
        """Publish `value` (and `key`) to `topic`, which the job must list in `publishes`.

        `headers` travel with the message (text names and values); `subject` names
        the subject on a broker that routes by subject (NATS: one the topic's
        `subjects` capture; needed when they all have wildcards)."""
        extra = message_headers(headers, subject)
        if topic not in self.publishes:
            declared = ", ".join(f"`{t}`" for t in self.publishes) or "none"
            raise PublishError(
                f'job "{self.job}" publishes to topic `{topic}`, which is not in its '
                f"`publishes` list (declared: {declared})"
            )
        if self._publisher_for is None:
            raise PublishError(f'no publisher is configured for job "{self.job}"')
        publisher = self._used.get(topic)
        if publisher is None:
            publisher = self._used[topic] = self._publisher_for(topic)
        encoded_key = None if key is None else encode_payload(key)
        if extra is None:
            publisher.publish(topic, encode_payload(value), encoded_key)
        else:
            publisher.publish(topic, encode_payload(value), encoded_key, extra)

    def flush(self) -> None:
        """Flush every publisher this attempt used (the runtime calls this)."""
        for publisher in self._used.values():
            publisher.flush()


# --- the default publisher: a broker plugin, driven synchronously ---------------------


def publishing_ir_json(flow: FlowIR, topic: str) -> str:
    """IR JSON (`compiler.irjson`) of the part of `flow` a publisher to `topic` needs:
    the flow's info, the topic and its broker. Small, so it can travel with each
    attempt; `env()`/`secret()` stay references."""
    record = flow.topics[topic]
    part = FlowIR(flow.info)
    part.connect(part.add(record), part.add(flow.brokers[record.broker]), EdgeKind.USES_BROKER)
    return json.dumps(to_json(part))


def make_publisher(flow_ir_json: str, topic: str) -> Publisher:
    """The default factory: the broker plugin named by the topic's broker block, with
    its `env()`/`secret()` options read from this process's environment."""
    # lazy: loading the plugins costs a job worker memory; only publishing jobs need them
    from .backends import open_topic_broker

    flow = from_json(json.loads(flow_ir_json))
    if topic not in flow.topics:
        raise PublishError(f'topic `{topic}` is not defined in flow "{flow.info.name}"')
    return BrokerPublisher(open_topic_broker(flow, topic))


class BrokerPublisher:
    """A `Publisher` over an async `Broker`, with an event loop of its own.

    Call it from a thread without a running event loop (a worker process's main
    thread, or `asyncio.to_thread` in the orchestrator)."""

    def __init__(self, broker: Broker) -> None:
        import asyncio

        self.broker = broker
        self._loop = asyncio.new_event_loop()
        self._pending: dict[str, list[OutgoingMessage]] = {}
        self._ensured: set[str] = set()

    def publish(
        self, topic: str, value: bytes, key: bytes | None, headers: Mapping[str, str] | None = None
    ) -> None:
        batch = self._pending.setdefault(topic, [])
        batch.append(OutgoingMessage(value, key, headers or {}))
        if len(batch) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            topic, batch = next(iter(self._pending.items()))
            if topic not in self._ensured:  # the first publish may find no topic yet
                self._loop.run_until_complete(self.broker.ensure_topic(topic))
                self._ensured.add(topic)
            self._loop.run_until_complete(self.broker.publish(topic, batch))
            del self._pending[topic]

    def close(self) -> None:
        self._pending.clear()
        try:
            self._loop.run_until_complete(self.broker.aclose())
        finally:
            self._loop.close()
