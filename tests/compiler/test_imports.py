"""The import check (E501-E503): each `run` function is imported as the runtime will
import it, and checked against how the runtime calls it."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from tideflow.compiler import compile_flow
from tideflow.compiler.imports import (
    check_imports,
    handler_signature_problem,
    job_signature_problem,
)
from tideflow.dsl.diagnostics import CODES, Diagnostic

MODULE = """
import asyncio

def with_ctx(ctx):
    pass

def without_anything():
    pass

def with_defaults(ctx, day="today"):
    pass

def with_star(*args, **kwargs):
    pass

async def async_job(ctx):
    await asyncio.sleep(0)

def two_required(ctx, day):
    pass

def keyword_only(*, day):
    pass

def handle(ctx, message):
    pass

def handle_one(message):
    pass

class Callable:
    def __call__(self, ctx, message):
        pass

instance = Callable()
NOT_A_FUNCTION = 3
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A flow's folder with a package `icjobs` (unique to this test: imports are cached)."""
    package = tmp_path / "icjobs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(MODULE)
    (package / "broken.py").write_text("import math\nVALUE = 1 / 0\n")
    (package / "needs.py").write_text("import not_installed_anywhere_xyz\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("icjobs"):
            del sys.modules[name]


def diagnostics(project: Path, body: str) -> list[Diagnostic]:
    path = project / "flow.flow"
    path.write_text('flow "f" {}\n' + textwrap.dedent(body))
    result = compile_flow(path)
    assert result.ir is not None, result.diagnostics
    return check_imports(result.ir, result.files)


def job(name: str, target: str) -> str:
    return f'job "{name}" {{\n  run = "{target}"\n}}\n'


def test_functions_the_runtime_can_call_pass(project: Path) -> None:
    jobs = ["with_ctx", "without_anything", "with_defaults", "with_star", "async_job"]
    body = "".join(job(name, f"icjobs.tasks:{name}") for name in jobs)
    body += 'broker "b" { kind = "embedded" }\ntopic "t" { broker = broker.b }\n'
    body += 'consumer "c" {\n  consumes = topic.t\n  run = "icjobs.tasks:handle"\n}\n'
    body += 'consumer "d" {\n  consumes = topic.t\n  run = "icjobs.tasks:instance"\n}\n'
    assert diagnostics(project, body) == []


def test_e501_a_missing_module_is_reported_at_the_run_value(project: Path) -> None:
    (problem,) = diagnostics(project, job("extract", "icjobz.tasks:with_ctx"))
    assert problem.code == "E501"
    assert problem.message == (
        'job "extract" runs `icjobz.tasks:with_ctx`, but there is no module `icjobz`'
    )
    assert problem.span is not None
    assert (problem.span.line, problem.span.column) == (3, 9)
    assert problem.help == "did you mean `icjobs.tasks:with_ctx`?"
    assert problem.notes == (
        "modules are looked for in the flow file's folder, then in the installed packages",
    )


def test_e501_a_missing_submodule(project: Path) -> None:
    (problem,) = diagnostics(project, job("extract", "icjobs.tsks:with_ctx"))
    assert (problem.code, problem.label) == ("E501", "no module `icjobs.tsks`")


def test_e501_a_module_that_raises_on_import_says_what_and_where(project: Path) -> None:
    (problem,) = diagnostics(project, job("extract", "icjobs.broken:anything"))
    assert problem.code == "E501"
    assert "importing `icjobs.broken` raised ZeroDivisionError: division by zero" in (
        problem.message
    )
    assert problem.notes == ("raised at icjobs/broken.py:2",)


def test_e501_a_module_importing_something_not_installed(project: Path) -> None:
    (problem,) = diagnostics(project, job("extract", "icjobs.needs:anything"))
    assert problem.code == "E501"
    assert "raised ModuleNotFoundError: No module named 'not_installed_anywhere_xyz'" in (
        problem.message
    )


def test_e502_a_missing_function_with_a_suggestion(project: Path) -> None:
    (problem,) = diagnostics(project, job("extract", "icjobs.tasks:with_ctc"))
    assert problem.code == "E502"
    assert problem.message == (
        'job "extract" runs `icjobs.tasks:with_ctc`, but module `icjobs.tasks` has no `with_ctc`'
    )
    assert problem.help == "did you mean `with_ctx`?"


def test_e502_not_a_function(project: Path) -> None:
    (problem,) = diagnostics(project, job("extract", "icjobs.tasks:NOT_A_FUNCTION"))
    assert problem.code == "E502"
    assert problem.message.endswith("which is not a function (it is int)")


@pytest.mark.parametrize(
    ("function", "label"),
    [("two_required", "it takes `(ctx, day)`"), ("keyword_only", "it takes `(*, day)`")],
)
def test_e503_a_job_function_with_the_wrong_signature(
    project: Path, function: str, label: str
) -> None:
    (problem,) = diagnostics(project, job("extract", f"icjobs.tasks:{function}"))
    assert problem.code == "E503"
    assert problem.label == label
    assert problem.help == "a job's function takes one argument, `ctx`, or none"
    assert problem.notes and problem.notes[0].startswith("defined at icjobs/tasks.py:")


def test_e503_a_handler_with_the_wrong_signature(project: Path) -> None:
    body = 'broker "b" { kind = "embedded" }\ntopic "t" { broker = broker.b }\n'
    body += job("p", "icjobs.tasks:with_ctx").replace("\n}", "\n  publishes = topic.t\n}")
    body += 'consumer "c" {\n  consumes = topic.t\n  run = "icjobs.tasks:handle_one"\n}\n'
    (problem,) = diagnostics(project, body)
    assert problem.code == "E503"
    assert problem.message.startswith('consumer "c" runs `icjobs.tasks:handle_one`')
    assert problem.label == "it takes `(message)`"
    assert problem.help == "a handler takes two arguments, `(ctx, message)`"


def test_command_jobs_are_not_checked(project: Path) -> None:
    assert diagnostics(project, 'job "x" { command = ["true"] }\n') == []


def test_the_signature_rules() -> None:
    assert job_signature_problem(lambda ctx: None) is None
    assert job_signature_problem(lambda: None) is None
    assert job_signature_problem(print) is None  # a builtin: no signature to judge
    assert job_signature_problem(lambda a, b: None) is not None
    assert handler_signature_problem(lambda ctx, message: None) is None
    assert handler_signature_problem(lambda ctx: None) is not None


def test_the_codes_are_registered() -> None:
    assert {"E501", "E502", "E503"} <= set(CODES)
