"""The SQLAlchemy engine for a store URL, with the SQLite settings the store relies on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

__all__ = ["create_engine"]


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
    return sa.create_engine(url, pool_pre_ping=True)
