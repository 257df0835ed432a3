"""Building backends (brokers, scalers, notifiers, executors) from a compiled flow.

The one place where an IR block becomes a live backend object: options are the
compiler-validated ones, `env()`/`secret()` are read from this process's
environment at that moment, relative paths are resolved against the flow file's
directory (`BackendContext`), and the class comes from the installed plugins.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tideflow.compiler.ir import ConsumerNode, EnvRef, ExecutorNode, FlowIR, NotifyNode, SecretRef
from tideflow.compiler.irjson import to_json
from tideflow.plugins.api import BackendContext, Broker, Executor, Notifier, Scaler
from tideflow.plugins.manager import installed_plugins

from .secrets import resolve_value


def resolved_options(value: Any, where: str) -> Any:
    """`value` with every `env()`/`secret()` read from the environment.

    Raises `secrets.UnresolvedValueError` naming the variable (never a value)."""
    if isinstance(value, EnvRef | SecretRef):
        return resolve_value(value, where)
    if isinstance(value, Mapping):
        return {key: resolved_options(item, where) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [resolved_options(item, where) for item in value]
    return value


def _context(flow: FlowIR, block: str) -> BackendContext:
    source = Path(flow.info.source) if flow.info.source else None
    return BackendContext(block=block, source=source)


def scaler_context(flow: FlowIR, consumer: ConsumerNode) -> BackendContext:
    """The context of `consumer`'s scaler: with the flow's IR JSON, which it hands
    to the instances it starts (they never compile the flow file again)."""
    return BackendContext(
        block=consumer.name,
        source=Path(flow.info.source) if flow.info.source else None,
        flow_ir_json=json.dumps(to_json(flow)),
    )


def open_broker(flow: FlowIR, broker: str, topics: Iterable[str] | None = None) -> Broker:
    """The broker block `broker` as a client carrying `topics` (default: all its topics)."""
    record = flow.brokers[broker]
    carried = [t for t in flow.topics.values() if t.broker == broker]
    if topics is not None:
        wanted = set(topics)
        carried = [t for t in carried if t.name in wanted]
    options = resolved_options(record.options, f'broker "{broker}"')
    broker_class = installed_plugins().broker_class(record.kind)
    return broker_class(options, carried, context=_context(flow, broker))


def open_topic_broker(flow: FlowIR, topic: str) -> Broker:
    """A client of the broker that carries `topic`, carrying just that topic."""
    return open_broker(flow, flow.topics[topic].broker, [topic])


def open_scaler(flow: FlowIR, consumer: ConsumerNode) -> Scaler:
    """The scaler backend named by `consumer`'s scale block; for a consumer without
    one, the `local` scaler (the scale block's default) with its default options."""
    if consumer.scale is None:
        backend, options = "local", {}
    else:
        backend = consumer.scale.backend
        options = resolved_options(consumer.scale.options, f'consumer "{consumer.name}" scale')
    scaler_class = installed_plugins().scaler_class(backend)
    return scaler_class(options, consumer, context=scaler_context(flow, consumer))


def open_notifier(flow: FlowIR, notify: NotifyNode) -> Notifier:
    options = resolved_options(notify.options, f'notify "{notify.name}"')
    notifier_class = installed_plugins().notifier_class(notify.kind)
    return notifier_class(options, context=_context(flow, notify.name))


def open_executor(flow: FlowIR, executor: ExecutorNode) -> Executor:
    options = resolved_options(executor.options, f'executor "{executor.name}"')
    executor_class = installed_plugins().executor_class(executor.kind)
    return executor_class(options, context=_context(flow, executor.name))
