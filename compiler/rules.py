"""Lint rules from plugins: organisation-specific checks run on a valid IR.

A rule (`tideflow.plugins.api.LintRule`) has a `code`, a one-line `summary` and
a `check(flow)` method yielding diagnostics (plugins register rule classes
through the `tideflow_lint_rules` hook; the plugin manager creates them). A
rule that raises, yields something other than a `Diagnostic`, or claims one of
tideflow's own codes does not stop a compile: it is reported as W409, naming the
rule, and its findings are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from tideflow.dsl.diagnostics import CODES, Diagnostic
from tideflow.plugins.api.lint import LintRule

from .ir import FlowIR

__all__ = ["LintRule", "run_rules"]


def run_rules(flow: FlowIR, rules: Sequence[LintRule]) -> list[Diagnostic]:
    """Every rule's findings, in rule order; a broken rule becomes one W409."""
    found: list[Diagnostic] = []
    for rule in rules:
        name = _describe(rule)
        if rule.code in CODES:
            found.append(
                Diagnostic(
                    "W409",
                    f"lint rule {name} uses tideflow's own code {rule.code} and was skipped",
                    None,
                    help="give the rule a code of its own, such as ACME001",
                )
            )
            continue
        try:
            results = list(rule.check(flow))
        except Exception as exc:
            # a plugin's bug must not stop the compile or show a traceback
            found.append(
                Diagnostic(
                    "W409",
                    f"lint rule {name} failed: {type(exc).__name__}: {exc}",
                    None,
                    help="report this to the rule's authors; the flow itself compiled",
                )
            )
            continue
        strays = [r for r in results if not isinstance(r, Diagnostic)]
        if strays:
            found.append(
                Diagnostic(
                    "W409",
                    f"lint rule {name} failed: it returned {type(strays[0]).__name__}, "
                    "not a Diagnostic",
                    None,
                )
            )
            continue
        found.extend(results)
    return found


def _describe(rule: LintRule) -> str:
    kind = type(rule)
    return f"{rule.code} ({kind.__module__}.{kind.__qualname__})"
