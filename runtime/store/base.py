"""What every part of the store shares: the engine, one short transaction per call, and
the fence that writes acting on the world check."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

import sqlalchemy as sa

from . import tables as t
from .errors import FencedError, driver_errors

__all__ = ["Fence", "StoreBase", "fenced_insert", "inserted_id", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def inserted_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


@dataclass(frozen=True, slots=True)
class Fence:
    """The leader's claim: lease `key` held by orchestrator `holder` with `token`. Set on
    a store (`Store.fence`), it makes every write that acts on the world (a fire recorded,
    an attempt started, a scaling decision, a trigger request taken, attempts marked
    lost) check, in the same statement, that the lease still carries this token."""

    key: str
    token: int
    holder: int


class StoreBase:
    """The engine, and the two ways a method reaches it: `_read()` and `_write()`. Both
    turn a driver's errors into `StoreError` (see `driver_errors`)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        # the full URL, password included: handed to processes that open the same store
        self.url = engine.url.render_as_string(hide_password=False)
        self._lock = threading.Lock()  # SQLite allows one writer; queue ours in-process
        # On PostgreSQL a statement run outside a transaction commits by itself: no
        # BEGIN and no COMMIT, one round trip instead of three (see `_write_one`).
        self.postgres = engine.dialect.name == "postgresql"
        self._autocommit = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self.postgres else engine
        )
        # None: writes are not fenced (a single orchestrator, tests, the CLI)
        self.fence: Fence | None = None
        # called (once per refusal) before FencedError is raised: the leader steps down
        self.on_fenced: Callable[[Fence], None] | None = None

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        """A connection to read with. On PostgreSQL every statement runs on its own,
        without BEGIN and ROLLBACK around it: under READ COMMITTED each statement of a
        transaction took a snapshot of its own anyway. (A read that must lock, or see
        one snapshot, belongs in `_write()`.)"""
        with driver_errors(), self._autocommit.connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A transaction: what the block executes commits together, or not at all."""
        with driver_errors(), self._lock, self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _write_one(self) -> Iterator[sa.Connection]:
        """A connection for a write that is ONE statement (atomic by itself: several
        changes are one statement with data-modifying CTEs). On PostgreSQL it commits
        alone, in one round trip; on SQLite it is a `_write()` transaction. Never execute
        two writing statements in it: they would not commit together."""
        if not self.postgres:
            with self._write() as conn:
                yield conn
            return
        with driver_errors(), self._lock, self._autocommit.connect() as conn:
            yield conn

    # --- the fence ---------------------------------------------------------------------

    def _fence_holds(self, fence: Fence) -> sa.ColumnElement[bool]:
        """`EXISTS` the lease row with the fence's token. On PostgreSQL it locks that row
        (FOR SHARE) until the transaction ends, so that no new leader can take the lease
        between this check and the commit of the write it guards; SQLite has one writer
        at a time, and a transaction whose snapshot went stale cannot write at all."""
        lease = t.leader_leases
        check = sa.select(lease.c.key).where(
            lease.c.key == fence.key,
            lease.c.token == fence.token,
            lease.c.holder == fence.holder,
        )
        if self.engine.dialect.name == "postgresql":
            check = check.with_for_update(read=True)
        return sa.exists(check)

    def _fenced(self, what: str) -> NoReturn:
        fence = self.fence
        assert fence is not None
        if self.on_fenced is not None:
            self.on_fenced(fence)
        raise FencedError(
            f"{what} refused: the lease of {fence.key!r} no longer carries token "
            f"{fence.token} of orchestrator {fence.holder} (another orchestrator leads)"
        )

    def _insert_acting(
        self, conn: sa.Connection, table: sa.Table, values: dict[str, Any], what: str
    ) -> int:
        """Insert a row that acts on the world and return its id: a plain INSERT without
        a fence; with one, an INSERT that writes nothing (then FencedError) when the
        lease no longer carries the fence's token, in the same statement."""
        fence = self.fence
        if fence is None:
            return inserted_id(conn.execute(sa.insert(table).values(**values)))
        statement = fenced_insert(table, values, self._fence_holds(fence))
        new_id = conn.execute(statement.returning(table.c.id)).scalar()
        if new_id is None:
            self._fenced(what)
        return int(new_id)


def fenced_insert(
    table: sa.Table, values: dict[str, Any], guard: sa.ColumnElement[bool]
) -> sa.Insert:
    """`INSERT INTO table (...) SELECT <values> WHERE <guard>`: one statement that
    inserts nothing when the guard (a fence) fails. Add `.returning(...)` to tell."""
    columns = list(values)
    row = sa.select(*(sa.literal(values[c], type_=table.c[c].type) for c in columns))
    return sa.insert(table).from_select(columns, row.where(guard))
