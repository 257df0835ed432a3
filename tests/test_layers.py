"""The rooms of the package and the arrows between them (docs/architecture.md).

The import graph is read from the installed package's source with `ast`: every
`import` and `from ... import` of a tideflow module, at module level or inside a
function, is an arrow. Imports under `if TYPE_CHECKING:` are not (they never run).
Two rules:

- an arrow may only point to a room that its room is allowed to use
  (`ALLOWED`), so the layers point one way;
- no cycle between modules, counting imports inside functions: an import moved
  into a function to dodge a cycle still closes the cycle here.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import pytest

# room -> the rooms it may import (besides itself)
ALLOWED: dict[str, frozenset[str]] = {
    "api": frozenset(),
    "dsl": frozenset({"api"}),
    "host": frozenset({"api", "dsl"}),
    "compiler": frozenset({"api", "dsl", "host"}),
    "runtime": frozenset({"api", "dsl", "compiler", "host"}),
    "plugins": frozenset({"api"}),
    # the language server: the compiler's view of a file, never the runtime
    "lsp": frozenset({"api", "dsl", "compiler", "host", "root"}),
    # `tideflow` itself: the version and lazy exports for handler authors
    "root": frozenset({"api", "dsl", "compiler", "host", "runtime"}),
    "web": frozenset({"api", "dsl", "compiler", "host", "runtime", "root"}),
    "tideflow": frozenset(
        {"api", "dsl", "compiler", "host", "runtime", "plugins", "web", "root", "lsp"}
    ),
}

# the packages whose source lives in their own top-level directory
SUBPACKAGES = ("dsl", "compiler", "runtime", "plugins")


def room_of(module: str) -> str:
    """The room a module belongs to."""
    parts = module.split(".")
    if module == "tideflow":
        return "root"
    second = parts[1] if len(parts) > 1 else ""
    if second == "plugins":
        if len(parts) > 2 and parts[2] == "api":
            return "api"
        if len(parts) == 2 or parts[2] == "manager":
            return "host"
        return "plugins"
    if second in ("dsl", "compiler", "runtime"):
        return second
    if second in ("web", "lsp"):
        return second
    return "tideflow"  # the CLI, tideflow.testing, __main__


@dataclass(frozen=True)
class Arrow:
    source: str
    target: str
    line: int
    in_function: bool

    def __str__(self) -> str:
        where = "inside a function" if self.in_function else "at module level"
        return f"{self.source}:{self.line} imports {self.target} ({where})"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, name
    return Path(next(iter(spec.submodule_search_locations)))


def source_files() -> dict[str, Path]:
    """Every module of the installed package, by dotted name."""
    roots = {"tideflow": _package_dir("tideflow")}
    roots.update({f"tideflow.{sub}": _package_dir(f"tideflow.{sub}") for sub in SUBPACKAGES})
    modules: dict[str, Path] = {}
    for package, root in roots.items():
        for path in root.rglob("*.py"):
            relative = path.relative_to(root).with_suffix("").parts
            if package == "tideflow" and relative[0] in SUBPACKAGES:
                continue  # a link or copy of a subpackage; read it from its own root
            if "migrations" in relative:
                continue  # alembic's revision scripts: sqlalchemy and alembic only
            parts = relative[:-1] if relative[-1] == "__init__" else relative
            modules[".".join((package, *parts))] = path
    return modules


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.arrows: list[Arrow] = []
        self._functions = 0

    def visit_If(self, node: ast.If) -> None:
        if "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join([*base, *([node.module] if node.module else [])])
        else:
            target = node.module or ""
        for alias in node.names:
            submodule = f"{target}.{alias.name}"
            self._add(submodule if submodule in self.known else target, node.lineno)

    def _add(self, target: str, line: int) -> None:
        if target == "tideflow" or target.startswith("tideflow."):
            while target not in self.known and "." in target:
                target = target.rpartition(".")[0]
            self.arrows.append(Arrow(self.module, target, line, self._functions > 0))


def arrows() -> Iterator[Arrow]:
    modules = source_files()
    known = set(modules)
    for module, path in sorted(modules.items()):
        visitor = _Imports(module, path.name == "__init__.py", known)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        yield from visitor.arrows


def test_the_rooms_are_found() -> None:
    rooms = {room_of(module) for module in source_files()}
    assert rooms == set(ALLOWED)


def test_every_arrow_points_down() -> None:
    wrong = {
        f"{arrow} — {room_of(arrow.source)} may not use {room_of(arrow.target)}": None
        for arrow in arrows()
        if room_of(arrow.source) != room_of(arrow.target)
        and room_of(arrow.target) not in ALLOWED[room_of(arrow.source)]
    }
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph = nx.DiGraph()
    for arrow in arrows():
        if arrow.source != arrow.target:
            graph.add_edge(arrow.source, arrow.target, arrow=arrow)
    cycles = [sorted(component) for component in nx.strongly_connected_components(graph)]
    cycles = [component for component in cycles if len(component) > 1]
    described = []
    for component in cycles:
        inside = graph.subgraph(component)
        described.append(
            "cycle:\n" + "\n".join(f"  {data['arrow']}" for _, _, data in inside.edges(data=True))
        )
    assert not cycles, "\n".join(described)


@pytest.mark.parametrize(
    ("module", "may_load"),
    [
        ("tideflow.plugins.api", ("tideflow", "tideflow.plugins", "tideflow.plugins.api")),
    ],
)
def test_module_loads_nothing_above_it(module: str, may_load: tuple[str, ...]) -> None:
    """What a module drags in when imported, measured in a fresh interpreter."""
    code = (
        f"import sys, {module}\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] == 'tideflow')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    extra = [m for m in loaded if m not in may_load and not m.startswith(f"{module}.")]
    assert not extra, f"importing {module} loads {extra}"
