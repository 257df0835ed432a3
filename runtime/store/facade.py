"""`Store`: the one door to the run history. Each concern's queries live in a module of
their own (flows, schedules, runs, attempts, triggers, orchestrators, consumers, scaling,
leases);
`Store` gathers them and adds opening, migrating and closing."""

from __future__ import annotations

from pathlib import Path
from typing import final

import sqlalchemy as sa

from .attempts import AttemptQueries
from .consumers import ConsumerQueries
from .engine import create_engine
from .errors import StoreError, StoreNotFound, driver_errors
from .flows import FlowQueries
from .leases import LeaseQueries
from .migrate import holds_store
from .migrate import migrate as migrate_schema
from .orchestrators import OrchestratorQueries
from .runs import RunQueries
from .scaling import ScalingQueries
from .schedules import ScheduleQueries
from .triggers import TriggerQueries
from .urls import check_could_exist, describe_url, resolve_url, safe_url, sqlite_file

__all__ = ["Store"]


@final
class Store(
    FlowQueries,
    ScheduleQueries,
    RunQueries,
    AttemptQueries,
    TriggerQueries,
    OrchestratorQueries,
    ConsumerQueries,
    ScalingQueries,
    LeaseQueries,
):
    """The run history. Create with `Store.open(url)`; close with `close()`. Every method
    is one short transaction, and raises `StoreError` when the database fails."""

    @property
    def location(self) -> str:
        """Where this store is, for people (see `describe_url`)."""
        return describe_url(self.url)

    @classmethod
    def open(cls, url: str | None = None, *, migrate: bool = True, create: bool = True) -> Store:
        """Open (and migrate) the store at `url` (see `resolve_url`). With `create=False`,
        for commands that only read, a store that does not exist yet raises StoreNotFound
        instead of being created (a SQLite file, or the schema in a database)."""
        url = resolve_url(url)
        if not create:
            database = sqlite_file(url) if url.startswith("sqlite") else None
            if database is not None and not Path(database).expanduser().exists():
                check_could_exist(Path(database).expanduser().resolve(), url)
                raise StoreNotFound(f"no state store at {describe_url(url)}")
        try:
            engine = create_engine(url)
            store = cls(engine)
            if not create and not holds_store(engine):
                engine.dispose()
                raise StoreNotFound(f"{safe_url(url)} holds no tideflow state store")
            if migrate:
                migrate_schema(engine)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            first_line = (str(exc).splitlines() or [""])[0]
            raise StoreError(
                f"cannot open the state store {safe_url(url)}: "
                f"{exc.__class__.__name__}: {first_line}"
            ) from exc
        return store

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def migrate(self) -> None:
        """Bring the schema to the newest revision (a no-op when it is there already)."""
        with driver_errors():
            migrate_schema(self.engine)
