"""What a lint rule is: an organisation-specific check run on a compiled flow.

A plugin registers rule classes through the `tideflow_lint_rules` hook; the
plugin manager creates one instance of each, and the compiler runs it on every
flow that compiled without errors (`tideflow.compiler.rules`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from tideflow.compiler.ir import FlowIR
    from tideflow.dsl.diagnostics import Diagnostic

__all__ = ["LintRule"]


@runtime_checkable
class LintRule(Protocol):
    """An organisation-specific check, such as "every job has an owner"."""

    code: str  # such as "ACME001"; never one of tideflow's CODES
    summary: str  # one line

    def check(self, flow: FlowIR) -> Iterable[Diagnostic]: ...
