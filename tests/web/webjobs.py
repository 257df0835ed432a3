"""Job callables for the dashboard's tests (imported by the executor's worker processes)."""

from __future__ import annotations

import os
from typing import Any


def extract(ctx: Any) -> None:
    """Succeeds; prints the secret it was given (the executor redacts it) and logs."""
    ctx.logger.info("read %d rows", 42)
    print(f"connecting with token {os.environ['API_TOKEN']}")
    print("extracted 42 rows")


def load(ctx: Any) -> None:
    """Always fails, a few frames down, so the traceback names a function."""
    ctx.logger.warning("row 7 looks wrong")
    _check_row(7)


def _check_row(number: int) -> None:
    raise ValueError(f"bad row {number}: price is negative")


def report(ctx: Any) -> None:
    """Never reached in the tests: it needs `load` to succeed."""
