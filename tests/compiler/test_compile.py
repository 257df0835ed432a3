"""The compiler's public API: compile_flow / compile_source and CompileResult."""

from __future__ import annotations

import ast as python_ast
import re
from pathlib import Path

from tideflow.compiler import CompileResult, compile_flow, compile_source
from tideflow.dsl.diagnostics import CODES
from tideflow.plugins.api import BackendSpec, Catalog

HERE = Path(__file__).parent


def test_result_of_a_clean_flow(tmp_path: Path) -> None:
    path = tmp_path / "ok.flow"
    path.write_text('flow "ok" {}\njob "a" { run = "m:f" }\n', encoding="utf-8")
    result = compile_flow(path)
    assert isinstance(result, CompileResult)
    assert result.ok and result.errors == () and result.warnings == ()
    assert result.ir is not None and list(result.ir.jobs) == ["a"]
    assert dict(result.sources) == {str(path): path.read_text(encoding="utf-8")}
    assert [f.path for f in result.files] == [str(path)]


def test_compile_flow_accepts_a_string_path(tmp_path: Path) -> None:
    path = tmp_path / "ok.flow"
    path.write_text('job "a" { run = "m:f" }\n', encoding="utf-8")
    assert compile_flow(str(path)).ok


def test_errors_and_warnings_are_split_and_ir_is_none_on_error() -> None:
    result = compile_source('pool "db" { slots = 1 }\njob "a" {}')
    assert [d.code for d in result.errors] == ["E212"]
    assert result.warnings == ()  # graph warnings wait for the errors to be fixed
    assert not result.ok and result.ir is None
    assert result.sources == {"<string>": 'pool "db" { slots = 1 }\njob "a" {}'}


def test_a_syntax_error_stops_before_the_checks() -> None:
    result = compile_source('job "a" {\n  run = \n}\njbo "x" {}')
    assert [d.code for d in result.diagnostics] == ["E103"]
    assert result.files == ()


def test_an_escape_error_still_gets_semantic_checks() -> None:
    result = compile_source('job "a" {\n  description = "bad \\q"\n}')
    assert [d.code for d in result.diagnostics] == ["E212", "E106"]
    assert result.ir is None


def test_a_custom_catalog_replaces_the_default() -> None:
    catalog = Catalog({"broker": {"memory": BackendSpec("memory", ())}})
    text = 'broker "m" { kind = "memory" }\ntopic "t" {}'
    assert not any(d.code == "E211" for d in compile_source(text, catalog=catalog).diagnostics)
    default = compile_source(text)
    assert [d.code for d in default.errors] == ["E211"]


# --- every code the compiler emits has a test asserting it ------------------------------------

COMPILER_SOURCES = [
    HERE.parents[1] / "dsl" / "loader.py",
    *(
        HERE.parents[1] / "compiler" / f"{name}.py"
        for name in ("__init__", "cron", "build", "irjson", "rules", "imports")
    ),
    *sorted((HERE.parents[1] / "compiler" / "checks").glob("*.py")),
]


def _codes_named_by_the_compiler() -> set[str]:
    named: set[str] = set()
    for path in COMPILER_SOURCES:
        named.update(re.findall(r'"([EW]\d{3})"', path.read_text(encoding="utf-8")))
    return named


def _codes_asserted_in_tests() -> set[str]:
    found: set[str] = set()
    for path in HERE.glob("test_*.py"):
        tree = python_ast.parse(path.read_text(encoding="utf-8"))
        for node in python_ast.walk(tree):
            if isinstance(node, python_ast.Constant) and isinstance(node.value, str):
                found.update(re.findall(r"\b[EW]\d{3}\b", node.value))
    return found


def test_every_code_the_compiler_emits_appears_in_a_test() -> None:
    named = _codes_named_by_the_compiler()
    assert len(named) >= 25, "too few codes found: the paths are wrong"
    missing = sorted(named - _codes_asserted_in_tests())
    assert not missing, f"codes without a test in tests/compiler: {missing}"


def test_every_code_the_compiler_emits_is_listed_in_codes() -> None:
    unknown = sorted(_codes_named_by_the_compiler() - set(CODES))
    assert not unknown, unknown
