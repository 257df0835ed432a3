"""A reader never migrates a store that another process is still creating."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from tideflow.runtime.store import Store, StoreNotFound


def _tables(database: Path) -> set[str]:
    with sqlite3.connect(database) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_a_store_whose_revision_is_not_recorded_yet_is_not_found(tmp_path: Path) -> None:
    # how `tideflow run` leaves the file part way through creating it: alembic's table
    # exists (its DDL is outside the migration's transaction), the revision not yet;
    # a reader that migrated it too made the creator fail with "table flows already exists"
    database = tmp_path / "state.db"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
    with pytest.raises(StoreNotFound, match="holds no tideflow state store"):
        Store.open(str(database), create=False)
    assert _tables(database) == {"alembic_version"}


def test_a_created_store_opens_for_readers(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    Store.open(str(database)).close()
    with Store.open(str(database), create=False) as store:
        assert store.live_orchestrators(["nightly"], 30) == []
