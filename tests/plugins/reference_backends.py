"""In-memory reference backends that keep the contract, and mutants that each break
one promise: the contract suite must pass the first and catch every mutant.

Test doubles only; they are never registered as tideflow backends.
"""

from __future__ import annotations

import asyncio
import itertools
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from tideflow.compiler.ir import ConsumerNode, TopicNode
from tideflow.plugins.api import (
    BackendClosedError,
    BackendContext,
    BacklogReading,
    Broker,
    Field,
    Message,
    OutgoingMessage,
    Scaler,
    StringType,
)

NAMESPACE = Field("namespace", StringType(), "Which in-memory server to use.", required=True)


@dataclass(frozen=True, slots=True)
class Stored:
    value: bytes
    key: bytes | None
    headers: Mapping[str, str]


@dataclass
class GroupState:
    cursor: dict[int, int] = field(default_factory=dict)  # partition -> next new offset
    in_flight: dict[tuple[int, int], int] = field(default_factory=dict)  # -> owner
    redeliver: deque[tuple[int, int]] = field(default_factory=deque)
    deliveries: dict[tuple[int, int], int] = field(default_factory=dict)


@dataclass
class MemoryServer:
    logs: dict[str, list[list[Stored]]] = field(default_factory=dict)
    groups: dict[tuple[str, str], GroupState] = field(default_factory=dict)


SERVERS: dict[str, MemoryServer] = {}
_consumer_ids = itertools.count(1)


class MemoryBroker(Broker):
    """Keeps every message in memory; shared by the brokers of one namespace."""

    name: ClassVar[str] = "memory"
    options: ClassVar[tuple[Field, ...]] = (NAMESPACE,)
    partitioned: ClassVar[bool] = True

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: Sequence[TopicNode] = (),
        *,
        context: BackendContext | None = None,
    ) -> None:
        super().__init__(config, topics, context=context)
        self.server = SERVERS.setdefault(self.config["namespace"], MemoryServer())
        self.consumer_id = next(_consumer_ids)
        self.closed = False

    def _open(self, topic: str) -> list[list[Stored]]:
        if self.closed:
            raise BackendClosedError("the memory broker is closed")
        record = self.topic(topic)
        return self.server.logs.setdefault(topic, [[] for _ in range(record.partitions)])

    def _group(self, topic: str, group: str) -> GroupState:
        return self.server.groups.setdefault((topic, group), GroupState())

    async def ensure_topic(self, topic: str, groups: Sequence[str] = ()) -> None:
        self._open(topic)
        for group in groups:
            self._group(topic, group)

    async def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> None:
        log = self._open(topic)
        for index, message in enumerate(messages):
            key = message.key if message.key is not None else str(index).encode()
            partition = zlib.crc32(key) % len(log)
            log[partition].append(Stored(message.value, message.key, dict(message.headers)))

    def _take(self, topic: str, group: str, limit: int) -> list[Message]:
        log = self._open(topic)
        state = self._group(topic, group)
        picked: list[tuple[int, int]] = []
        while state.redeliver and len(picked) < limit:
            picked.append(state.redeliver.popleft())
        for partition, entries in enumerate(log):
            while len(picked) < limit and state.cursor.get(partition, 0) < len(entries):
                picked.append((partition, state.cursor.get(partition, 0)))
                state.cursor[partition] = state.cursor.get(partition, 0) + 1
        out: list[Message] = []
        for partition, offset in picked:
            state.in_flight[(partition, offset)] = self.consumer_id
            count = state.deliveries.get((partition, offset), 0) + 1
            state.deliveries[(partition, offset)] = count
            stored = log[partition][offset]
            out.append(
                Message(
                    topic,
                    group,
                    stored.value,
                    stored.key,
                    stored.headers,
                    partition,
                    str(offset),
                    count,
                )
            )
        return out

    async def consume(
        self, topic: str, group: str, *, max_messages: int = 100, wait: float = 1.0
    ) -> list[Message]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            batch = self._take(topic, group, max_messages)
            if batch or loop.time() >= deadline:
                return batch
            await asyncio.sleep(0.005)

    async def ack(self, messages: Sequence[Message]) -> None:
        for m in messages:
            self._open(m.topic)
            self._group(m.topic, m.group).in_flight.pop((m.partition, int(m.id)), None)

    async def nack(self, messages: Sequence[Message], *, delay: float = 0.0) -> None:
        for m in messages:
            state = self._group(m.topic, m.group)
            if state.in_flight.pop((m.partition, int(m.id)), None) is not None:
                state.redeliver.append((m.partition, int(m.id)))

    async def backlog(self, topic: str, group: str) -> BacklogReading:
        log = self._open(topic)
        state = self._group(topic, group)
        per_partition = {
            p: len(entries)
            - state.cursor.get(p, 0)
            + sum(1 for (q, _) in [*state.in_flight, *state.redeliver] if q == p)
            for p, entries in enumerate(log)
        }
        return BacklogReading(
            topic, group, sum(per_partition.values()), per_partition, len(log), datetime.now(UTC)
        )

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        for state in self.server.groups.values():
            mine = [k for k, owner in state.in_flight.items() if owner == self.consumer_id]
            for key in mine:
                del state.in_flight[key]
                state.redeliver.append(key)


