"""The `embedded` broker: durable topics and consumer groups in one SQLite file.

It needs no server: every process that opens the same file (the orchestrator, the
jobs that publish, each consumer instance) shares the same topics, and SQLite's
single writer lock (every change is one `BEGIN IMMEDIATE` transaction) keeps them
consistent.

The parts, one module each
    `storage`: the file's layout, SQLite's lock, the logs, retention and
    durability; `groups`: consumer groups, their members, partition ownership and
    the backlog; `claims`: delivery, leases and ordering; `broker`: the `Broker`
    interface over them (publishing, waiting, threads, processes), and its
    registration.
"""

from __future__ import annotations

from .broker import EmbeddedBroker, tideflow_register_brokers

__all__ = ["EmbeddedBroker", "tideflow_register_brokers"]
