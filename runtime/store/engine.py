"""The SQLAlchemy engine for a store URL, with the SQLite settings the store relies on,
and on PostgreSQL a pool that checks a connection only after it sat idle."""

from __future__ import annotations

import select
import time
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

__all__ = ["IDLE_PING_SECONDS", "create_engine"]

# A pooled connection idle for longer than this is pinged before use (a server restart
# or a dropped link while it slept is found then, and it is replaced at once).
IDLE_PING_SECONDS: Final = 1.0


def create_engine(url: str) -> sa.Engine:
    """An engine for a normalized URL; a SQLite file's folder is created, and its path made
    absolute so that processes started elsewhere open the same file."""
    if url.startswith("sqlite"):
        parsed = sa.engine.make_url(url)
        database = parsed.database
        if database and database != ":memory:":
            absolute = Path(database).expanduser().resolve()
            absolute.parent.mkdir(parents=True, exist_ok=True)
            url = parsed.set(database=str(absolute)).render_as_string(hide_password=False)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL-safe
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    engine = sa.create_engine(url)
    _ping_when_idle(engine, IDLE_PING_SECONDS)
    return engine


def _ping_when_idle(engine: sa.Engine, idle_seconds: float) -> None:
    """Ping a pooled connection at checkout only when it sat idle for `idle_seconds`,
    or when the server wrote to it while it sat in the pool.

    `pool_pre_ping` pings at every checkout: one more round trip for every store call,
    a third of a write's. A connection in steady use needs none: a server that
    restarts or ends the session says goodbye on the socket (an error, then the end of
    the stream), which is seen without a round trip. A connection that died silently
    (a link cut) fails the statement that uses it (StoreError), and SQLAlchemy then
    drops the whole pool, so the next call connects afresh."""
    errors = engine.dialect.loaded_dbapi.Error

    @sa.event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["tideflow_idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("tideflow_idle_since")
        idle = since is not None and time.monotonic() - since >= idle_seconds
        if not idle and not _server_wrote(dbapi_connection):
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except errors as exc:  # the pool replaces the connection and tries again
            raise sa.exc.DisconnectionError(str(exc)) from exc


def _server_wrote(dbapi_connection: Any) -> bool:
    """Whether the server sent something on a connection that sat in the pool, where it
    speaks only to say goodbye (or, rarely, a notice); checked without waiting."""
    try:
        readable, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
    except Exception:  # closed already, or no socket to look at: let the ping decide
        return True
    return bool(readable)
