"""Delivery counts, recorded in "ledger" consumer groups.

Kafka does not count deliveries. A member records how far it delivered
each partition in "ledger" consumer groups, `<group>.tideflow-delivered-<k>`,
which never have members: the committed offset of level k is one past the last
offset delivered with `delivery_count == k`. A message at offset o is delivered
with a count of 1 + the number of levels beyond o. Partitions are read in
order from the committed offset, so a level beyond o means that o itself was
delivered that often: the count is a lower bound, and a redelivery after a
crash or a rebalance counts, so a message that kills its consumer every time
is eventually dead-lettered. The first level is sent (an asynchronous commit)
before a batch is handed out; a consumer killed within the millisecond or so
before it lands counts that batch low, never high. Nacks are counted in memory
only. Offset-commit metadata would be the usual place for this, but some
Kafka-compatible servers drop it (Tansu 0.6 does). Up to `LEDGER_LEVELS`
levels are kept; with ACLs the client needs access to these groups too.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, Final, final

from .client import GRACE, describe

__all__ = ["LEDGER_LEVELS", "DeliveryLedger", "ledger_group"]

_LOG: Final = logging.getLogger(__name__)

#: Delivery counts are recorded up to this many deliveries.
LEDGER_LEVELS: Final = 10


def ledger_group(group: str, level: int) -> str:
    """The consumer group whose committed offsets record how far `group` delivered
    each partition with a delivery count of `level`."""
    return f"{group}.tideflow-delivered-{level}"


@final
class DeliveryLedger:
    """Reads and writes the ledger groups through the admin client; called from
    the members' threads."""

    def __init__(self, kafka: ModuleType, admin: Callable[[], Any], request_timeout: float) -> None:
        """`admin` gives the broker's admin client, made on first use."""
        self.kafka = kafka
        self._admin = admin
        self.request_timeout = request_timeout

    def read(self, topic: str, group: str, partitions: list[int]) -> dict[int, list[int]]:
        """Per partition, the ledger ends of every level (see the module docstring);
        empty lists when they cannot be read (delivery counts start at 1 then)."""
        kafka = self.kafka
        admin = self._admin()
        requests = [
            admin.list_consumer_group_offsets(
                [
                    kafka.ConsumerGroupTopicPartitions(
                        ledger_group(group, level),
                        [kafka.TopicPartition(topic, p) for p in partitions],
                    )
                ],
                request_timeout=self.request_timeout,
            )[ledger_group(group, level)]
            for level in range(1, LEDGER_LEVELS + 1)
        ]
        ledgers: dict[int, list[int]] = {p: [] for p in partitions}
        try:
            for future in requests:
                ends = {
                    tp.partition: int(tp.offset)
                    for tp in future.result(self.request_timeout + GRACE).topic_partitions
                    if tp.error is None
                }
                for partition in partitions:
                    ledgers[partition].append(max(ends.get(partition, -1), -1))
        except Exception as exc:
            _LOG.warning(
                "kafka group %r: delivery counts unknown (reading them failed: %s)",
                group,
                describe(exc),
            )
            return {p: [] for p in partitions}
        for ledger in ledgers.values():
            while ledger and ledger[-1] < 0:
                ledger.pop()
        return ledgers

    def write(
        self, topic: str, group: str, level: int, ends: Mapping[int, int]
    ) -> concurrent.futures.Future[Any]:
        """Send new ends of one ledger level as an admin request."""
        kafka = self.kafka
        name = ledger_group(group, level)
        request = kafka.ConsumerGroupTopicPartitions(
            name, [kafka.TopicPartition(topic, p, end) for p, end in ends.items()]
        )
        altered = self._admin().alter_consumer_group_offsets(
            [request], request_timeout=self.request_timeout
        )
        future: concurrent.futures.Future[Any] = altered[name]
        return future
