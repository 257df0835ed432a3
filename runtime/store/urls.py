"""Where a store is: the URL people give, the one $TIDEFLOW_STATE names, the default file,
and how each is shown to people (a path, or the URL without its password)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import platformdirs
import sqlalchemy as sa

from .errors import StoreError

__all__ = [
    "STATE_ENV",
    "check_could_exist",
    "default_url",
    "describe_url",
    "normalize_url",
    "resolve_url",
    "safe_url",
    "sqlite_file",
]

STATE_ENV: Final = "TIDEFLOW_STATE"


def default_url() -> str:
    """The store used when neither a URL nor $TIDEFLOW_STATE names one: `state.db` in the
    user's state folder (`~/.local/state/tideflow` on Linux, `$XDG_STATE_HOME` when set)."""
    folder = platformdirs.user_state_path("tideflow", appauthor=False)
    return f"sqlite:///{folder / 'state.db'}"


def resolve_url(url: str | None = None) -> str:
    """The store `url` names, else $TIDEFLOW_STATE's, else `default_url()`; normalized."""
    return normalize_url(url or os.environ.get(STATE_ENV) or default_url())


def describe_url(url: str) -> str:
    """Where a store is, for people: a SQLite file's absolute path, else the URL without
    its password."""
    if url.startswith("sqlite"):
        database = sqlite_file(url)
        if database is not None:
            return str(Path(database).expanduser().resolve())
    return safe_url(url)


def normalize_url(url: str) -> str:
    """Accept the URLs people write (`postgresql://`, a bare path) and pick our drivers."""
    if "://" not in url:
        return f"sqlite:///{url}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def check_could_exist(path: Path, url: str) -> None:
    """StoreError when `path` can never be a file (a parent is a file): that is a wrong
    URL, not a store that has yet to be made."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise StoreError(
                    f"cannot open the state store {safe_url(url)}: `{parent}` is not a folder"
                )
            return


def sqlite_file(url: str) -> str | None:
    """The file a SQLite URL names; None for an in-memory database or a URL that is not
    one."""
    try:
        database = sa.engine.make_url(url).database
    except sa.exc.ArgumentError:
        return None
    return database if database and database != ":memory:" else None


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(invalid URL)"
