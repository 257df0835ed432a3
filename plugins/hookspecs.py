"""Old home of the hooks and `hookimpl`: see `tideflow.plugins.api.hooks`.

A re-export kept while the built-in plugins move their imports to the API; it
goes away once nothing imports it.
"""

from __future__ import annotations

from .api.hooks import (
    PROJECT_NAME,
    hookimpl,
    tideflow_lint_rules,
    tideflow_register_brokers,
    tideflow_register_notifiers,
    tideflow_register_scalers,
)

__all__ = [
    "PROJECT_NAME",
    "hookimpl",
    "tideflow_lint_rules",
    "tideflow_register_brokers",
    "tideflow_register_notifiers",
    "tideflow_register_scalers",
]
