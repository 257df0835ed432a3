"""The module tideflow loads through the `tideflow` entry point: it registers the
broker and nothing else (the class does the work)."""

from __future__ import annotations

from tideflow.plugins.api import BackendRegistry, Broker, hookimpl

from .broker import RedisBroker


@hookimpl
def tideflow_register_brokers(registry: BackendRegistry[Broker]) -> None:
    registry.register(RedisBroker)
