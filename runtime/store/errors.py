"""What the store raises: `StoreError`, and the one place where a driver's errors become it.

Callers (the scheduler, the dashboard, /metrics, the CLI) catch `StoreError` and never
a SQLAlchemy or DBAPI class: which driver the history runs on is the store's business.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

__all__ = ["FencedError", "StoreError", "StoreNotFound", "driver_errors"]


class StoreError(Exception):
    """The state store cannot be opened or used; the message says why."""


class StoreNotFound(StoreError):
    """`Store.open(..., create=False)` found no store where the URL points."""


class FencedError(StoreError):
    """A write that acts on the world was refused: the store's fence (the leader lease's
    token) is stale, another orchestrator leads now. Nothing was written; the caller
    must stop acting."""


@contextmanager
def driver_errors() -> Iterator[None]:
    """Turn SQLAlchemy's and the driver's errors raised inside into `StoreError` with the
    same message (so what callers log reads as before).

    A statement that could not be built from the caller's values (a naive datetime, a
    missing parameter) is the caller's bug, not a failing store: it is not turned into
    `StoreError`, so that no `except StoreError` hides it."""
    try:
        yield
    except sa.exc.StatementError as exc:
        if not isinstance(exc, sa.exc.DBAPIError):
            raise
        raise StoreError(str(exc) or type(exc).__name__) from exc
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(str(exc) or type(exc).__name__) from exc
