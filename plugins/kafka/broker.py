"""The `kafka` broker: the `Broker` interface over the producer, the group
members and the admin client, and its registration."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, final

from tideflow.plugins import builtin_options
from tideflow.plugins.api import (
    BackendClosedError,
    BackendContext,
    BackendError,
    BacklogReading,
    Broker,
    Message,
    OutgoingMessage,
    hookimpl,
)

from .client import GRACE, bounded, client_library, describe, error_name, ms
from .config import ClientSettings
from .lag import ClusterOffsets
from .ledger import DeliveryLedger
from .member import Assignment, Member
from .producer import Batch, Publisher

if TYPE_CHECKING:
    from tideflow.compiler.ir import TopicNode
    from tideflow.plugins.api import BackendRegistry

__all__ = ["KafkaBroker", "tideflow_register_brokers"]

_LOG: Final = logging.getLogger(__name__)


@final
class KafkaBroker(Broker):
    """Apache Kafka (or a Kafka-compatible server) through confluent-kafka.

    Idempotent batched publishing with delivery confirmation, consumer groups with
    cooperative rebalancing and commits of the acknowledged prefix, in-memory
    redelivery of nacked messages, backlog per partition as KEDA reads it. See the
    package's docstring (`tideflow.plugins.kafka`) and its modules' for the
    guarantees.
    """

    name: ClassVar[str] = "kafka"
    partitioned: ClassVar[bool] = True
    options = builtin_options.KAFKA_BROKER

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: Sequence[TopicNode] = (),
        *,
        context: BackendContext | None = None,
    ) -> None:
        super().__init__(config, topics, context=context)
        self._settings = ClientSettings(self.config, self.context.base_dir)
        self.request_timeout = self._settings.request_timeout
        self.kafka, self.kafka_admin = client_library()
        self._ledger = DeliveryLedger(self.kafka, self._admin_client, self.request_timeout)
        self._offsets = ClusterOffsets(
            self.kafka, self.kafka_admin, self._admin_client, self.request_timeout
        )
        self._closed = False
        self._name = f"tideflow-kafka-{self.context.block or 'broker'}"
        self._publisher: Publisher | None = None
        self._admin: Any = None
        self._members: dict[tuple[str, str], Member] = {}
        self._lock = threading.Lock()  # guards the lazily made clients

    def client_conf(self, client: str) -> dict[str, Any]:
        """librdkafka settings of one client ("producer", "consumer" or "admin")."""
        return self._settings.client_conf(client)

    # --- clients -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackendClosedError(
                f'the kafka broker "{self.context.block or "kafka"}" is closed'
            )

    def _admin_client(self) -> Any:
        with self._lock:
            if self._admin is None:
                self._admin = self.kafka_admin.AdminClient(self.client_conf("admin"))
            return self._admin

    def _publisher_for_use(self) -> Publisher:
        with self._lock:
            publisher = self._publisher
            if publisher is not None and publisher.broken is None:
                return publisher
            if publisher is not None:
                _LOG.warning("kafka producer failed (%s); making a new one", publisher.broken)
                publisher.close()
            self._publisher = Publisher(
                self.kafka, self._settings.producer_conf(), self._name, self.request_timeout
            )
            return self._publisher

    def _member(self, topic: str, group: str) -> Member:
        with self._lock:
            member = self._members.get((topic, group))
            if member is None:
                member = self._members[(topic, group)] = Member(
                    self, self.kafka, self._settings, self._ledger, topic, group
                )
            return member

    # --- the Broker interface ------------------------------------------------------

    async def ensure_topic(self, topic: str, groups: Sequence[str] = ()) -> None:
        node = self.topic(topic)
        self._check_open()
        api = self.kafka_admin
        admin = self._admin_client()
        timeout = self.request_timeout
        settings = {}
        if node.retention is not None:
            settings["retention.ms"] = str(ms(node.retention))
        new = api.NewTopic(
            topic, num_partitions=node.partitions, replication_factor=-1, config=settings
        )
        created = admin.create_topics([new], request_timeout=timeout, operation_timeout=timeout)
        try:
            await bounded(created[topic], timeout + GRACE, f"creating topic {topic!r}")
        except self.kafka.KafkaException as exc:
            if error_name(exc) != "TOPIC_ALREADY_EXISTS":
                raise BackendError(f"creating topic {topic!r} failed: {describe(exc)}") from None
            existing = await self._offsets.partition_count(topic)
            if existing < node.partitions:
                grown = admin.create_partitions(
                    [api.NewPartitions(topic, node.partitions)], request_timeout=timeout
                )
                try:
                    await bounded(grown[topic], timeout + GRACE, f"growing topic {topic!r}")
                except self.kafka.KafkaException as grow_exc:
                    raise BackendError(
                        f"topic {topic!r} has {existing} partitions and could not grow to "
                        f"{node.partitions}: {describe(grow_exc)}"
                    ) from None
        partitions = await self._offsets.partition_count(topic)
        for group in dict.fromkeys(groups):
            await self._start_group_at_end(topic, group, partitions)

    async def _start_group_at_end(self, topic: str, group: str, partitions: int) -> None:
        """Commit the log-end offset of every partition the group has no offset for."""
        committed = await self._offsets.committed(topic, group, partitions)
        missing = [p for p, offset in committed.items() if offset < 0]
        if not missing:
            return
        ends = await self._offsets.log_ends(topic, missing)
        kafka = self.kafka
        request = kafka.ConsumerGroupTopicPartitions(
            group, [kafka.TopicPartition(topic, p, ends[p]) for p in missing]
        )
        admin = self._admin_client()
        altered = admin.alter_consumer_group_offsets(
            [request], request_timeout=self.request_timeout
        )
        try:
            await bounded(altered[group], self.request_timeout + GRACE, f"starting group {group!r}")
        except kafka.KafkaException as exc:
            # a group with members cannot be moved by others: its members' own
            # offset_reset decides where it starts
            if error_name(exc) not in {
                "UNKNOWN_MEMBER_ID",
                "REBALANCE_IN_PROGRESS",
                "ILLEGAL_GENERATION",
                "GROUP_SUBSCRIBED_TO_TOPIC",
            }:
                raise BackendError(
                    f"starting group {group!r} on topic {topic!r} failed: {describe(exc)}"
                ) from None

    async def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> None:
        self.topic(topic)
        self._check_open()
        if not messages:
            return
        if not all(
            isinstance(m.value, bytes) and (m.key is None or isinstance(m.key, bytes))
            for m in messages
        ):
            raise TypeError("a message's value and key must be bytes")
        publisher = self._publisher_for_use()
        timeout = self.request_timeout
        batch = Batch(
            publisher, topic, messages, time.monotonic() + timeout, asyncio.get_running_loop()
        )
        publisher.submit(batch)
        try:
            # librdkafka reports every message by its message.timeout.ms (`timeout`)
            async with asyncio.timeout(timeout + 2 * GRACE):
                await batch.done
        except TimeoutError:
            raise BackendError(
                f"publishing to topic {topic!r}: {batch.left} of {len(messages)} messages "
                f"unacknowledged after {timeout + 2 * GRACE:g}s"
            ) from None
        if batch.failures:
            raise BackendError(
                f"publishing to topic {topic!r}: {batch.failures} of {len(messages)} messages "
                f"were not acknowledged: {batch.first_error}"
            )

    async def consume(
        self, topic: str, group: str, *, max_messages: int = 100, wait: float = 1.0
    ) -> list[Message]:
        self.topic(topic)
        self._check_open()
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, not {max_messages}")
        member = self._member(topic, group)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait, 0.0)
        while True:
            taken = member.hand_out(max_messages)
            remaining = deadline - loop.time()
            if taken or remaining <= 0:
                return taken
            waiter, due = member.wait_for_records(loop)
            if waiter is None:
                if member.closed or member.fatal is not None:
                    return member.hand_out(max_messages)  # raises for a failure
                continue  # records or a nacked message came meanwhile
            try:
                async with asyncio.timeout(min(remaining, due)):
                    await waiter
            except TimeoutError:
                pass

    async def keep_membership(self, topic: str, group: str) -> None:
        """Keep the member's thread polling (rebalance callbacks are served only
        within `poll`) while the consumer, busy with what it holds, does not call
        `consume`."""
        self.topic(topic)
        self._check_open()
        self._member(topic, group).keep_polling()

    def assigned_partitions(self, topic: str, group: str) -> list[int]:
        """The partitions of `topic` assigned to this consumer of `group` now."""
        with self._lock:
            member = self._members.get((topic, group))
        return [] if member is None else member.partitions()

    def _members_of(self, messages: Sequence[Message]) -> dict[Member, list[Message]]:
        """Messages by the member that delivered them; `BackendError` for a message
        this broker did not deliver."""
        by_member: dict[Member, list[Message]] = {}
        member: Member | None = None
        mine: list[Message] = []
        for message in messages:
            receipt = message.receipt
            if type(receipt) is not Assignment or receipt.member.owner is not self:
                raise BackendError(
                    f"message {message.id} of topic {message.topic!r} (partition "
                    f"{message.partition}) was not received from this kafka broker"
                )
            if receipt.member is not member:
                member = receipt.member
                mine = by_member.setdefault(member, [])
            mine.append(message)
        return by_member

    async def ack(self, messages: Sequence[Message]) -> None:
        self._check_open()
        for member, mine in self._members_of(messages).items():
            member.acknowledge(mine)

    async def nack(self, messages: Sequence[Message], *, delay: float = 0.0) -> None:
        if delay < 0:
            raise ValueError(f"a nack delay cannot be negative, not {delay:g}")
        self._check_open()
        for member, mine in self._members_of(messages).items():
            member.reject(mine, delay)

    async def backlog(self, topic: str, group: str) -> BacklogReading:
        self.topic(topic)
        self._check_open()
        earliest = self.config["offset_reset"] == "earliest"
        return await self._offsets.backlog(topic, group, earliest=earliest)

    async def aclose(self) -> None:
        """Commit what was acknowledged, leave the groups, deliver what is being
        published; idempotent, and bounded by `request_timeout` per client."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            members = list(self._members.values())
            publisher = self._publisher
            self._members.clear()
            self._publisher = None
        timeout = self.request_timeout + GRACE
        closing: list[tuple[str, concurrent.futures.Future[Any]]] = [
            (f"leaving group {m.group!r}", m.close()) for m in members
        ]
        if publisher is not None:
            closing.append(("flushing the producer", publisher.close()))
        outcomes = await asyncio.gather(
            *(bounded(future, timeout + GRACE, what) for what, future in closing),
            return_exceptions=True,
        )
        for (what, _), outcome in zip(closing, outcomes, strict=True):
            if isinstance(outcome, BaseException):  # closing releases whatever failed before
                _LOG.warning("closing kafka broker: %s: %s", what, describe(outcome))
            elif isinstance(outcome, int) and outcome:
                _LOG.warning("closing kafka broker: %d messages left undelivered", outcome)

    # --- cluster reads (admin client) ------------------------------------------------


@hookimpl
def tideflow_register_brokers(registry: BackendRegistry[Broker]) -> None:
    """Register the `kafka` broker."""
    registry.register(KafkaBroker)
