"""Which schema revision a database holds, and bringing it to the newest (Alembic).

The migration scripts live in `tideflow.runtime.migrations`. Alembic is imported only
when a database is behind: a process opening an up-to-date store (every consumer
instance, every reading command) never loads it.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Final

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["HEAD_REVISION", "alembic_config", "current_revision", "holds_store", "migrate"]

# The newest migration's revision; tests/runtime/test_store.py checks it against the
# scripts, so a new migration that forgets it fails there.
HEAD_REVISION: Final = "0007"

# alembic's own table, read with plain SQL (not part of our metadata: autogenerate
# must not see it)
_VERSION = sa.table("alembic_version", sa.column("version_num", sa.String))


def current_revision(conn: sa.Connection) -> str | None:
    """The revision recorded in the database; None when none is (yet)."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    revision: str | None = conn.execute(sa.select(_VERSION.c.version_num)).scalar()
    return revision


def holds_store(engine: sa.Engine) -> bool:
    """Whether the database holds a store: a migration revision, not merely alembic's
    table. The process creating a store makes that table (and, SQLite's DDL being
    outside the migration's transaction, the first tables) before it records the
    revision; a reader that took that for an old store would migrate it as well,
    and the creator's own migration would then fail (`table flows already exists`)."""
    with engine.connect() as conn:
        return current_revision(conn) is not None


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to the newest revision (a no-op when it is there already)."""
    with engine.begin() as conn:
        if current_revision(conn) == HEAD_REVISION:
            return
        # lazy: memory; alembic is ~10 MB, needed only by a store that is behind
        from alembic import command
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        config = alembic_config()
        config.attributes["connection"] = conn
        current = MigrationContext.configure(conn).get_current_revision()
        head = ScriptDirectory.from_config(config).get_current_head()
        if current != head:
            command.upgrade(config, "head")


def alembic_config() -> Config:
    """Alembic's configuration for our scripts; the caller sets `attributes["connection"]`."""
    # lazy: memory; alembic is ~10 MB, needed only where migrations run
    from alembic.config import Config

    config = Config()
    location = resources.files("tideflow.runtime").joinpath("migrations")
    config.set_main_option("script_location", str(location))
    return config
