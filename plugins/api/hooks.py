"""The hooks a tideflow plugin may implement, and the marker for implementing them.

Hooks only register: each receives a registry and hands it classes; the work
happens in those classes. Implement a hook with a module-level function of the
same name marked with `hookimpl`, in the module your distribution names in its
`tideflow` entry-point group:

.. code-block:: python

    from tideflow.plugins.api import hookimpl

    @hookimpl
    def tideflow_register_brokers(registry):
        registry.register(RedisBroker)

The markers write the options pluggy reads (the `tideflow_spec` and
`tideflow_impl` attributes, typed as pluggy's public `HookspecOpts` and
`HookimplOpts`, and compared with what pluggy's own markers write by
tests/plugins/test_api.py), so this module does not import pluggy: the IR and a
job worker import the API, and only the plugin manager needs pluggy.
`docs/plugins.md` documents each hook; a test fails when one lacks a docs entry
or a test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar, overload

if TYPE_CHECKING:
    from pluggy import HookimplOpts, HookspecOpts

    from .backends import Broker, Notifier, Scaler
    from .executors import Executor
    from .registry import BackendRegistry, LintRuleRegistry

__all__ = [
    "PROJECT_NAME",
    "hookimpl",
    "tideflow_lint_rules",
    "tideflow_register_brokers",
    "tideflow_register_executors",
    "tideflow_register_notifiers",
    "tideflow_register_scalers",
]

PROJECT_NAME: Final = "tideflow"

F = TypeVar("F", bound=Callable[..., Any])


def hookspec(function: F) -> F:
    """Mark `function` as the specification of a tideflow hook."""
    opts: HookspecOpts = {
        "firstresult": False,
        "historic": False,
        "warn_on_impl": None,
        "warn_on_impl_args": None,
    }
    setattr(function, f"{PROJECT_NAME}_spec", opts)
    return function


@overload
def hookimpl(function: F, *, tryfirst: bool = ..., trylast: bool = ...) -> F: ...


@overload
def hookimpl(
    function: None = None, *, tryfirst: bool = ..., trylast: bool = ...
) -> Callable[[F], F]: ...


def hookimpl(
    function: F | None = None, *, tryfirst: bool = False, trylast: bool = False
) -> F | Callable[[F], F]:
    """Mark a plugin's function as the implementation of a tideflow hook: `@hookimpl`,
    or `@hookimpl(tryfirst=True)` to run before (`trylast`: after) other plugins."""

    def mark(func: F) -> F:
        opts: HookimplOpts = {
            "wrapper": False,
            "hookwrapper": False,
            "optionalhook": False,
            "tryfirst": tryfirst,
            "trylast": trylast,
            "specname": None,
        }
        setattr(func, f"{PROJECT_NAME}_impl", opts)
        return func

    return mark if function is None else mark(function)


@hookspec
def tideflow_register_brokers(registry: BackendRegistry[Broker]) -> None:
    """Register broker classes: call ``registry.register(cls)`` for each subclass of
    :class:`tideflow.plugins.api.Broker` the plugin provides.

    A ``broker`` block names one by its ``name`` (``kind = "redis"``) and is checked
    against its ``options``.

    .. versionadded:: 0.1.0
    """


@hookspec
def tideflow_register_scalers(registry: BackendRegistry[Scaler]) -> None:
    """Register scaler classes: call ``registry.register(cls)`` for each subclass of
    :class:`tideflow.plugins.api.Scaler` the plugin provides.

    A consumer's ``scale`` block names one by its ``name`` (``backend = "local"``)
    and is checked against its ``options``.

    .. versionadded:: 0.1.0
    """


@hookspec
def tideflow_register_notifiers(registry: BackendRegistry[Notifier]) -> None:
    """Register notifier classes: call ``registry.register(cls)`` for each subclass
    of :class:`tideflow.plugins.api.Notifier` the plugin provides.

    A ``notify`` block names one by its ``name`` (``kind = "webhook"``) and is
    checked against its ``options``.

    .. versionadded:: 0.1.0
    """


@hookspec
def tideflow_register_executors(registry: BackendRegistry[Executor]) -> None:
    """Register executor classes: call ``registry.register(cls)`` for each subclass
    of :class:`tideflow.plugins.api.Executor` the plugin provides.

    An ``executor`` block names one by its ``name`` (``kind = "dask"``) and is
    checked against its ``options``; a job runs on it with
    ``executor = executor.NAME``.

    .. versionadded:: 0.3.0
    """


@hookspec
def tideflow_lint_rules(registry: LintRuleRegistry) -> None:
    """Register organisation-specific lint rules: call ``registry.register(cls)``
    for each lint rule class (see :class:`tideflow.plugins.api.LintRule`): a
    ``code`` (such as ``"ACME001"``, never one of tideflow's own codes), a one-line
    ``summary`` and a ``check(flow)`` method yielding
    :class:`tideflow.dsl.diagnostics.Diagnostic` for a compiled
    :class:`tideflow.compiler.ir.FlowIR`. The plugin manager creates one instance
    of each class, with no arguments.

    The rules run inside ``tideflow lint`` (after the flow compiled without
    errors) and report through the same diagnostics; a diagnostic from a rule
    sets ``level=`` because its code is its own.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       Rules are registered as classes, like backends; an instance is refused.
    """
