"""Plugins' lint rules: run on a valid IR; a broken rule is W409, never a crash."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tideflow.compiler import CompileResult, LintRule, compile_source
from tideflow.compiler.ir import FlowIR
from tideflow.dsl.diagnostics import Diagnostic, Severity

FLOW = """\
job "extract" {
  run = "shop.jobs:extract"
}
job "load" {
  run         = "shop.jobs:load"
  description = "loads"
}
"""


@dataclass
class EveryJobHasADescription:
    code: str = "ACME001"
    summary: str = "every job says what it does"
    level: Severity | None = None

    def check(self, flow: FlowIR) -> Iterator[Diagnostic]:
        for name, job in flow.jobs.items():
            if job.description is None:
                yield Diagnostic(
                    self.code,
                    f'job "{name}" has no description',
                    flow.span_of("job", name),
                    level=self.level,
                )


@dataclass
class Crashes:
    code: str = "ACME002"
    summary: str = "always fails"

    def check(self, flow: FlowIR) -> Iterable[Diagnostic]:
        return [Diagnostic("ACME002", "x", None), flow.jobs["missing"]]  # type: ignore[list-item]


@dataclass
class ReturnsStrings:
    code: str = "ACME003"
    summary: str = "returns the wrong thing"

    def check(self, flow: FlowIR) -> Iterable[Diagnostic]:
        return ["job extract is bad"]  # type: ignore[list-item]


@dataclass
class Counting:
    code: str = "ACME004"
    summary: str = "counts its calls"
    calls: int = 0

    def check(self, flow: FlowIR) -> Iterable[Diagnostic]:
        self.calls += 1
        return ()


def lint(text: str, *rules: LintRule) -> CompileResult:
    return compile_source(text, "main.flow", rules=rules)


def test_the_protocol_accepts_a_plain_class() -> None:
    assert isinstance(EveryJobHasADescription(), LintRule)


def test_a_rule_reports_with_the_span_the_ir_keeps() -> None:
    result = lint(FLOW, EveryJobHasADescription(level=Severity.WARNING))
    assert [(d.code, d.span.line if d.span else 0, d.message) for d in result.diagnostics] == [
        ("ACME001", 1, 'job "extract" has no description')
    ]
    assert result.ok and result.ir is not None


def test_an_error_from_a_rule_rejects_the_flow() -> None:
    result = lint(FLOW, EveryJobHasADescription())
    assert [d.code for d in result.errors] == ["ACME001"]
    assert result.ir is None


def test_a_rule_that_raises_is_w409_naming_the_rule() -> None:
    result = lint(FLOW, Crashes(), EveryJobHasADescription(level=Severity.WARNING))
    problem = next(d for d in result.diagnostics if d.code == "W409")
    assert problem.message == (
        f"lint rule ACME002 ({__name__}.Crashes) failed: KeyError: 'missing'"
    )
    assert problem.span is None
    # the other rules still run and the flow still compiles
    assert "ACME001" in [d.code for d in result.diagnostics]
    assert result.ok and result.ir is not None


def test_a_rule_that_returns_something_else_is_w409() -> None:
    result = lint(FLOW, ReturnsStrings())
    assert [(d.code, d.message) for d in result.diagnostics] == [
        (
            "W409",
            f"lint rule ACME003 ({__name__}.ReturnsStrings) failed: "
            "it returned str, not a Diagnostic",
        )
    ]


def test_a_rule_may_not_take_a_tideflow_code() -> None:
    rule = Counting(code="E201")
    result = lint(FLOW, rule)
    assert [(d.code, d.message) for d in result.diagnostics] == [
        (
            "W409",
            f"lint rule E201 ({__name__}.Counting) uses tideflow's own code E201 and was skipped",
        )
    ]
    assert rule.calls == 0


def test_rules_do_not_run_on_a_flow_with_errors() -> None:
    rule = Counting()
    result = lint('job "a" {}', rule)
    assert rule.calls == 0
    assert [d.code for d in result.diagnostics] == ["E212"]
    lint(FLOW, rule)
    assert rule.calls == 1
