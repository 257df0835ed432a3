"""Consumer groups: where each group is in each partition (cursors), its members,
and which member owns which partition.

Consumer groups
    Per (group, partition) the file keeps `fetched`, the first offset never
    delivered, and one `inflight` row per delivered offset not yet acknowledged
    (who holds it, until when, how often it was delivered). Acknowledging deletes
    the row, so the committed offset, before which everything is acknowledged, is
    the lowest in-flight offset, or `fetched` when nothing is in flight.

    Like Kafka, a partition is owned by one consumer of the group at a time. Every
    broker object that consumes is a member of the group, with a heartbeat that
    lapses after `visibility_timeout` and that `consume` renews once half of it has
    passed (a consumer waiting in `consume` renews it by itself). Members in order of
    joining share the partitions: with P partitions and n live members the first
    P % n take P // n + 1 and the others P // n (consumers beyond P idle, which is
    why the autoscaler caps instances at the partition count). A member above its
    share gives partitions up; one below takes free ones. A new owner delivers
    nothing from a partition while messages of it are still leased, unexpired, by
    another member, so a partition is never processed by two consumers at once.

Backlog
    Per partition: messages not yet delivered (`log_end - fetched`) plus messages in
    flight (delivered, not acknowledged); that is `log_end - committed offset`
    whenever acknowledgements come in order. A group made by `ensure_topic` starts
    at the end of the log: it counts, and gets, only messages published afterwards.
    A group that first appears in `consume` starts at the oldest message kept.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tideflow.plugins.api import BacklogReading

if TYPE_CHECKING:
    from tideflow.compiler.ir import TopicNode

__all__ = ["backlog", "ensure_cursors", "join", "leave", "owned_partitions", "rebalance"]


def ensure_cursors(
    conn: sqlite3.Connection, topic: str, group: str, partitions: int, *, start: str
) -> list[tuple[int, int, str | None]]:
    """The group's (partition, fetched, owner) rows, made where missing. A new
    group starts at the end of each log (`start="end"`) or at the oldest message
    kept (`"oldest"`); partitions added to an existing group start at their
    beginning, as they are newer than the group."""
    cursors: list[tuple[int, int, str | None]] = conn.execute(
        "SELECT part, fetched, owner FROM cursors WHERE topic = ? AND grp = ? ORDER BY part",
        (topic, group),
    ).fetchall()
    if len(cursors) >= partitions:
        return cursors
    column = "log_end" if start == "end" and not cursors else "log_start"
    conn.execute(
        f"INSERT OR IGNORE INTO cursors (topic, grp, part, fetched, owner) "
        f"SELECT topic, ?, part, {column}, NULL FROM partitions WHERE topic = ?",
        (group, topic),
    )
    result: list[tuple[int, int, str | None]] = conn.execute(
        "SELECT part, fetched, owner FROM cursors WHERE topic = ? AND grp = ? ORDER BY part",
        (topic, group),
    ).fetchall()
    return result


def join(
    conn: sqlite3.Connection, topic: str, group: str, me: str, lease: float, now: float
) -> tuple[list[str], float, float]:
    """Keep member `me` live in the group for `lease` seconds more once half of its
    lease has passed; returns the live members in order of joining, `me`'s expiry
    and the earliest expiry of another."""
    rows = conn.execute(
        "SELECT member, expires FROM members WHERE topic = ? AND grp = ? ORDER BY joined, member",
        (topic, group),
    ).fetchall()
    if any(expires <= now for _, expires in rows):
        conn.execute(
            "DELETE FROM members WHERE topic = ? AND grp = ? AND expires <= ?",
            (topic, group, now),
        )
    live = [(member, expires) for member, expires in rows if expires > now]
    mine = [expires for member, expires in live if member == me]
    my_expiry = mine[0] if mine else 0.0
    if not mine:
        conn.execute(
            "INSERT INTO members (topic, grp, member, joined, expires) VALUES "
            "(?, ?, ?, (SELECT COALESCE(MAX(joined), 0) + 1 FROM members "
            "WHERE topic = ? AND grp = ?), ?) "
            "ON CONFLICT (topic, grp, member) DO UPDATE SET "
            "joined = excluded.joined, expires = excluded.expires",
            (topic, group, me, topic, group, now + lease),
        )
        live.append((me, now + lease))
        my_expiry = now + lease
    elif my_expiry - now < lease / 2:
        my_expiry = now + lease
        conn.execute(
            "UPDATE members SET expires = ? WHERE topic = ? AND grp = ? AND member = ?",
            (my_expiry, topic, group, me),
        )
    others = [expires for member, expires in live if member != me]
    return [member for member, _ in live], my_expiry, min(others, default=float("inf"))


def rebalance(
    conn: sqlite3.Connection,
    topic: str,
    group: str,
    cursors: Sequence[tuple[int, int, str | None]],
    live: Sequence[str],
    partitions: int,
    me: str,
) -> set[int]:
    """Give up or take partitions so that member `me` owns its share; returns
    the partitions it owns now."""
    rank, members = live.index(me), len(live)
    share = partitions // members + (1 if rank < partitions % members else 0)
    owned = [part for part, _, owner in cursors if owner == me]
    alive = set(live)
    if len(owned) > share:
        conn.executemany(
            "UPDATE cursors SET owner = NULL WHERE topic = ? AND grp = ? AND part = ?",
            [(topic, group, part) for part in owned[share:]],
        )
        owned = owned[:share]
    elif len(owned) < share:
        free = [part for part, _, owner in cursors if owner is None or owner not in alive]
        taken = free[: share - len(owned)]
        conn.executemany(
            "UPDATE cursors SET owner = ? WHERE topic = ? AND grp = ? AND part = ?",
            [(me, topic, group, part) for part in taken],
        )
        owned += taken
    return set(owned)


def leave(conn: sqlite3.Connection, me: str) -> None:
    """Give back what member `me` holds (delivered again at once) and leave every
    group."""
    conn.execute("UPDATE inflight SET holder = NULL, visible_at = 0 WHERE holder = ?", (me,))
    conn.execute("UPDATE cursors SET owner = NULL WHERE owner = ?", (me,))
    conn.execute("DELETE FROM members WHERE member = ?", (me,))


def owned_partitions(conn: sqlite3.Connection, topic: str, group: str, me: str) -> list[int]:
    """The partitions of `topic` member `me` owns in `group`."""
    rows = conn.execute(
        "SELECT part FROM cursors WHERE topic = ? AND grp = ? AND owner = ? ORDER BY part",
        (topic, group, me),
    )
    return [int(part) for (part,) in rows]


def backlog(conn: sqlite3.Connection, node: TopicNode, group: str) -> BacklogReading:
    """The group's backlog per partition: messages not yet delivered plus those in
    flight (see "Backlog" in the module docstring)."""
    topic = node.name
    stored = conn.execute("SELECT partitions FROM topics WHERE topic = ?", (topic,)).fetchone()
    partitions = max(node.partitions, stored[0] if stored else 0)
    ends = {
        part: (start, end)
        for part, start, end in conn.execute(
            "SELECT part, log_start, log_end FROM partitions WHERE topic = ?", (topic,)
        )
    }
    fetched = dict(
        conn.execute(
            "SELECT part, fetched FROM cursors WHERE topic = ? AND grp = ?",
            (topic, group),
        ).fetchall()
    )
    inflight = dict(
        conn.execute(
            "SELECT part, COUNT(*) FROM inflight WHERE topic = ? AND grp = ? GROUP BY part",
            (topic, group),
        ).fetchall()
    )
    per_partition: dict[int, int] = {}
    for part in range(partitions):
        start, end = ends.get(part, (0, 0))
        # a group not made yet would start at the oldest message kept
        position = fetched.get(part, start)
        per_partition[part] = max(end - position, 0) + inflight.get(part, 0)
    return BacklogReading(
        topic=topic,
        group=group,
        total=sum(per_partition.values()),
        per_partition=per_partition,
        partitions=partitions,
        taken_at=datetime.now(UTC),
    )
