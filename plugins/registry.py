"""The registries hooks receive: they check what a plugin hands them and keep it.

The plugin manager gives each hook implementation a fresh registry, so that what
it registers is attributed to its plugin (and dropped, with a report, when the
hook fails half-way).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Generic, TypeVar

from .backends import Backend, check_backend_class

if TYPE_CHECKING:
    from tideflow.compiler.rules import LintRule

__all__ = ["BackendRegistry", "LintRuleRegistry", "RegistrationError"]

B = TypeVar("B", bound=Backend)

LINT_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")


class RegistrationError(Exception):
    """A plugin handed a registry something it cannot accept."""


def _qualified(obj: object) -> str:
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    return repr(obj)


class BackendRegistry(Generic[B]):
    """Handed to `tideflow_register_brokers` (and the scaler and notifier hooks):
    `register(cls)` accepts a subclass of the kind's interface whose declarations
    (name, options, docstring) are complete."""

    def __init__(self, kind: str, interface: type[B]) -> None:
        self.kind = kind
        self.interface = interface
        self.registered: list[type[B]] = []

    def register(self, backend_class: type[B]) -> type[B]:
        """Register a backend class; returns it, so this may decorate the class.
        Raises `RegistrationError` for anything but a complete backend class."""
        interface = f"tideflow.plugins.{self.interface.__name__}"
        if not isinstance(backend_class, type) or not issubclass(backend_class, self.interface):
            raise RegistrationError(
                f"{_qualified(backend_class)} is not a {self.kind} class "
                f"(a subclass of {interface})"
            )
        problems = check_backend_class(backend_class)
        if problems:
            raise RegistrationError("; ".join(problems))
        self.registered.append(backend_class)
        return backend_class


class LintRuleRegistry:
    """Handed to `tideflow_lint_rules`: `register(rule)` accepts an object with a
    `code`, a `summary` and a `check(flow)` method."""

    def __init__(self) -> None:
        self.registered: list[LintRule] = []

    def register(self, rule: LintRule) -> LintRule:
        """Register a lint rule object (an instance, not a class); returns it.
        Raises `RegistrationError` when it is incomplete or takes one of
        tideflow's own codes."""
        from tideflow.dsl.diagnostics import CODES

        if isinstance(rule, type):
            raise RegistrationError(f"{_qualified(rule)} is a class; register an instance of it")
        code = getattr(rule, "code", None)
        if not isinstance(code, str) or not LINT_CODE.match(code):
            raise RegistrationError(f'lint rule {rule!r} needs a `code` such as "ACME001"')
        if code in CODES:
            raise RegistrationError(
                f"lint rule code {code} is one of tideflow's own codes; choose a code of "
                "your own (for example with your organisation's prefix)"
            )
        summary = getattr(rule, "summary", None)
        if not isinstance(summary, str) or not summary.strip():
            raise RegistrationError(f"lint rule {code} needs a one-line `summary`")
        if not callable(getattr(rule, "check", None)):
            raise RegistrationError(f"lint rule {code} needs a `check(flow)` method")
        self.registered.append(rule)
        return rule
