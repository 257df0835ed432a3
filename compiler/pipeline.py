"""The compile chain: load and parse (`dsl.loader`), check (`checks`), build the IR
(`build`), run the plugins' lint rules (`rules`).

`tideflow.compiler` re-exports what is public here, lazily, so that importing the
IR (`compiler.ir`, `compiler.irjson`) does not load the parser.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from tideflow.dsl.ast import FlowFile
from tideflow.dsl.diagnostics import Diagnostic
from tideflow.dsl.gc_pause import gc_paused
from tideflow.dsl.loader import LoadedFlow, load_flow, load_source
from tideflow.plugins.api.options import Catalog
from tideflow.plugins.manager import default_catalog

from .allow import drop_allowed
from .build import build_ir
from .checks import check_flow
from .ir import FlowIR
from .rules import LintRule, run_rules

__all__ = ["CompileResult", "LintRule", "compile_flow", "compile_loaded", "compile_source"]


@dataclass(frozen=True)
class CompileResult:
    """What compiling a flow produced."""

    ir: FlowIR | None  # None when there are errors
    diagnostics: tuple[Diagnostic, ...]  # sorted by (path, line, column, code)
    sources: Mapping[str, str]  # path -> source text, for every file read
    files: tuple[FlowFile, ...]  # parsed files, root first

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.is_error)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if not d.is_error)

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


def compile_flow(
    path: str | os.PathLike[str],
    *,
    catalog: Catalog | None = None,
    rules: Sequence[LintRule] = (),
    include_root: str | os.PathLike[str] | None = None,
) -> CompileResult:
    """Compile the flow whose root file is `path` (includes are followed, inside
    `include_root`: by default the folder of `path`)."""
    with gc_paused():
        loaded = load_flow(path, include_root=include_root)
        found, ir = _check_and_build(loaded, catalog, None)
    return _lint(loaded, found, ir, rules)


def compile_source(
    text: str,
    path: str = "<string>",
    *,
    catalog: Catalog | None = None,
    rules: Sequence[LintRule] = (),
    include_root: str | os.PathLike[str] | None = None,
) -> CompileResult:
    """Compile `text` as if read from `path`; includes resolve relative to its folder
    and stay inside `include_root` (by default that folder)."""
    with gc_paused():
        loaded = load_source(text, path, include_root=include_root)
        found, ir = _check_and_build(loaded, catalog, None)
    return _lint(loaded, found, ir, rules)


def compile_loaded(
    loaded: LoadedFlow,
    *,
    catalog: Catalog | None = None,
    rules: Sequence[LintRule] = (),
    today: date | None = None,
) -> CompileResult:
    """Check, build and lint files already loaded. `today` anchors the DST warnings."""
    with gc_paused():
        found, ir = _check_and_build(loaded, catalog, today)
    return _lint(loaded, found, ir, rules)


def _check_and_build(
    loaded: LoadedFlow, catalog: Catalog | None, today: date | None
) -> tuple[list[Diagnostic], FlowIR | None]:
    if catalog is None:
        catalog = default_catalog()
    found = list(loaded.diagnostics)
    if not loaded.complete:
        return found, None  # a file is missing or unparsable: its blocks would be missed
    checked = check_flow(loaded, catalog, today=today)
    found.extend(checked.diagnostics)
    if any(d.is_error for d in found):
        return found, None
    return found, build_ir(checked)


def _lint(
    loaded: LoadedFlow, found: list[Diagnostic], ir: FlowIR | None, rules: Sequence[LintRule]
) -> CompileResult:
    """Run the plugins' rules on a valid IR (with the collector as the caller has it)."""
    if ir is not None:
        found.extend(run_rules(ir, rules))
        if any(d.is_error for d in found):
            ir = None  # a rule reported an error: the flow is not accepted
    found = drop_allowed(found, loaded.files)
    found.sort(key=Diagnostic.sort_key)
    return CompileResult(ir, tuple(found), loaded.sources, loaded.files)
