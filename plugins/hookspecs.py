"""The hooks a tideflow plugin may implement.

Hooks only register: each receives a registry and hands it classes (or lint rule
objects); the work happens in those classes. Implement a hook with a module-level
function of the same name marked with `tideflow.hookimpl`, in the module your
distribution names in its `tideflow` entry-point group:

.. code-block:: python

    import tideflow

    @tideflow.hookimpl
    def tideflow_register_brokers(registry):
        registry.register(RedisBroker)

`docs/plugins.md` documents each hook; a test fails when one lacks a docs entry
or a test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .backends import Broker, Notifier, Scaler
    from .registry import BackendRegistry, LintRuleRegistry

PROJECT_NAME = "tideflow"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Marks a plugin's function as the implementation of a tideflow hook.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def tideflow_register_brokers(registry: BackendRegistry[Broker]) -> None:
    """Register broker classes: call ``registry.register(cls)`` for each subclass of
    :class:`tideflow.plugins.Broker` the plugin provides.

    A ``broker`` block names one by its ``name`` (``kind = "redis"``) and is checked
    against its ``options``.

    .. versionadded:: 0.1.0
    """


@hookspec
def tideflow_register_scalers(registry: BackendRegistry[Scaler]) -> None:
    """Register scaler classes: call ``registry.register(cls)`` for each subclass of
    :class:`tideflow.plugins.Scaler` the plugin provides.

    A consumer's ``scale`` block names one by its ``name`` (``backend = "local"``)
    and is checked against its ``options``.

    .. versionadded:: 0.1.0
    """


@hookspec
def tideflow_register_notifiers(registry: BackendRegistry[Notifier]) -> None:
    """Register notifier classes: call ``registry.register(cls)`` for each subclass
    of :class:`tideflow.plugins.Notifier` the plugin provides.

    A ``notify`` block names one by its ``name`` (``kind = "webhook"``) and is
    checked against its ``options``.

    .. versionadded:: 0.1.0
    """


@hookspec
def tideflow_lint_rules(registry: LintRuleRegistry) -> None:
    """Register organisation-specific lint rules: call ``registry.register(rule)``
    with objects that have a ``code`` (such as ``"ACME001"``, never one of
    tideflow's own codes), a one-line ``summary`` and a ``check(flow)`` method
    yielding :class:`tideflow.dsl.diagnostics.Diagnostic` for a compiled
    :class:`tideflow.compiler.ir.FlowIR`.

    The rules run inside ``tideflow lint`` (after the flow compiled without
    errors) and report through the same diagnostics; a diagnostic from a rule
    sets ``level=`` because its code is its own.

    .. versionadded:: 0.1.0
    """
