"""Plugins: hookspecs, the plugin manager, and the built-in backends."""

from __future__ import annotations

from tideflow.compiler.schema import BackendSpec, Catalog

from . import builtin_options as opts

__all__ = ["builtin_catalog", "default_catalog"]


def builtin_catalog() -> Catalog:
    """The backends that ship with tideflow, by kind.

    The plugin manager (`load_plugins`) extends this with installed plugins.
    """
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
                "nats": BackendSpec("nats", opts.NATS_BROKER, "NATS JetStream (nats-py)."),
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
    """The catalog the compiler validates against when none is given."""
    return builtin_catalog()
