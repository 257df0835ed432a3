"""The group's lag, as KEDA's Kafka scaler counts it, and the offsets it is
made of, read through the admin client.

Per partition: the log-end offset (high watermark) minus the group's committed
offset. A partition with no committed offset follows `offset_reset` exactly as
KEDA's `offsetResetPolicy` does (kedacore/keda, pkg/scalers/kafka_scaler.go,
`getLagForPartition`, with its default `scaleToZeroOnInvalidOffset: false`):
`latest` reports a lag of 1, so that one consumer runs to read new messages and
commit; `earliest` reports the log-end offset, everything the group would read.
`ensure_topic` commits the log-end offsets for a group that has none, so a group
it creates counts, and receives, every message published afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, final

from tideflow.plugins.api import BackendError, BacklogReading

from .client import GRACE, bounded, describe

__all__ = ["ClusterOffsets"]


@final
class ClusterOffsets:
    """Offsets of a topic and of its groups, read from the cluster; every read is
    bounded by `request_timeout` and fails as `BackendError`."""

    def __init__(
        self,
        kafka: ModuleType,
        kafka_admin: ModuleType,
        admin: Callable[[], Any],
        request_timeout: float,
    ) -> None:
        """`admin` gives the broker's admin client, made on first use."""
        self.kafka = kafka
        self.kafka_admin = kafka_admin
        self._admin = admin
        self.request_timeout = request_timeout

    async def backlog(self, topic: str, group: str, *, earliest: bool) -> BacklogReading:
        """The group's lag per partition; `earliest`: the group's `offset_reset`."""
        partitions = await self.partition_count(topic)
        ends, committed = await asyncio.gather(
            self.log_ends(topic, range(partitions)), self.committed(topic, group, partitions)
        )
        per_partition: dict[int, int] = {}
        for partition in range(partitions):
            offset = committed[partition]
            # no committed offset: KEDA's offsetResetPolicy (see the module docstring)
            without_offset = ends[partition] if earliest else 1
            lag = ends[partition] - offset if offset >= 0 else without_offset
            per_partition[partition] = max(lag, 0)
        return BacklogReading(
            topic=topic,
            group=group,
            total=sum(per_partition.values()),
            per_partition=per_partition,
            partitions=partitions,
            taken_at=datetime.now(UTC),
        )

    async def partition_count(self, topic: str) -> int:
        kafka = self.kafka
        described = self._admin().describe_topics(
            kafka.TopicCollection([topic]), request_timeout=self.request_timeout
        )
        try:
            description = await bounded(
                described[topic], self.request_timeout + GRACE, f"describing topic {topic!r}"
            )
        except kafka.KafkaException as exc:
            raise BackendError(f"describing topic {topic!r} failed: {describe(exc)}") from None
        return len(description.partitions)

    async def log_ends(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        kafka = self.kafka
        latest = self.kafka_admin.OffsetSpec.latest()
        wanted = {kafka.TopicPartition(topic, p): latest for p in partitions}
        if not wanted:
            return {}
        listed = self._admin().list_offsets(wanted, request_timeout=self.request_timeout)
        try:
            results = await asyncio.gather(
                *(
                    bounded(f, self.request_timeout + GRACE, f"reading offsets of {topic!r}")
                    for f in listed.values()
                )
            )
        except kafka.KafkaException as exc:
            raise BackendError(
                f"reading the log-end offsets of topic {topic!r} failed: {describe(exc)}"
            ) from None
        return {tp.partition: int(r.offset) for tp, r in zip(listed, results, strict=True)}

    async def committed(self, topic: str, group: str, partitions: int) -> dict[int, int]:
        """The group's committed offset per partition; -1 where it has none."""
        kafka = self.kafka
        request = kafka.ConsumerGroupTopicPartitions(
            group, [kafka.TopicPartition(topic, p) for p in range(partitions)]
        )
        listed = self._admin().list_consumer_group_offsets(
            [request], request_timeout=self.request_timeout
        )
        try:
            result = await bounded(
                listed[group], self.request_timeout + GRACE, f"reading offsets of group {group!r}"
            )
        except kafka.KafkaException as exc:
            raise BackendError(
                f"reading the committed offsets of group {group!r} failed: {describe(exc)}"
            ) from None
        committed = dict.fromkeys(range(partitions), -1)
        for tp in result.topic_partitions:
            if tp.error is not None:
                raise BackendError(
                    f"reading the committed offsets of group {group!r} failed: "
                    f"{tp.error.str()} ({tp.error.name()})"
                )
            committed[tp.partition] = max(int(tp.offset), -1)
        return committed

    # --- the delivery ledger (called from members' threads) --------------------------
