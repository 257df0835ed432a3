"""What every part of the store shares: the engine, and one short transaction per call."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from .errors import driver_errors

__all__ = ["StoreBase", "inserted_id", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def inserted_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


class StoreBase:
    """The engine, and the two ways a method reaches it: `_read()` and `_write()`. Both
    turn a driver's errors into `StoreError` (see `driver_errors`)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        # the full URL, password included: handed to processes that open the same store
        self.url = engine.url.render_as_string(hide_password=False)
        self._lock = threading.Lock()  # SQLite allows one writer; queue ours in-process

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with driver_errors(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with driver_errors(), self._lock, self.engine.begin() as conn:
            yield conn