# --- broker mutants: each breaks one promise of the contract ------------------------


class AckIgnoredBroker(MemoryBroker):
    """Forgets acknowledgements."""

    async def ack(self, messages: Sequence[Message]) -> None:
        pass


class NackDropsBroker(MemoryBroker):
    """Treats a negative acknowledgement as an acknowledgement."""

    async def nack(self, messages: Sequence[Message], *, delay: float = 0.0) -> None:
        await self.ack(messages)


class BacklogWithoutInFlightBroker(MemoryBroker):
    """Counts only messages not yet delivered."""

    async def backlog(self, topic: str, group: str) -> BacklogReading:
        log = self._open(topic)
        state = self._group(topic, group)
        per = {p: len(e) - state.cursor.get(p, 0) for p, e in enumerate(log)}
        return BacklogReading(topic, group, sum(per.values()), per, len(log), datetime.now(UTC))


class CloseLosesInFlightBroker(MemoryBroker):
    """Drops what its consumer had in flight when it closes."""

    async def aclose(self) -> None:
        if not self.closed:
            for state in self.server.groups.values():
                for key in [k for k, o in state.in_flight.items() if o == self.consumer_id]:
                    del state.in_flight[key]
        self.closed = True


class ReversedBatchBroker(MemoryBroker):
    """Hands out each batch backwards."""

    async def consume(
        self, topic: str, group: str, *, max_messages: int = 100, wait: float = 1.0
    ) -> list[Message]:
        return list(
            reversed(await super().consume(topic, group, max_messages=max_messages, wait=wait))
        )


class SecondCloseFailsBroker(MemoryBroker):
    """Raises when closed twice."""

    async def aclose(self) -> None:
        if self.closed:
            raise BackendClosedError("already closed")
        await super().aclose()


class HoggingBroker(MemoryBroker):
    """Gives a group's messages only to its first consumer."""

    owners: ClassVar[dict[tuple[str, str], int]] = {}

    async def consume(
        self, topic: str, group: str, *, max_messages: int = 100, wait: float = 1.0
    ) -> list[Message]:
        owner = self.owners.setdefault((topic, group), self.consumer_id)
        if owner != self.consumer_id:
            self._open(topic)
            await asyncio.sleep(min(wait, 0.01))
            return []
        return await super().consume(topic, group, max_messages=max_messages, wait=wait)


class OnePartitionBroker(MemoryBroker):
    """Reports one partition whatever the topic has."""

    async def backlog(self, topic: str, group: str) -> BacklogReading:
        reading = await super().backlog(topic, group)
        return BacklogReading(topic, group, reading.total, {0: reading.total}, 1, reading.taken_at)


BROKER_MUTANTS: Mapping[type[MemoryBroker], str] = {
    AckIgnoredBroker: "test_ack_means_no_redelivery",
    NackDropsBroker: "test_nack_redelivers",
    BacklogWithoutInFlightBroker: "test_backlog_counts_pending_and_in_flight",
    CloseLosesInFlightBroker: "test_unacked_messages_go_to_another_consumer_after_close",
    ReversedBatchBroker: "test_messages_with_one_key_keep_their_order",
    SecondCloseFailsBroker: "test_aclose_is_idempotent_and_final",
    HoggingBroker: "test_consumers_of_one_group_share_the_work",
    OnePartitionBroker: "test_backlog_reports_partitions",
}


# --- scalers -------------------------------------------------------------------------


class MemoryScaler(Scaler):
    """Counts instances without starting anything."""

    name: ClassVar[str] = "memory"
    options: ClassVar[tuple[Field, ...]] = ()

    def __init__(
        self,
        config: Mapping[str, Any],
        consumer: ConsumerNode,
        *,
        context: BackendContext | None = None,
    ) -> None:
        super().__init__(config, consumer, context=context)
        self.instances = 0
        self.closed = False

    async def current(self) -> int:
        if self.closed:
            raise BackendClosedError("the memory scaler is closed")
        return self.instances

    async def scale(self, instances: int) -> None:
        if self.closed:
            raise BackendClosedError("the memory scaler is closed")
        if instances < 0:
            raise ValueError(f"instances must be 0 or more, not {instances}")
        self.instances = instances

    async def aclose(self) -> None:
        self.closed = True


class NegativeAcceptedScaler(MemoryScaler):
    """Accepts a negative instance count."""

    async def scale(self, instances: int) -> None:
        self.instances = instances


class LaggingScaler(MemoryScaler):
    """Reports the previous count after a scale."""

    previous = 0

    async def current(self) -> int:
        return self.previous

    async def scale(self, instances: int) -> None:
        self.previous, self.instances = self.instances, instances


SCALER_MUTANTS: Mapping[type[MemoryScaler], str] = {
    NegativeAcceptedScaler: "test_negative_instances_are_refused",
    LaggingScaler: "test_scale_up_down_and_to_zero",
}


def consumer_record(name: str = "workers") -> ConsumerNode:
    return ConsumerNode(name=name, consumes="orders", group=name, run="shop.workers:handle")
