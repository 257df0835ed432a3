"""A consumer's dead-letter topic, read and replayed through its broker.

`tideflow dlq list` and `tideflow dlq replay` open a `DeadLetterTopic`: a client of
the broker that carries the consumer's `dead_letter` topic, consuming it as the
group `dead_letter_group(consumer)`. It works the same on every broker, because it
uses only the `Broker` interface.

Reading holds the messages it received (neither acknowledged nor given back) until
it has as many as the group's backlog counted (or the limit, or the time runs
out), so that no message is seen twice; `aclose()` gives back every message still
held, so a listing changes nothing but the messages' delivery counts (on NATS each
listing counts towards the broker block's `max_deliver`). A message of the topic
that another consumer dead-lettered (a topic shared by several consumers) is
acknowledged in this consumer's group as soon as it is read: it is never shown or
replayed here (each consumer has its own group).

Replaying publishes the chosen messages to the consumer's topic, with their key and
their original headers (the `tideflow-*` headers of the dead-lettering are left
out; a NATS subject is restored as `Tideflow-Subject`), and acknowledges them on
the dead-letter topic only after the broker accepted them all: a failed publish
replays nothing (the messages stay on the dead-letter topic); a failed
acknowledgement after a publish is reported, since those messages are on both
topics and would be replayed again.

A broker that commits offsets (Kafka) can only forget a message once every older
message of its partition is acknowledged too. So, before the chosen messages are
replayed, the unchosen ones older than a chosen one in its partition are moved to
the end of the dead-letter topic: published there again, as they are, then
acknowledged. They keep their content and headers and get new refs. Without this,
a replayed message would be listed, and replayed, again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

from tideflow.plugins.api import Broker, Message, OutgoingMessage

from .backends import open_topic_broker
from .consumer.dead_letter import HEADER_PREFIX, dead_letter_group

if TYPE_CHECKING:
    from tideflow.compiler.ir import ConsumerNode, FlowIR

__all__ = [
    "DeadLetter",
    "DeadLetterError",
    "DeadLetterTopic",
    "ReplayResult",
    "dead_letter_group",
    "replay_headers",
]

#: Most messages one `consume` call asks for while reading.
FETCH_BATCH: Final = 100
#: Longest one `consume` call waits while more messages are expected.
FETCH_WAIT: Final = 0.5
#: The subject header of the `nats` broker (see `plugins.nats_broker.SUBJECT_HEADER`).
SUBJECT_HEADER: Final = "Tideflow-Subject"


class DeadLetterError(Exception):
    """A dead-letter topic cannot be read or replayed; the message says why."""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = f"{HEADER_PREFIX}{name}"
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def replay_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers a dead-lettered message is replayed with: the original ones."""
    kept = {k: v for k, v in headers.items() if not k.lower().startswith(HEADER_PREFIX)}
    subject = _header(headers, "original-subject")
    if subject is not None:
        kept[SUBJECT_HEADER] = subject
    return kept


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message of a dead-letter topic, with what its `tideflow-*` headers say.

    `ref` (`PARTITION:ID`) names it on the dead-letter topic; `original_*` say where
    it was consumed from; `error` is "Type: message"."""

    partition: int
    id: str
    key: bytes | None
    value: bytes
    headers: Mapping[str, str]
    consumer: str | None
    original_topic: str | None
    original_partition: str | None
    original_id: str | None
    failures: int | None
    error: str
    error_function: str | None
    dead_lettered_at: str | None
    message: Message = field(repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.partition}:{self.id}"

    def matches(self, wanted: str) -> bool:
        """Whether `wanted` names this message: `PARTITION:ID`, or its `ID` alone."""
        return wanted in (self.ref, self.id)

    @classmethod
    def of(cls, message: Message) -> DeadLetter:
        headers = message.headers
        kind, text = _header(headers, "error-type"), _header(headers, "error-message")
        error = f"{kind}: {text}" if kind and text else kind or text or ""
        failures = _header(headers, "failures")
        return cls(
            partition=message.partition,
            id=message.id,
            key=message.key,
            value=message.value,
            headers=dict(headers),
            consumer=_header(headers, "consumer"),
            original_topic=_header(headers, "original-topic"),
            original_partition=_header(headers, "original-partition"),
            original_id=_header(headers, "original-id"),
            failures=int(failures) if failures and failures.isdigit() else None,
            error=error,
            error_function=_header(headers, "error-function"),
            dead_lettered_at=_header(headers, "dead-lettered-at"),
            message=message,
        )

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (the value as text when it is UTF-8, else as `repr` of the bytes)."""
        try:
            value: str = self.value.decode("utf-8")
        except UnicodeDecodeError:
            value = repr(self.value)
        return {
            "ref": self.ref,
            "partition": self.partition,
            "id": self.id,
            "key": None if self.key is None else self.key.decode("utf-8", "replace"),
            "value": value,
            "original_topic": self.original_topic,
            "original_partition": self.original_partition,
            "original_id": self.original_id,
            "failures": self.failures,
            "error": self.error,
            "error_function": self.error_function,
            "dead_lettered_at": self.dead_lettered_at,
            "headers": dict(self.headers),
        }


