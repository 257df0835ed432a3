"""tideflow: a job orchestrator driven by a small text language.

What a job or handler function receives (docs/handlers.md): a job's `run`
function is called with a `JobContext`; a consumer's handler with a
`ConsumerContext` and a `HandlerMessage`. Import them for type hints::

    from tideflow import ConsumerContext, HandlerMessage, JobContext

    def extract(ctx: JobContext) -> None: ...
    def handle(ctx: ConsumerContext, message: HandlerMessage) -> None: ...

`tideflow.hookimpl` marks a plugin's hook implementations (see docs/plugins.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tideflow.plugins.api import hookimpl
    from tideflow.runtime.consumer.handler import ConsumerContext, HandlerMessage
    from tideflow.runtime.context import JobContext

__all__ = ["ConsumerContext", "HandlerMessage", "JobContext", "__version__", "hookimpl"]

__version__ = "0.1.0"

# Lazy: job worker processes import `tideflow` and must start fast; pluggy, the
# plugin machinery and the consumer runtime cost tens of ms they rarely need.
_LAZY = {
    "hookimpl": "tideflow.plugins.api",
    "JobContext": "tideflow.runtime.context",
    "ConsumerContext": "tideflow.runtime.consumer.handler",
    "HandlerMessage": "tideflow.runtime.consumer.handler",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tideflow' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
