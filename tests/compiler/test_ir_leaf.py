"""The IR is a leaf: reading an IR (what consumer instances and job workers do) does
not load the parser, lark, the checks or networkx; `tideflow.compiler`'s names still work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tideflow.compiler
from tideflow.compiler import compile_source
from tideflow.compiler.irjson import from_json, to_json

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


FLOW = """\
flow "shop" {
  timezone = "UTC"
}

broker "main" {
  kind = "embedded"
}

topic "orders" {
  broker = broker.main
}

job "extract" {
  schedule  = every(10m)
  run       = "shop.jobs:extract"
  publishes = topic.orders
}

job "report" {
  after = [job.extract]
  run   = "shop.jobs:report"
}

consumer "workers" {
  consumes = topic.orders
  run      = "shop.workers:handle"
}
"""


def test_reading_an_ir_document_loads_no_networkx(tmp_path: Path) -> None:
    """An instance reads IR JSON and looks its records up; the graph (and networkx)
    comes only when something asks for it."""
    ir = compile_source(FLOW).ir
    assert ir is not None
    path = tmp_path / "shop.ir.json"
    path.write_text(json.dumps(to_json(ir)), encoding="utf-8")
    statement = (
        "from tideflow.compiler.irjson import from_json, to_json\n"
        f"ir = from_json(json.loads(open({str(path)!r}).read()))\n"
        "assert ir.consumers and ir.topics and ir.jobs and list(ir.records())\n"
        "assert ir.span_of('job', 'extract') is not None and to_json(ir)"
    )
    assert "networkx" not in _loaded_after(statement)
    assert "networkx" in _loaded_after(statement + "\nir.graph")


def test_the_graph_built_later_holds_the_same_nodes_and_edges() -> None:
    ir = compile_source(FLOW).ir
    assert ir is not None
    document = to_json(ir)
    back = from_json(document)
    assert to_json(back) == document  # written from the records
    graph = back.graph
    assert to_json(back) == document  # written from the graph
    assert list(graph.nodes(data="kind")) == list(ir.graph.nodes(data="kind"))
    assert list(graph.edges(data="kind")) == list(ir.graph.edges(data="kind"))
    assert back.dependency_graph().edges == ir.dependency_graph().edges


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
