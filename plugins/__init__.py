"""Plugins: the public plugin API, the plugin manager, the built-in backends.

- `tideflow.plugins.api`: everything a plugin imports (option types, the backend
  interfaces, messages, errors, `hookimpl`, the registries);
- `tideflow.plugins.manager`: finding and loading plugins (`load_plugins()`,
  `installed_plugins()`, `default_catalog()`);
- the other modules: the built-in backends, plugins like any other.

Importing this package imports none of them. The names it used to export still
work for one release, with a `DeprecationWarning` naming their new home.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

__all__: list[str] = []

_API_NAMES = frozenset(
    {
        "SUBJECT_HEADER",
        "Backend",
        "BackendClosedError",
        "BackendConfigError",
        "BackendContext",
        "BackendError",
        "BackendRegistry",
        "BacklogFailure",
        "BacklogReading",
        "Broker",
        "LintRuleRegistry",
        "Message",
        "Notifier",
        "NotifyEvent",
        "OutgoingMessage",
        "RegistrationError",
        "Scaler",
        "UnknownTopicError",
        "hookimpl",
    }
)
_MANAGER_NAMES = frozenset(
    {
        "DEFAULT_PLUGINS",
        "ENTRY_POINT_GROUP",
        "BackendEntry",
        "PluginError",
        "PluginInfo",
        "PluginProblem",
        "PluginSet",
        "UnknownBackendError",
        "default_catalog",
        "default_lint_rules",
        "installed_plugins",
        "load_plugins",
    }
)


def __getattr__(name: str) -> Any:
    if name in _API_NAMES:
        home = "tideflow.plugins.api"
    elif name in _MANAGER_NAMES:
        home = "tideflow.plugins.manager"
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"tideflow.plugins.{name} moved: import it from {home}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(home), name)
