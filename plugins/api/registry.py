"""The registries hooks receive: they check what a plugin hands them and keep it.

Every kind is registered the same way, as a class: backends as subclasses of
`Broker`, `Scaler` or `Notifier`, lint rules as classes the plugin manager
creates one instance of. The manager gives each hook implementation a fresh
registry, so that what it registers is attributed to its plugin (and dropped,
with a report, when the hook fails half-way).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Generic, TypeVar

from .backends import Backend, check_backend_class
from .lint import LintRule

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
        interface = f"tideflow.plugins.api.{self.interface.__name__}"
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
    """Handed to `tideflow_lint_rules`: `register(cls)` accepts a lint rule class
    with a `code`, a `summary` and a `check(flow)` method; the plugin manager
    creates one instance of it, with no arguments. `reserved` are the codes a rule
    may not take (tideflow's own)."""

    def __init__(self, reserved: Collection[str] = ()) -> None:
        self.reserved = reserved
        self.registered: list[type[LintRule]] = []

    def register(self, rule_class: type[LintRule]) -> type[LintRule]:
        """Register a lint rule class; returns it, so this may decorate the class.
        Raises `RegistrationError` when it is not a class, is incomplete, or takes
        one of tideflow's own codes."""
        if not isinstance(rule_class, type):
            raise RegistrationError(
                f"{_qualified(rule_class)} is not a class; register the lint rule's class "
                "(tideflow creates its instance)"
            )
        code = getattr(rule_class, "code", None)
        where = _qualified(rule_class)
        if not isinstance(code, str) or not LINT_CODE.match(code):
            raise RegistrationError(f'lint rule {where} needs a `code` such as "ACME001"')
        if code in self.reserved:
            raise RegistrationError(
                f"lint rule code {code} is one of tideflow's own codes; choose a code of "
                "your own (for example with your organisation's prefix)"
            )
        summary = getattr(rule_class, "summary", None)
        if not isinstance(summary, str) or not summary.strip():
            raise RegistrationError(f"lint rule {code} needs a one-line `summary`")
        if not callable(getattr(rule_class, "check", None)):
            raise RegistrationError(f"lint rule {code} needs a `check(flow)` method")
        self.registered.append(rule_class)
        return rule_class
