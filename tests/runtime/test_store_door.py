"""`Store` is the only door to the run history (docs: STYLE.md, "One door per resource").

Nothing outside `tideflow.runtime.store` (and alembic's revision scripts) imports
SQLAlchemy or alembic, or reaches for a store's engine: pages, the API, /metrics and
the CLI ask the store questions and catch `StoreError`. The embedded broker keeps its
own SQLite file with the standard `sqlite3` module: that is not the run history.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

DRIVERS = ("sqlalchemy", "alembic")
STORE_PACKAGE = "tideflow.runtime.store"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, name
    return Path(next(iter(spec.submodule_search_locations)))


def _modules_outside_the_store() -> dict[str, Path]:
    """Every module of the package but the store's own and the migration scripts."""
    store_dir = _package_dir(STORE_PACKAGE)
    migrations_dir = _package_dir("tideflow.runtime.migrations")
    roots = [_package_dir("tideflow")]
    roots += [_package_dir(f"tideflow.{sub}") for sub in ("dsl", "compiler", "runtime", "plugins")]
    found: dict[str, Path] = {}
    for root in roots:
        for path in root.rglob("*.py"):
            if path.is_relative_to(store_dir) or path.is_relative_to(migrations_dir):
                continue
            found[str(path.resolve())] = path
    return found


def _driver_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import of SQLAlchemy or alembic, in functions too, and
    under `if TYPE_CHECKING:` (a type from them would leak the driver into a signature)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [(node.lineno, n) for n in names if n.split(".")[0] in DRIVERS]
    return found


def _engine_uses(tree: ast.AST) -> list[int]:
    """Lines that read `<something>store.engine`."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "engine":
            owner = ast.unparse(node.value)
            if owner.split(".")[-1].endswith("store"):
                lines.append(node.lineno)
    return lines


def test_only_the_store_imports_sqlalchemy_or_alembic() -> None:
    offenders = []
    for path in _modules_outside_the_store().values():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [f"{path}:{line} imports {name}" for line, name in _driver_imports(tree)]
    assert offenders == [], "\n".join(offenders)


def test_nothing_outside_the_store_reaches_for_its_engine() -> None:
    offenders = []
    for path in _modules_outside_the_store().values():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [f"{path}:{line} uses store.engine" for line in _engine_uses(tree)]
    assert offenders == [], "\n".join(offenders)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import sqlalchemy as sa\n", [(1, "sqlalchemy")]),
        ("def f():\n    from alembic import command\n", [(2, "alembic")]),
        ("from sqlalchemy.exc import OperationalError\n", [(1, "sqlalchemy.exc")]),
        ("import sqlite3\nfrom .store import StoreError\n", []),
    ],
)
def test_the_check_sees_every_kind_of_import(source: str, expected: list[tuple[int, str]]) -> None:
    assert _driver_imports(ast.parse(source)) == expected


def test_the_check_sees_an_engine_reached_through_a_store() -> None:
    tree = ast.parse("store.engine.connect()\nself.store.engine\nengine = make()\n")
    assert sorted(_engine_uses(tree)) == [1, 2]


def test_opening_an_up_to_date_store_does_not_load_alembic(tmp_path: Path) -> None:
    # memory: alembic is ~10 MB, and every consumer instance opens the store
    url = f"sqlite:///{tmp_path / 'state.db'}"
    script = (
        "import sys\n"
        "from tideflow.runtime.store import Store\n"
        f"Store.open({url!r}).close()\n"  # creates it: alembic runs here
        "created = 'alembic' in sys.modules\n"
        "for name in [m for m in sys.modules if m.split('.')[0] == 'alembic']:\n"
        "    del sys.modules[name]\n"
        f"Store.open({url!r}).close()\n"
        "print(created, 'alembic' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split() == ["True", "False"]


def test_importing_the_store_does_not_load_alembic() -> None:
    script = "import sys, tideflow.runtime.store\nprint('alembic' in sys.modules)\n"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "False"
