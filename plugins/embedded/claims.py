"""Delivery: claiming messages of the partitions a member owns, leasing them,
and their acknowledgement, nack or return.

Delivery and ordering
    `consume` claims, in one transaction, up to `max_messages` messages of the
    partitions this consumer owns: first those due again (nacked, released by a
    consumer that closed, or whose lease ran out), then new ones, each partition in
    offset order, and leases them for `visibility_timeout`. So two consumers never
    hold the same message at once, and messages of one partition are delivered, and
    processed, in publish order. The exceptions are the ones at-least-once brings: a
    redelivered message comes after newer messages that were delivered while it was
    away, and a message nacked with a `delay` does not hold back its partition.

    Unacknowledged messages come back after `visibility_timeout` (the member that
    held them is gone or too slow), at once when their consumer calls `aclose`, or
    after the `delay` given to `nack`. `delivery_count` grows with each delivery. An
    acknowledgement that arrives after the lease ran out still counts (the message
    was handled); a `nack` from a consumer whose lease ran out is ignored.
"""

from __future__ import annotations

import json
import operator
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, cast, final

from tideflow.plugins.api import BackendError, Message

from . import groups, storage

if TYPE_CHECKING:
    from tideflow.compiler.ir import TopicNode

__all__ = [
    "RECLAIM_MAX",
    "Claimant",
    "Receipt",
    "acknowledge",
    "contiguous_runs",
    "give_back",
    "message",
    "release",
]

#: Longest a waiting consumer goes without claiming again, whatever it expects.
RECLAIM_MAX: Final = 1.0

# shared by every message without headers: an immutable empty mapping
NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})
_ID: Final = operator.attrgetter("id")
_RECEIPT: Final = operator.attrgetter("receipt")


@final
@dataclass(frozen=True, slots=True, eq=False)
class Receipt:
    """What `Message.receipt` holds: the file and the partition the message came
    from. One is shared by the messages of one partition in one claim, so `ack`
    groups messages by receipt, hashed by identity, without reading their fields."""

    path: str
    topic: str
    group: str
    partition: int


@final
class Claimant:
    """A broker object as a consumer of its groups: claims messages of the
    partitions it owns (taking its share first), and recognises its receipts."""

    def __init__(self, path: Path, member: str, lease: float) -> None:
        """`member`: its identity in the groups; `lease`: the visibility timeout."""
        self.path = path
        self.path_text = str(path)
        self.member = member
        self.lease = lease
        self._rotation = 0

    def claim(
        self, conn: sqlite3.Connection, node: TopicNode, group: str, limit: int, now: float
    ) -> tuple[list[Message], float]:
        """Lease up to `limit` messages (in one transaction: `conn`'s); returns them
        and the clock time by which claiming again may find something new."""
        topic, me = node.name, self.member
        lease = self.lease
        partitions = storage.topic_partitions(conn, node, self.path)
        cursors = groups.ensure_cursors(conn, topic, group, partitions, start="oldest")
        live, my_expiry, others_expire = groups.join(conn, topic, group, me, lease, now)
        owned = groups.rebalance(conn, topic, group, cursors, live, partitions, me)
        fetched = {part: position for part, position, _ in cursors}

        # Per partition: the earliest lease another member holds (nothing is
        # delivered from it before then), the earliest time something becomes
        # visible, and whether messages are due again now.
        blocked: dict[int, float] = {}
        redeliveries: set[int] = set()
        next_due = min(others_expire, my_expiry - lease / 2, now + RECLAIM_MAX)
        for part, others_lease, due, redeliverable in conn.execute(
            "SELECT part, "
            "MIN(CASE WHEN holder != :me AND visible_at > :now THEN visible_at END), "
            "MIN(CASE WHEN visible_at > :now THEN visible_at END), "
            "SUM(visible_at <= :now) "
            "FROM inflight WHERE topic = :topic AND grp = :grp GROUP BY part",
            {"me": me, "now": now, "topic": topic, "grp": group},
        ):
            if part not in owned:
                continue
            if due is not None:
                next_due = min(next_due, due)
            if others_lease is not None:
                blocked[part] = others_lease
            if redeliverable:
                redeliveries.add(part)

        until = now + lease
        order = sorted(owned)
        if order:  # start at another partition each time, for fairness between them
            self._rotation = (self._rotation + 1) % len(order)
            order = order[self._rotation :] + order[: self._rotation]
        messages: list[Message] = []
        for part in order:
            if len(messages) >= limit:
                break
            if part not in blocked:
                messages += self._claim_partition(
                    conn,
                    topic,
                    group,
                    part,
                    fetched[part],
                    limit - len(messages),
                    now,
                    until,
                    redeliver=part in redeliveries,
                )
        return messages, next_due

    def _claim_partition(
        self,
        conn: sqlite3.Connection,
        topic: str,
        group: str,
        part: int,
        fetched: int,
        limit: int,
        now: float,
        until: float,
        *,
        redeliver: bool,
    ) -> list[Message]:
        """Lease up to `limit` messages of one partition: those due again first
        (when `redeliver`: there are some), then new ones, in offset order."""
        me = self.member
        receipt = Receipt(self.path_text, topic, group, part)
        messages: list[Message] = []
        if redeliver:
            due = conn.execute(
                "SELECT seq, delivery_count FROM inflight WHERE topic = ? AND grp = ? "
                "AND part = ? AND visible_at <= ? ORDER BY seq LIMIT ?",
                (topic, group, part, now, limit),
            ).fetchall()
            gone: list[tuple[str, str, int, int]] = []
            leased: list[tuple[str, float, str, str, int, int]] = []
            for seq, count in due:
                row = conn.execute(
                    "SELECT msg_key, msg_value, headers FROM messages "
                    "WHERE topic = ? AND part = ? AND seq = ?",
                    (topic, part, seq),
                ).fetchone()
                if row is None:  # dropped by retention while away
                    gone.append((topic, group, part, seq))
                    continue
                leased.append((me, until, topic, group, part, seq))
                messages.append(message(receipt, seq, count + 1, *row))
            conn.executemany(
                "DELETE FROM inflight WHERE topic = ? AND grp = ? AND part = ? AND seq = ?", gone
            )
            conn.executemany(
                "UPDATE inflight SET holder = ?, visible_at = ?, "
                "delivery_count = delivery_count + 1 "
                "WHERE topic = ? AND grp = ? AND part = ? AND seq = ?",
                leased,
            )
        if len(messages) >= limit:
            return messages
        fresh = conn.execute(
            # the offset as text, as `Message.id` wants it: cheaper in SQLite than
            # str() per message
            "SELECT CAST(seq AS TEXT), msg_key, msg_value, headers FROM messages "
            "WHERE topic = ? AND part = ? AND seq >= ? ORDER BY seq LIMIT ?",
            (topic, part, fetched, limit - len(messages)),
        ).fetchall()
        if not fresh:
            return messages
        first, last = int(fresh[0][0]), int(fresh[-1][0])
        # the log has no gaps: these are exactly the rows just read
        conn.execute(
            "INSERT INTO inflight (topic, grp, part, seq, delivery_count, holder, visible_at) "
            "SELECT topic, ?, part, seq, 1, ?, ? FROM messages "
            "WHERE topic = ? AND part = ? AND seq BETWEEN ? AND ?",
            (group, me, until, topic, part, first, last),
        )
        conn.execute(
            "UPDATE cursors SET fetched = ? WHERE topic = ? AND grp = ? AND part = ?",
            (last + 1, topic, group, part),
        )
        messages += [
            Message(
                topic,
                group,
                value,
                key,
                json.loads(headers) if headers else NO_HEADERS,
                part,
                seq,
                1,
                receipt,
            )
            for seq, key, value, headers in fresh
        ]
        return messages

    def receipts_of(self, messages: Sequence[Message]) -> set[Receipt]:
        """The messages' receipts; refuses messages that did not come from a broker
        on this file."""
        try:
            receipts: set[object] = set(map(_RECEIPT, messages))
        except TypeError:  # an unhashable receipt: not ours
            receipts = {None}
        if all(type(r) is Receipt and r.path == self.path_text for r in receipts):
            return cast("set[Receipt]", receipts)
        stranger = next(
            m
            for m in messages
            if type(m.receipt) is not Receipt or m.receipt.path != self.path_text
        )
        raise BackendError(
            f"message {stranger.id} of topic {stranger.topic!r} was not received from "
            f"the embedded broker on {self.path}"
        )