@dataclass(frozen=True, slots=True)
class ReplayResult:
    replayed: tuple[DeadLetter, ...]
    topic: str


class DeadLetterTopic:
    """The dead-letter topic of `consumer`, read as `dead_letter_group(consumer)`.

    `async with`: `read()`, then perhaps `replay(...)`; leaving gives back what is
    still held. `open_broker(topic)` gives a broker client for a topic of the flow
    (default: `runtime.backends.open_topic_broker`)."""

    def __init__(
        self,
        flow: FlowIR,
        consumer: ConsumerNode,
        *,
        open_broker: Callable[[str], Broker] | None = None,
    ) -> None:
        if consumer.dead_letter is None:
            raise DeadLetterError(
                f'consumer "{consumer.name}" has no `dead_letter` topic: messages it gives up '
                "on are dropped (and logged: see `tideflow logs --consumer`)"
            )
        self.flow = flow
        self.consumer = consumer
        self.topic: str = consumer.dead_letter
        self.group = dead_letter_group(consumer)
        self._open = open_broker or self._open_topic_broker
        self._broker: Broker | None = None
        self._held: dict[tuple[int, str], Message] = {}
        self._mine: dict[tuple[int, str], DeadLetter] = {}

    def _open_topic_broker(self, topic: str) -> Broker:
        return open_topic_broker(self.flow, topic)

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            self._broker = self._open(self.topic)
        return self._broker

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _belongs(self, letter: DeadLetter) -> bool:
        # no header: not dead-lettered by tideflow; shown to the consumers that use the topic
        return letter.consumer in (None, self.consumer.name)

    async def read(self, *, limit: int | None = None, timeout: float = 30.0) -> list[DeadLetter]:
        """The consumer's dead letters, oldest first per partition: as many as the
        group's backlog counts when reading starts (at most `limit` of this consumer),
        or what came within `timeout` seconds. Raises `DeadLetterError` when the
        broker cannot be read."""
        broker = self.broker
        try:
            await broker.ensure_topic(self.topic)
            expected = (await broker.backlog(self.topic, self.group)).total
            deadline = time.monotonic() + timeout
            while len(self._held) < expected and time.monotonic() < deadline:
                if limit is not None and len(self._mine) >= limit:
                    break
                wait = min(FETCH_WAIT, max(deadline - time.monotonic(), 0.0))
                batch = await broker.consume(
                    self.topic, self.group, max_messages=FETCH_BATCH, wait=wait
                )
                for message in batch:
                    where = (message.partition, message.id)
                    if where in self._held:  # delivered again: the newer receipt counts
                        self._held[where] = message
                        continue
                    self._held[where] = message
                    letter = DeadLetter.of(message)
                    if self._belongs(letter):
                        self._mine[where] = letter
                    else:  # not this consumer's: nothing to show or replay here
                        await broker.ack([message])
        except DeadLetterError:
            raise
        except Exception as exc:
            raise DeadLetterError(
                f'cannot read dead-letter topic "{self.topic}": {type(exc).__name__}: {exc}'
            ) from exc
        found = sorted(self._mine.values(), key=lambda d: (d.partition, _order(d.id)))
        return found[:limit] if limit is not None else found

    async def replay(self, chosen: Collection[DeadLetter]) -> ReplayResult:
        """Publish `chosen` (read by `read()`) to the consumer's topic, then acknowledge
        them here. Raises `DeadLetterError` saying what happened to them."""
        target = self.consumer.consumes
        letters = [d for d in chosen if (d.partition, d.id) in self._mine]
        if not letters:
            return ReplayResult((), target)
        await self._move_older(letters)
        outgoing = [OutgoingMessage(d.value, d.key, replay_headers(d.headers)) for d in letters]
        publisher: Broker | None = None
        try:
            publisher = self._open(target)
            await publisher.ensure_topic(target)
            await publisher.publish(target, outgoing)
        except Exception as exc:
            raise DeadLetterError(
                f'cannot publish to topic "{target}" ({type(exc).__name__}: {exc}); nothing '
                f'was replayed: the messages stay on "{self.topic}"'
            ) from exc
        finally:
            if publisher is not None:
                await _close_quietly(publisher)
        # refreshed receipts (a message delivered again while held) acknowledge it
        messages = [self._held[(d.partition, d.id)] for d in letters]
        try:
            await self.broker.ack(messages)
        except Exception as exc:
            raise DeadLetterError(
                f'{len(letters)} message(s) were published to "{target}" but could not be '
                f'acknowledged on "{self.topic}" ({type(exc).__name__}: {exc}); they are still '
                "listed there: do not replay them again"
            ) from exc
        for d in letters:
            self._held.pop((d.partition, d.id), None)
            self._mine.pop((d.partition, d.id), None)
        return ReplayResult(tuple(letters), target)

    async def _move_older(self, letters: Sequence[DeadLetter]) -> None:
        """Move the messages older than a chosen one in its partition, not chosen
        themselves, to the end of the topic (see the module's docstring)."""
        chosen = {(d.partition, d.id) for d in letters}
        newest: dict[int, tuple[int, str]] = {}
        for d in letters:
            newest[d.partition] = max(newest.get(d.partition, _order(d.id)), _order(d.id))
        older = [
            d
            for key, d in self._mine.items()
            if key not in chosen and d.partition in newest and _order(d.id) < newest[d.partition]
        ]
        if not older:
            return
        copies = [OutgoingMessage(d.value, d.key, dict(d.headers)) for d in older]
        try:
            await self.broker.publish(self.topic, copies)
        except Exception as exc:
            raise DeadLetterError(
                f'cannot publish to "{self.topic}" the {len(older)} older message(s) that '
                f"must move behind the ones replayed ({type(exc).__name__}: {exc}); nothing "
                "was replayed"
            ) from exc
        try:
            await self.broker.ack([self._held[(d.partition, d.id)] for d in older])
        except Exception as exc:
            raise DeadLetterError(
                f"{len(older)} older message(s) were copied to the end of "
                f'"{self.topic}" but could not be acknowledged ({type(exc).__name__}: '
                f"{exc}): they are listed twice; nothing was replayed"
            ) from exc
        for d in older:
            self._held.pop((d.partition, d.id), None)
            self._mine.pop((d.partition, d.id), None)

    async def aclose(self) -> None:
        """Give back every message still held and close the broker client."""
        broker, self._broker = self._broker, None
        if broker is None:
            return
        held = list(self._held.values())
        self._held.clear()
        self._mine.clear()
        try:
            if held:
                await asyncio.wait_for(broker.nack(held), 10.0)
        except Exception:  # their leases run out instead: they come back all the same
            pass
        finally:
            await _close_quietly(broker)


def _order(message_id: str) -> tuple[int, str]:
    """Sort numeric ids (offsets, sequences) as numbers, others as text."""
    return (int(message_id), "") if message_id.isdigit() else (0, message_id)


async def _close_quietly(broker: Broker) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(broker.aclose(), 10.0)


def select(letters: Sequence[DeadLetter], wanted: Collection[str]) -> list[DeadLetter]:
    """The letters that `wanted` (`PARTITION:ID` or `ID`) names; `DeadLetterError` names
    those that match none, or an `ID` that names messages of several partitions."""
    chosen: list[DeadLetter] = []
    missing: list[str] = []
    for name in wanted:
        found = [d for d in letters if d.matches(name)]
        if not found:
            missing.append(name)
        elif len(found) > 1:
            refs = ", ".join(d.ref for d in found)
            raise DeadLetterError(f"`{name}` names several messages ({refs}); give PARTITION:ID")
        elif found[0] not in chosen:
            chosen.append(found[0])
    if missing:
        raise DeadLetterError(
            f"no dead letter {', '.join(f'`{m}`' for m in missing)} (see `tideflow dlq list`)"
        )
    return chosen
