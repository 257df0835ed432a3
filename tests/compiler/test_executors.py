"""Executors in the language: the `executor` block, `executor =` on jobs and on the flow,
`gpu` and the executor's own entries in `resources`, and the checks of where a job runs
(E302 an embedded topic from a remote executor, E303 a demand above the capacity).

The executors are those of `executor_plugin`, registered through the real hook.
Sources are dedented; line 1 is the first line after the opening quotes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest
from tideflow.compiler import CompileResult, compile_source
from tideflow.compiler.graph import to_dot
from tideflow.compiler.ir import EdgeKind, ExecutorNode, FlowIR, Resources
from tideflow.compiler.irjson import from_json, to_json
from tideflow.dsl.diagnostics import Diagnostic
from tideflow.plugins.api import Catalog, EnvRef
from tideflow.plugins.manager import DEFAULT_PLUGINS, load_plugins

PLUGIN = "executor_plugin"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    # pytest's importlib mode keeps this folder off sys.path: the plugin module is
    # loaded by its path, under the name the plugin manager then imports
    if PLUGIN not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PLUGIN, Path(__file__).with_name(f"{PLUGIN}.py")
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[PLUGIN] = module
        spec.loader.exec_module(module)
    plugins = load_plugins(default_plugins=(*DEFAULT_PLUGINS, PLUGIN), entry_points=(), environ={})
    assert not plugins.problems, plugins.problems
    return plugins.catalog


def check(text: str, catalog: Catalog) -> CompileResult:
    return compile_source(textwrap.dedent(text).lstrip("\n"), "main.flow", catalog=catalog)


def compiled(text: str, catalog: Catalog) -> FlowIR:
    result = check(text, catalog)
    assert result.ir is not None, result.diagnostics
    return result.ir


def one(result: CompileResult, code: str) -> Diagnostic:
    found = [d for d in result.diagnostics if d.code == code]
    assert len(found) == 1, result.diagnostics
    return found[0]


def at(diagnostic: Diagnostic) -> tuple[int, int]:
    assert diagnostic.span is not None
    return diagnostic.span.line, diagnostic.span.column


def codes(result: CompileResult) -> list[str]:
    return [d.code for d in result.diagnostics]


FARM = """
executor "farm" {
  kind        = "farm"
  address     = env("FARM", "tcp://farm:1")
  max_memory  = 32Gi
  gpus        = 1
  description = "the GPU farm"
}
"""


# --- the block, the references, the IR ------------------------------------------------------


def test_a_job_runs_on_its_own_executor_else_the_flows_else_local(catalog: Catalog) -> None:
    ir = compiled(
        FARM
        + textwrap.dedent(
            """
        executor "near" { kind = "nearby" }
        flow "f" { executor = executor.farm }
        job "default" { run = "m:f" }
        job "own" {
          run      = "m:f"
          executor = executor.near
        }
        """
        ),
        catalog,
    )
    assert ir.info.executor == "farm"
    assert ir.jobs["default"].executor == "farm"
    assert ir.jobs["own"].executor == "near"
    assert ir.executors == {
        "farm": ExecutorNode(
            "farm",
            "farm",
            {"address": EnvRef("FARM", "tcp://farm:1"), "max_memory": 32 * 1024**3, "gpus": 1},
            "the GPU farm",
        ),
        "near": ExecutorNode("near", "nearby", {"workers": 2}),
    }
    assert sorted(
        (s, t) for s, t, kind in ir.graph.edges(data="kind") if kind is EdgeKind.RUNS_ON
    ) == [("job:default", "executor:farm"), ("job:own", "executor:near")]


def test_nothing_said_is_the_built_in_local_executor_without_an_edge(catalog: Catalog) -> None:
    ir = compiled(
        FARM + 'job "a" { run = "m:f" }\njob "b" { run = "m:f"  executor = executor.farm }', catalog
    )
    assert ir.info.executor is None
    assert ir.jobs["a"].executor is None
    assert [t for _, t in ir.graph.out_edges("job:a")] == []


def test_gpu_and_the_executors_own_resources_reach_the_ir(catalog: Catalog) -> None:
    ir = compiled(
        FARM
        + textwrap.dedent(
            """
        job "train" {
          run      = "m:f"
          executor = executor.farm
          resources {
            cpu     = 2
            memory  = 4Gi
            gpu     = 1
            GPU     = 1
            licence = "matlab"
            scratch = 2Gi
          }
        }
        job "map_form" {
          run       = "m:f"
          executor  = executor.farm
          resources = { gpu = 0, GPU = 0.5 }
        }
        """
        ),
        catalog,
    )
    assert ir.jobs["train"].resources == Resources(
        2.0, 4 * 1024**3, 1, {"GPU": 1, "licence": "matlab", "scratch": 2 * 1024**3}
    )
    assert ir.jobs["map_form"].resources == Resources(None, None, 0, {"GPU": 0.5})


def test_the_ir_json_round_trip_keeps_executors(catalog: Catalog) -> None:
    ir = compiled(
        FARM
        + textwrap.dedent(
            """
        flow "f" { executor = executor.farm }
        job "train" {
          run = "m:f"
          resources { gpu = 1  GPU = 1  licence = "x" }
        }
        """
        ),
        catalog,
    )
    back = from_json(json.loads(json.dumps(to_json(ir))))
    assert back.info == ir.info
    assert back.executors == ir.executors
    assert back.jobs == ir.jobs
    assert list(back.graph.edges(data="kind")) == list(ir.graph.edges(data="kind"))


# --- mistakes in the block and the references --------------------------------------------------


def test_an_unknown_executor_option_gets_did_you_mean(catalog: Catalog) -> None:
    result = check('executor "farm" {\n  kind = "farm"\n  adress = "x"\n}', catalog)
    problem = one(result, "E202")
    assert at(problem) == (3, 3)
    assert problem.message == 'unknown attribute `adress` in executor "farm"'
    assert problem.help == "did you mean `address`?"
    assert "E204" in codes(result)  # and `address` is missing


def test_an_unknown_executor_kind_lists_the_available_ones(catalog: Catalog) -> None:
    result = check('executor "farm" {\n  kind = "frm"\n  address = "x"\n}', catalog)
    problem = one(result, "E211")
    assert at(problem) == (2, 10)
    assert problem.message == 'unknown executor "frm" in executor "farm"'
    assert problem.label is not None
    assert problem.label.startswith("available executors: ")
    assert {"broken", "farm", "nearby"} <= set(problem.label.split(": ")[1].split(", "))
    assert problem.help == 'did you mean "farm"?'
    assert codes(result) == ["E211"]  # its options are not reported as unknown


def test_an_executor_needs_a_kind_and_a_name(catalog: Catalog) -> None:
    result = check('executor "x" {}\nexecutor { kind = "nearby" }', catalog)
    assert at(one(result, "E204")) == (1, 1)
    assert one(result, "E204").message == 'missing required attribute `kind` in executor "x"'
    assert one(result, "E215").message == "executor block has no name"


def test_an_undefined_executor_reference_suggests_a_close_one(catalog: Catalog) -> None:
    result = check(FARM + 'job "a" {\n  run = "m:f"\n  executor = executor.frm\n}', catalog)
    problem = one(result, "E207")
    assert problem.message == "undefined reference `executor.frm`"
    assert problem.help == "did you mean `executor.farm`?"
    assert codes(result) == ["E207"]


def test_the_flows_executor_must_be_a_reference(catalog: Catalog) -> None:
    result = check(FARM + 'flow "f" { executor = "farm" }\njob "a" { run = "m:f" }', catalog)
    problem = one(result, "E203")
    assert problem.help == "write it as a reference: `executor.farm`"


def test_gpu_is_a_whole_number_of_at_least_zero(catalog: Catalog) -> None:
    result = check('job "a" {\n  run = "m:f"\n  resources { gpu = -1 }\n}', catalog)
    assert (
        one(result, "E208").message == '`gpu` in resources of job "a" must be at least 0, found -1'
    )
    result = check('job "a" {\n  run = "m:f"\n  resources { gpu = 0.5 }\n}', catalog)
    assert one(result, "E203").message == (
        'wrong type for `gpu` in resources of job "a": expected integer ≥ 0, found a number'
    )


# --- the executor's own resources -----------------------------------------------------------------


def test_an_entry_the_executor_does_not_declare_is_unknown(catalog: Catalog) -> None:
    result = check(
        FARM + 'job "a" {\n  run = "m:f"\n  executor = executor.farm\n  resources { GPUs = 1 }\n}',
        catalog,
    )
    problem = one(result, "E202")
    assert at(problem) == (11, 15)
    assert problem.message == 'unknown attribute `GPUs` in resources of job "a"'
    assert problem.label == (
        'job "a" runs on executor "farm" (farm), which takes cpu, memory, gpu, GPU, licence, '
        "scratch, tape"
    )
    assert problem.help == "did you mean `GPU`?"
    assert result.ir is None


def test_on_the_built_in_local_executor_only_cpu_memory_and_gpu_exist(catalog: Catalog) -> None:
    result = check('job "a" {\n  run = "m:f"\n  resources { cpus = 2  GPU = 1 }\n}', catalog)
    first, second = (d for d in result.diagnostics if d.code == "E202")
    assert (at(first), first.message, first.help) == (
        (3, 15),
        'unknown attribute `cpus` in resources of job "a"',
        "did you mean `cpu`?",
    )
    assert first.label is not None and first.label.startswith(
        'job "a" runs on the built-in local executor, which takes cpu, memory, gpu'
    )
    assert (at(second), second.message) == (
        (3, 25),
        'unknown attribute `GPU` in resources of job "a"',
    )


def test_the_flows_executor_decides_which_entries_a_job_may_write(catalog: Catalog) -> None:
    source = (
        FARM
        + 'flow "f" { executor = executor.farm }\n'
        + 'job "a" {\n  run = "m:f"\n  resources { GPU = 1 }\n}'
    )
    assert check(source, catalog).ok


def test_an_entry_the_executors_capacity_names_is_declared_too(catalog: Catalog) -> None:
    source = FARM + 'job "a" {\n  run = "m:f"\n  executor = executor.farm\n'
    result = check(source + "  resources { tape = 2 }\n}", catalog)
    assert result.ir is not None, result.diagnostics
    assert result.ir.jobs["a"].resources.extras == {"tape": 2}
    problem = one(check(source + "  resources { tape = 3 }\n}", catalog), "E303")
    assert problem.message.startswith('job "a" asks for `tape = 3`, more than')


def test_a_nested_block_of_an_unknown_name_in_resources_is_still_unknown(catalog: Catalog) -> None:
    result = check('job "a" {\n  run = "m:f"\n  resources {\n    gpus { x = 1 }\n  }\n}', catalog)
    assert one(result, "E202").message == 'unknown block `gpus` in resources of job "a"'


def test_an_entry_written_twice_and_values_of_the_wrong_kind(catalog: Catalog) -> None:
    result = check(
        FARM
        + textwrap.dedent(
            """
        job "a" {
          run      = "m:f"
          executor = executor.farm
          resources {
            GPU     = 1
            GPU     = 2
            licence = true
            scratch = -1
          }
        }
        """
        ),
        catalog,
    )
    twice = one(result, "E206")
    assert (at(twice), twice.message) == ((14, 5), '`GPU` is set twice in resources of job "a"')
    wrong = one(result, "E203")
    assert (at(wrong), wrong.message) == (
        (15, 15),
        'wrong type for `licence` in resources of job "a": expected number, size or string, '
        "found a boolean",
    )
    negative = one(result, "E208")
    assert (at(negative), negative.message) == (
        (16, 15),
        '`scratch` in resources of job "a" must be at least 0, found -1',
    )


def test_an_unknown_executor_leaves_the_resources_unjudged(catalog: Catalog) -> None:
    result = check(
        'executor "x" { kind = "nope" }\njob "a" {\n  run = "m:f"\n  executor = executor.x\n'
        "  resources { GPU = 1 }\n}",
        catalog,
    )
    assert codes(result) == ["E211"]


# --- E302: a remote executor cannot reach an embedded topic -----------------------------------


EMBEDDED = """
broker "local_bus" { kind = "embedded" }
topic "models" {}
"""


def test_e302_a_job_on_a_remote_executor_publishing_to_an_embedded_topic(
    catalog: Catalog,
) -> None:
    result = check(
        FARM
        + EMBEDDED
        + 'job "train" {\n  run = "m:f"\n  executor = executor.farm\n  publishes = topic.models\n}',
        catalog,
    )
    problem = one(result, "E302")
    assert at(problem) == (14, 15)
    assert problem.message == (
        'job "train" runs on remote executor "farm" (farm) but publishes to embedded topic "models"'
    )
    assert problem.label == (
        "a file on the orchestrator's disk: the executor's machines cannot reach it"
    )
    assert problem.help == (
        'put topic "models" on a kafka or nats broker, or run the job on an executor of '
        '`kind = "local"`'
    )
    assert [(r.span.line, r.span.column, r.message) for r in problem.related] == [
        (13, 14, "the executor is set here"),
        (9, 1, 'topic "models" is on this broker'),
    ]
    assert result.ir is None


def test_e302_points_at_the_flows_executor_when_the_job_inherits_it(catalog: Catalog) -> None:
    result = check(
        FARM
        + EMBEDDED
        + 'flow "f" { executor = executor.farm }\n'
        + 'job "train" {\n  run = "m:f"\n  publishes = [topic.models]\n}',
        catalog,
    )
    problem = one(result, "E302")
    assert at(problem) == (14, 16)
    assert (problem.related[0].span.line, problem.related[0].span.column) == (11, 23)


def test_jobs_on_this_machine_may_publish_to_embedded_topics(catalog: Catalog) -> None:
    source = (
        'executor "near" { kind = "nearby" }\n'
        + EMBEDDED
        + 'job "a" {\n  run = "m:f"\n  executor = executor.near\n  publishes = topic.models\n}\n'
        + 'job "b" {\n  run = "m:f"\n  publishes = topic.models\n}\n'
        + 'consumer "c" {\n  consumes = topic.models\n  run = "m:g"\n}\n'
    )
    result = check(source, catalog)
    assert result.ok, result.diagnostics


def test_a_remote_job_may_publish_to_a_kafka_topic(catalog: Catalog) -> None:
    source = (
        FARM
        + 'broker "bus" {\n  kind = "kafka"\n  bootstrap = "k:9092"\n}\ntopic "models" {}\n'
        + 'job "a" {\n  run = "m:f"\n  executor = executor.farm\n  publishes = topic.models\n}\n'
    )
    assert "E302" not in codes(check(source, catalog))


# --- E303: more than the executor can ever give ------------------------------------------------


def test_e303_memory_above_the_declared_capacity(catalog: Catalog) -> None:
    result = check(
        FARM
        + 'job "big" {\n  run = "m:f"\n  executor = executor.farm\n'
        + "  resources { memory = 64Gi }\n}",
        catalog,
    )
    problem = one(result, "E303")
    assert at(problem) == (11, 24)
    assert problem.message == (
        'job "big" asks for `memory = 64Gi`, more than executor "farm" (farm) ever gives '
        "one attempt (32Gi)"
    )
    assert problem.label == "no attempt of this job could ever start"
    assert problem.help == "ask for at most 32Gi, or declare more in the executor's options"
    assert [(r.span.line, r.message) for r in problem.related] == [(1, "its memory capacity: 32Gi")]


def test_e303_gpu_and_an_extra_above_the_capacity_each_get_one(catalog: Catalog) -> None:
    result = check(
        FARM
        + textwrap.dedent(
            """
        flow "f" { executor = executor.farm }
        job "train" {
          run = "m:f"
          resources { gpu = 2  GPU = 3  scratch = 11Gi }
        }
        """
        ),
        catalog,
    )
    found = [(d.message.split(",")[0], at(d)) for d in result.diagnostics if d.code == "E303"]
    assert found == [
        ('job "train" asks for `gpu = 2`', (12, 21)),
        ('job "train" asks for `GPU = 3`', (12, 30)),
        ('job "train" asks for `scratch = 11Gi`', (12, 43)),
    ]
    scratch = [d for d in result.diagnostics if d.code == "E303"][-1]
    assert scratch.message.endswith("(10Gi)")


def test_e303_on_an_executor_that_offers_none_of_a_resource(catalog: Catalog) -> None:
    source = 'executor "cpu_only" {\n  kind = "farm"\n  address = "x"\n}\n'
    source += 'job "a" {\n  run = "m:f"\n  executor = executor.cpu_only\n  resources { gpu = 1 }\n}'
    problem = one(check(source, catalog), "E303")
    assert problem.message == (
        'job "a" asks for `gpu = 1`, more than executor "cpu_only" (farm) ever gives one '
        "attempt (0)"
    )
    assert problem.help == (
        "run the job on an executor that offers gpu, or declare some in the executor's options"
    )


def test_demands_within_the_capacity_and_undeclared_ones_pass(catalog: Catalog) -> None:
    source = FARM + 'job "a" {\n  run = "m:f"\n  executor = executor.farm\n'
    source += "  resources { cpu = 64  memory = 32Gi  gpu = 1  GPU = 1  scratch = 10Gi }\n}"
    assert check(source, catalog).ok  # no `max_cpu`: nothing declared about cpu


def test_a_capacity_that_fails_in_the_plugin_is_no_error_of_the_flow(catalog: Catalog) -> None:
    source = 'executor "b" { kind = "broken" }\njob "a" {\n  run = "m:f"\n  executor = executor.b\n'
    source += "  resources { memory = 1Ti }\n}"
    assert check(source, catalog).ok


# --- W408, the picture ------------------------------------------------------------------------


def test_w408_an_executor_nothing_runs_on(catalog: Catalog) -> None:
    result = check(FARM + 'job "a" { run = "m:f" }', catalog)
    problem = one(result, "W408")
    assert problem.message == 'executor "farm" is never used'
    assert problem.label == "no job runs on it, and it is not the flow's `executor`"
    assert result.ir is not None


def test_the_flows_default_executor_is_used(catalog: Catalog) -> None:
    assert check(FARM + 'flow "f" { executor = executor.farm }', catalog).diagnostics == ()


def test_the_picture_shows_the_executor_and_what_runs_on_it(catalog: Catalog) -> None:
    dot = to_dot(
        compiled(FARM + 'flow "f" { executor = executor.farm }\njob "a" { run = "m:f" }', catalog)
    )
    assert (
        '"executor.farm" [label=<<B>farm</B><BR/><FONT POINT-SIZE="10" COLOR="#475569">farm' in dot
    )
    assert "shape=tab" in dot
    assert '"job.a" -> "executor.farm" [arrowhead=none' in dot
    assert "runs on" in dot  # the legend
    assert "executor farm" in dot  # the flow's defaults, in the title


def test_a_flow_without_executors_draws_no_executor(catalog: Catalog) -> None:
    dot = to_dot(compiled('job "a" { run = "m:f" }', catalog))
    assert "executor" not in dot and "runs on" not in dot


# --- the built-in executors, as installed ------------------------------------------------------


def test_a_job_on_a_local_executor_block_may_publish_to_an_embedded_topic() -> None:
    result = compile_source(
        textwrap.dedent(
            """
            executor "here" { kind = "local" }
            broker "bus" { kind = "embedded" }
            topic "t" {}
            job "a" {
              run       = "m:f"
              executor  = executor.here
              publishes = topic.t
              resources { cpu = 1  gpu = 0 }
            }
            consumer "c" {
              consumes = topic.t
              run      = "m:g"
            }
            """
        ),
        "main.flow",
    )
    assert result.ir is not None and result.diagnostics == (), result.diagnostics
    assert result.ir.jobs["a"].executor == "here"
    assert result.ir.executors["here"].kind == "local"
