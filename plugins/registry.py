"""Old home of the registries hooks receive: see `tideflow.plugins.api.registry`.

A re-export kept while the built-in plugins move their imports to the API; it
goes away once nothing imports it.
"""

from __future__ import annotations

from .api.registry import BackendRegistry, LintRuleRegistry, RegistrationError

__all__ = ["BackendRegistry", "LintRuleRegistry", "RegistrationError"]
