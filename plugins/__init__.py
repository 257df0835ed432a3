"""Plugins: hookspecs, the plugin manager, the backend interfaces, the built-ins.

`load_plugins()` loads the built-in plugins (`DEFAULT_PLUGINS`) and the installed
ones (entry-point group `tideflow`); `default_catalog()` and `default_lint_rules()`
are what the compiler uses when it is given none. Importing this package imports
nothing from the compiler, so the compiler may import it at module level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .backends import (
    SUBJECT_HEADER,
    Backend,
    BackendClosedError,
    BackendConfigError,
    BackendContext,
    BackendError,
    BacklogFailure,
    BacklogReading,
    Broker,
    Message,
    Notifier,
    NotifyEvent,
    OutgoingMessage,
    Scaler,
    UnknownTopicError,
)
from .hookspecs import hookimpl
from .manager import (
    DEFAULT_PLUGINS,
    ENTRY_POINT_GROUP,
    BackendEntry,
    PluginError,
    PluginInfo,
    PluginProblem,
    PluginSet,
    UnknownBackendError,
    installed_plugins,
    load_plugins,
)
from .registry import BackendRegistry, LintRuleRegistry, RegistrationError

if TYPE_CHECKING:
    from tideflow.compiler.rules import LintRule
    from tideflow.compiler.schema import Catalog

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "SUBJECT_HEADER",
    "Backend",
    "BackendClosedError",
    "BackendConfigError",
    "BackendContext",
    "BackendEntry",
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
    "PluginError",
    "PluginInfo",
    "PluginProblem",
    "PluginSet",
    "RegistrationError",
    "Scaler",
    "UnknownBackendError",
    "UnknownTopicError",
    "builtin_catalog",
    "default_catalog",
    "default_lint_rules",
    "hookimpl",
    "installed_plugins",
    "load_plugins",
]


def builtin_catalog() -> Catalog:
    """The option schemas of the backends that ship with tideflow, by kind.

    `load_plugins()` prefers a registered class's own declarations and keeps these
    for built-ins whose classes are not implemented yet.
    """
    from tideflow.compiler.schema import BackendSpec, Catalog

    from . import builtin_options as opts

    return Catalog(
        {
            "broker": {
                "embedded": BackendSpec(
                    "embedded",
                    opts.EMBEDDED_BROKER,
                    "Durable broker on SQLite; needs no server.",
                    partitioned=True,
                ),
                "kafka": BackendSpec(
                    "kafka", opts.KAFKA_BROKER, "Apache Kafka (confluent-kafka).", partitioned=True
                ),
                "nats": BackendSpec(
                    "nats", opts.NATS_BROKER, "NATS JetStream (nats-py).", subject_routed=True
                ),
            },
            "scaler": {
                "local": BackendSpec(
                    "local", opts.LOCAL_SCALER, "Consumer instances as supervised OS processes."
                ),
                "kubernetes": BackendSpec(
                    "kubernetes", opts.KUBERNETES_SCALER, "Replicas of a Deployment or StatefulSet."
                ),
            },
            "notifier": {
                "webhook": BackendSpec(
                    "webhook", opts.WEBHOOK_NOTIFIER, "HTTP POST of a JSON event."
                ),
                "command": BackendSpec(
                    "command", opts.COMMAND_NOTIFIER, "A program fed the JSON event."
                ),
            },
        }
    )


def default_catalog() -> Catalog:
    """The catalog the compiler validates against when none is given: the built-ins
    and every installed plugin, loaded once per process."""
    return installed_plugins().catalog


def default_lint_rules() -> tuple[LintRule, ...]:
    """The lint rules installed plugins register through `tideflow_lint_rules`, in
    plugin order (the compiler reports a rule that fails as W409)."""
    return installed_plugins().lint_rules
