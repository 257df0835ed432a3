"""Each helper that several rooms need lives once (STYLE.md, "Layers point one way"), and
the shipped package holds no test fakes.

The helpers: `dsl/durations.py` (reading and writing durations),
`plugins/api/suggest.py` (the "did you mean" of every message, in the lowest room
because backends use it too; `dsl/suggest.py` re-exports it), `dsl/gc_pause.py`
(the collector paused around parsing and compiling), `compiler/describe.py` (how a
schedule is told), `dsl/timetext.py` (how long a run took and how long ago, as the
command line and the dashboard both say it). A copy that comes back in another module
fails here, with where it is.
"""

from __future__ import annotations

import ast
import importlib.util
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("dsl", "compiler", "runtime", "plugins", "tideflow")

# function name -> the one module that may define it
HOMES = {
    "format_duration": "dsl/durations.py",
    "parse_duration": "dsl/durations.py",
    "gc_paused": "dsl/gc_pause.py",
    "_gc_paused": "dsl/gc_pause.py",
    "describe_schedule": "compiler/describe.py",
    "suggest": "plugins/api/suggest.py",
    "closest": "plugins/api/suggest.py",
    "human_delta": "dsl/timetext.py",
    "format_elapsed": "dsl/timetext.py",
}
# wrappers that keep a public name and only add their own error, delegating the work
DELEGATES = {("parse_duration", "runtime/simulate/profiles.py"): "durations.parse_duration("}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for room in SHIPPED:
        for path in sorted((ROOT / room).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if "/migrations/" not in name:
                yield name, ast.parse(path.read_text(encoding="utf-8"), name)


def _copies() -> list[str]:
    found = []
    for name, tree in _modules():
        source = (ROOT / name).read_text(encoding="utf-8")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in HOMES:
                home = HOMES[node.name]
                delegate = DELEGATES.get((node.name, name))
                body = ast.get_source_segment(source, node) or ""
                if name != home and not (delegate and delegate in body):
                    found.append(f"{name}:{node.lineno}: `{node.name}` belongs in {home}")
            elif isinstance(node, ast.Attribute) and node.attr == "get_close_matches":
                if name != "plugins/api/suggest.py":
                    found.append(f"{name}:{node.lineno}: difflib belongs in plugins/api/suggest.py")
            elif (
                isinstance(node, ast.Attribute)
                and node.attr == "disable"
                and isinstance(node.value, ast.Name)
                and node.value.id == "gc"
                and name != "dsl/gc_pause.py"
            ):
                found.append(f"{name}:{node.lineno}: gc pauses belong in dsl/gc_pause.py")
    return found


def test_each_shared_helper_has_one_home() -> None:
    assert _copies() == []


def test_the_shipped_package_holds_no_fake_servers() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    folders = config["tool"]["setuptools"]["package-dir"].values()
    fakes = [p for folder in folders for p in sorted((ROOT / folder).rglob("fake_*.py"))]
    assert fakes == []
    assert not [name for name, _ in _modules() if name.startswith("tideflow/testing/fake")]
    mentions = [
        name
        for name, _ in _modules()
        if "fake_kubernetes" in (ROOT / name).read_text(encoding="utf-8")
    ]
    assert mentions == []


def test_the_fake_kubernetes_server_is_not_importable_from_the_package() -> None:
    assert importlib.util.find_spec("tideflow.testing.fake_kubernetes") is None


@pytest.mark.parametrize("module", sorted({*HOMES.values()} - {"compiler/describe.py"}))
def test_the_dsl_homes_import_nothing_of_tideflow(module: str) -> None:
    """dsl/ is the lowest room: its helpers can be used by every other, plugins included."""
    tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
    imported = [
        node.module or "."
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.level or "tideflow" in (node.module or ""))
    ]
    imported += [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.startswith(("tideflow", "lark"))
    ]
    assert imported == []
