"""tideflow: a job orchestrator driven by a small text language.

`tideflow.hookimpl` marks a plugin's hook implementations (see docs/plugins.md).
"""

from __future__ import annotations

from typing import Any

__all__ = ["__version__", "hookimpl"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy: job worker processes import `tideflow` and must start fast; pluggy and
    # the plugin machinery cost ~50 ms they rarely need.
    if name == "hookimpl":
        from tideflow.plugins.hookspecs import hookimpl

        return hookimpl
    raise AttributeError(f"module 'tideflow' has no attribute {name!r}")
