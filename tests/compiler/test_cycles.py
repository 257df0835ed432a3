"""E301: dependency cycles among jobs, each reported once with its path."""

from __future__ import annotations

import textwrap

from tideflow.compiler import CompileResult, compile_source


def check(text: str) -> CompileResult:
    return compile_source(textwrap.dedent(text).lstrip("\n"), "main.flow")


def cycles(result: CompileResult) -> list[tuple[int, int, str]]:
    return [
        (d.span.line, d.span.column, d.message)
        for d in result.diagnostics
        if d.code == "E301" and d.span is not None
    ]


def test_a_cycle_prints_its_path_from_the_first_declared_job() -> None:
    result = check(
        """
        job "extract"   {
          run   = "m:f"
          after = job.transform
        }
        job "report"    {
          run   = "m:f"
          after = job.extract
        }
        job "transform" {
          run   = "m:f"
          after = [job.report]
        }
        """
    )
    assert cycles(result) == [
        (
            3,
            11,
            'dependency cycle: job "extract" -> job "transform" -> job "report" -> job "extract"',
        )
    ]
    problem = next(d for d in result.diagnostics if d.code == "E301")
    assert problem.label == 'job "extract" waits for job "transform"'
    assert [(r.span.line, r.span.column, r.message) for r in problem.related] == [
        (11, 12, 'job "transform" waits for job "report"'),
        (7, 11, 'job "report" waits for job "extract"'),
    ]
    assert result.ir is None


def test_a_job_after_itself_is_a_cycle() -> None:
    result = check('job "a" {\n  run = "m:f"\n  after = [job.b, job.a]\n}\njob "b" { run = "m:f" }')
    assert cycles(result) == [(3, 19, 'dependency cycle: job "a" -> job "a"')]


def test_each_cycle_group_is_reported_once() -> None:
    # two separate cycles, and a group (c, d, e) holding more than one cycle
    result = check(
        """
        job "a" {
          run = "m:f"
          after = job.b
        }
        job "b" {
          run = "m:f"
          after = job.a
        }
        job "c" {
          run = "m:f"
          after = [job.d, job.e]
        }
        job "d" {
          run = "m:f"
          after = job.e
        }
        job "e" {
          run = "m:f"
          after = job.c
        }
        job "ok" {
          run = "m:f"
          after = [job.a, job.c]
        }
        """
    )
    found = cycles(result)
    assert len(found) == 2
    assert found[0] == (3, 11, 'dependency cycle: job "a" -> job "b" -> job "a"')
    assert found[1][:2] == (11, 12)
    assert found[1][2].startswith('dependency cycle: job "c" -> job "d" -> job "e" -> job "c"')


def test_a_long_chain_is_not_a_cycle_and_checks_quickly() -> None:
    jobs = ['job "j0" { run = "m:f" }'] + [
        f'job "j{i}" {{\n  run = "m:f"\n  after = [job.j{i - 1}]\n}}' for i in range(1, 3000)
    ]
    result = check("\n".join(jobs))
    assert result.ok and cycles(result) == []
    assert result.ir is not None
    order = result.ir.dependency_graph()
    assert order.has_edge("j0", "j1") and not order.has_edge("j1", "j0")


def test_undefined_dependencies_do_not_count_as_cycles() -> None:
    result = check('job "a" {\n  run = "m:f"\n  after = job.missing\n}')
    assert [d.code for d in result.diagnostics] == ["E207"]