def message(
    receipt: Receipt,
    seq: int,
    delivery_count: int,
    key: bytes | None,
    value: bytes,
    headers: str | None,
) -> Message:
    return Message(
        receipt.topic,
        receipt.group,
        value,
        key,
        json.loads(headers) if headers else NO_HEADERS,
        receipt.partition,
        str(seq),
        delivery_count,
        receipt,
    )


def contiguous_runs(
    messages: Sequence[Message], receipts: set[Receipt]
) -> list[tuple[str, str, int, int, int]]:
    """The messages' offsets as (topic, group, partition, first, last) runs of
    consecutive offsets: one range delete each instead of one delete per message."""
    if len(receipts) == 1:
        # the usual case, (part of) one claim of one partition
        (receipt,) = receipts
        seqs = list(map(int, map(_ID, messages)))
        low, high = min(seqs), max(seqs)
        if high - low == len(seqs) - 1 and len(set(seqs)) == len(seqs):
            # distinct offsets that span exactly their number: one run
            return [(receipt.topic, receipt.group, receipt.partition, low, high)]
    offsets: dict[tuple[str, str, int], list[int]] = {}
    for m in messages:
        offsets.setdefault((m.topic, m.group, m.partition), []).append(int(m.id))
    runs: list[tuple[str, str, int, int, int]] = []
    for (topic, group, part), unsorted in offsets.items():
        ordered = sorted(unsorted)
        start = last = ordered[0]
        for seq in ordered[1:]:
            if seq > last + 1:
                runs.append((topic, group, part, start, last))
                start = seq
            last = seq
        runs.append((topic, group, part, start, last))
    return runs


def acknowledge(conn: sqlite3.Connection, runs: Sequence[tuple[str, str, int, int, int]]) -> None:
    """Forget delivered messages, by runs of offsets (`contiguous_runs`)."""
    conn.executemany(
        "DELETE FROM inflight WHERE topic = ? AND grp = ? AND part = ? AND seq BETWEEN ? AND ?",
        runs,
    )


def release(
    conn: sqlite3.Connection, rows: Sequence[tuple[str, str, int, int, int]], visible_at: float
) -> None:
    """Nack: (topic, group, partition, offset, delivery count) rows become visible
    again at `visible_at`; a row delivered again meanwhile is left alone."""
    conn.executemany(
        "UPDATE inflight SET holder = NULL, visible_at = ? "
        "WHERE topic = ? AND grp = ? AND part = ? AND seq = ? AND delivery_count = ?",
        [(visible_at, *row) for row in rows],
    )


def give_back(conn: sqlite3.Connection, rows: Sequence[tuple[str, str, int, int]]) -> None:
    """Undo the claim of (topic, group, partition, offset) rows that their caller
    never received: visible at once, their delivery not counted."""
    conn.executemany(
        "UPDATE inflight SET holder = NULL, visible_at = 0, "
        "delivery_count = delivery_count - 1 "
        "WHERE topic = ? AND grp = ? AND part = ? AND seq = ?",
        rows,
    )
