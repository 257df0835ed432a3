"""The IR is a leaf: reading an IR (what consumer instances and job workers do) does
not load the parser, lark or the checks; `tideflow.compiler`'s names still work."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import tideflow.compiler

# what only compiling needs: none of it may come with the IR
COMPILE_ONLY = (
    "lark",
    "tideflow.dsl.parser",
    "tideflow.dsl.loader",
    "tideflow.compiler.pipeline",
    "tideflow.compiler.checks",
    "tideflow.compiler.schema",
    "tideflow.plugins.manager",
)


def _loaded_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after `statement`."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout))


@pytest.mark.parametrize(
    "statement",
    [
        "import tideflow.compiler.ir",
        "import tideflow.compiler.irjson",
        "from tideflow.compiler.irjson import from_json",
        "from tideflow.compiler import ir, irjson",
    ],
)
def test_reading_the_ir_loads_no_parser(statement: str) -> None:
    loaded = _loaded_after(statement)
    assert "tideflow.compiler.ir" in loaded
    assert sorted(loaded.intersection(COMPILE_ONLY)) == []


def test_the_chain_is_loaded_on_first_use() -> None:
    loaded = _loaded_after("from tideflow.compiler import compile_source")
    assert {"lark", "tideflow.dsl.parser", "tideflow.compiler.pipeline"} <= loaded


def test_the_package_names_stay_importable() -> None:
    from tideflow.compiler import CompileResult, LintRule, compile_source

    result = compile_source('flow "f" {\n  timezone = "UTC"\n}\n')
    assert isinstance(result, CompileResult)
    assert result.ok
    assert isinstance(LintRule, type)
    assert set(tideflow.compiler.__all__) <= set(dir(tideflow.compiler))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'compile_everything'"):
        tideflow.compiler.compile_everything  # noqa: B018
    with pytest.raises(ImportError):
        from tideflow.compiler import compile_everything  # noqa: F401
