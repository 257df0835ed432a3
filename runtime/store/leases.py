"""The leader lease: one row per set of flows; the orchestrator holding it leads them.

Every decision about time is the database's: `expires_at` and the other times are
seconds since the epoch by the database's clock (`now()` below), so orchestrators on
hosts whose clocks differ agree on when a lease has expired. The one clock assumption
left is the holder's own: it stops acting when its *local* monotonic clock says that
`lease - renew` seconds have passed since the start of its last successful renewal,
which is before the database can consider the lease expired so long as the two clocks
run at about the same rate (not the same time).

Acquiring and renewing are one conditional UPDATE each (`... WHERE holder = me OR
holder IS NULL OR expires_at < now`); the very first acquisition of a key inserts the
row first. The token grows by one whenever the holder changes, and only then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from . import tables as t
from .base import StoreBase
from .errors import StoreError
from .urls import safe_url, sqlite_file

__all__ = ["LeaseGrant", "LeaseQueries", "LeaseState", "lease_key"]


def lease_key(flows: list[str] | tuple[str, ...]) -> str:
    """The lease of a set of flows: their names, sorted, comma-joined."""
    return ",".join(sorted(flows))


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """What `acquire_lease` answers to the orchestrator that got (or kept) the lease."""

    key: str
    holder: int
    token: int
    new_term: bool  # the holder changed: a takeover (or the first leader)
    previous_holder: int | None  # who led before this term
    released: bool  # that term ended by a graceful release, not by expiry
    expires_in: float  # seconds, by the database's clock


@dataclass(frozen=True, slots=True)
class LeaseState:
    """A lease as `tideflow status`, the dashboard and /metrics show it."""

    key: str
    holder: int | None  # None: released, nobody leads
    token: int
    acquired_at: float  # epoch seconds, database clock
    renewed_at: float
    expires_at: float
    expires_in: float  # seconds from the database's now; negative: expired
    released_at: float | None
    previous_holder: int | None
    previous_expires_at: float | None

    @property
    def led(self) -> bool:
        return self.holder is not None and self.expires_in > 0


class LeaseQueries(StoreBase):
    def _db_now(self) -> sa.ColumnElement[float]:
        """Seconds since the epoch by the database's clock, the same value throughout one
        statement (the statement's start, not the transaction's)."""
        if self.engine.dialect.name == "postgresql":
            return sa.literal_column("extract(epoch from statement_timestamp())", sa.Float)
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float)

    def check_lease_support(self) -> None:
        """StoreError when this store cannot hold a lease that other orchestrators see:
        an in-memory SQLite database belongs to one process alone."""
        if self.engine.dialect.name == "sqlite" and sqlite_file(self.url) is None:
            raise StoreError(
                f"the state store {safe_url(self.url)} is an in-memory SQLite database, which "
                "no other process can open: orchestrators cannot share a lease in it; use a "
                "SQLite file (several orchestrators on one host) or PostgreSQL (several hosts)"
            )

    def acquire_lease(
        self, key: str, holder: int, seconds: float, *, steal_from: Sequence[int] = ()
    ) -> LeaseGrant | None:
        """Take or renew the lease `key` for `seconds`; None when another holder's lease
        has not expired. Taking it from another holder (or after a release) grows the
        token. `steal_from`: holders known to be dead (a process of this host that is
        gone), whose lease is taken without waiting for it to expire."""
        grant = self._try_acquire(key, holder, seconds, steal_from)
        if grant is not None:
            return grant
        lease = t.leader_leases
        with self._write() as conn:
            exists = conn.execute(sa.select(lease.c.key).where(lease.c.key == key)).first()
            if exists is None:
                # the first orchestrator of these flows ever: a row nobody holds; a
                # concurrent first one inserting the same key makes one of us fail here
                try:
                    with conn.begin_nested():
                        conn.execute(
                            sa.insert(lease).values(
                                key=key,
                                holder=None,
                                token=0,
                                acquired_at=0.0,
                                renewed_at=0.0,
                                expires_at=0.0,
                            )
                        )
                except sa.exc.IntegrityError:
                    return None
        return self._try_acquire(key, holder, seconds, steal_from)

    def _try_acquire(
        self, key: str, holder: int, seconds: float, steal_from: Sequence[int]
    ) -> LeaseGrant | None:
        lease = t.leader_leases
        now = self._db_now()
        mine = lease.c.holder == holder
        free = sa.or_(mine, lease.c.holder.is_(None), lease.c.expires_at < now)
        if steal_from:
            free = sa.or_(free, lease.c.holder.in_(list(steal_from)))
        statement = (
            sa.update(lease)
            .where(lease.c.key == key, free)
            .values(
                token=sa.case((mine, lease.c.token), else_=lease.c.token + 1),
                holder=holder,
                acquired_at=sa.case((mine, lease.c.acquired_at), else_=now),
                renewed_at=now,
                expires_at=now + seconds,
                previous_holder=sa.case(
                    (mine, lease.c.previous_holder),
                    (lease.c.holder.is_(None), lease.c.previous_holder),
                    else_=lease.c.holder,
                ),
                previous_expires_at=sa.case(
                    (mine, lease.c.previous_expires_at),
                    (lease.c.holder.is_(None), lease.c.released_at),
                    else_=lease.c.expires_at,
                ),
                # kept while the holder stays, and across a release: how the previous term
                # ended (None: by expiry)
                released_at=sa.case(
                    (mine, lease.c.released_at),
                    (lease.c.holder.is_(None), lease.c.released_at),
                    else_=None,
                ),
            )
            .returning(
                lease.c.token,
                lease.c.acquired_at,
                lease.c.renewed_at,
                lease.c.previous_holder,
                lease.c.previous_expires_at,
                lease.c.released_at,
                lease.c.expires_at,
            )
        )
        with self._write_one() as conn:  # one statement: commits alone
            row = conn.execute(statement).first()
        if row is None:
            return None
        new_term = row.acquired_at == row.renewed_at
        return LeaseGrant(
            key=key,
            holder=holder,
            token=int(row.token),
            new_term=new_term,
            previous_holder=row.previous_holder,
            released=new_term and row.released_at is not None,
            expires_in=float(row.expires_at - row.renewed_at),
        )

    def renew_lease(self, key: str, holder: int, token: int, seconds: float) -> bool:
        """Extend the lease held with `token` by `seconds` from the database's now; False
        when it is no longer held with that token (another orchestrator took it)."""
        lease = t.leader_leases
        now = self._db_now()
        with self._write_one() as conn:
            result = conn.execute(
                sa.update(lease)
                .where(lease.c.key == key, lease.c.holder == holder, lease.c.token == token)
                .values(renewed_at=now, expires_at=now + seconds)
            )
            return bool(result.rowcount)

    def release_lease(self, key: str, holder: int, token: int) -> bool:
        """Give the lease up at once (a graceful stop), so a standby need not wait for it
        to expire; False when it was not held with `token` any more."""
        lease = t.leader_leases
        now = self._db_now()
        with self._write_one() as conn:
            result = conn.execute(
                sa.update(lease)
                .where(lease.c.key == key, lease.c.holder == holder, lease.c.token == token)
                .values(holder=None, previous_holder=holder, released_at=now, expires_at=now)
            )
            return bool(result.rowcount)

    def lease(self, key: str) -> LeaseState | None:
        states = self.leases(keys=[key])
        return states[0] if states else None

    def leases(self, *, keys: list[str] | None = None) -> list[LeaseState]:
        """Every lease (or those of `keys`), by key, with how long each has left."""
        lease = t.leader_leases
        query = sa.select(lease, self._db_now().label("db_now")).order_by(lease.c.key)
        if keys is not None:
            query = query.where(lease.c.key.in_(keys))
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [
            LeaseState(
                key=r.key,
                holder=r.holder,
                token=int(r.token),
                acquired_at=r.acquired_at,
                renewed_at=r.renewed_at,
                expires_at=r.expires_at,
                expires_in=r.expires_at - r.db_now,
                released_at=r.released_at,
                previous_holder=r.previous_holder,
                previous_expires_at=r.previous_expires_at,
            )
            for r in rows
        ]
