"""Run history: SQLite (WAL) by default, PostgreSQL by URL.

`Store.open(url)` migrates the schema to the newest revision (Alembic) before
anything else, so an old state file keeps working after an upgrade. Without a URL
it opens $TIDEFLOW_STATE, else `state.db` in the user's state folder
(`default_url()`): the same store whatever the current folder, so two commands
started in different places never keep two histories (nor fire a schedule twice).

Every method is one short transaction; the store is safe to share between threads
and between processes (SQLite's WAL lets the CLI read while the orchestrator writes).
`Store` is the only door: nothing outside this package runs SQL on the history or
sees a driver's exception (they surface as `StoreError`).
"""

from __future__ import annotations

from .attempts import MAX_OUTPUT_CHARS, FinishedAttempt, FirstStart
from .base import Fence, utcnow
from .consumers import CONSUMER_LOG_KEEP
from .errors import FencedError, StoreError, StoreNotFound
from .facade import Store
from .flows import FlowRecord
from .leases import LeaseGrant, LeaseState, lease_key
from .orchestrators import LiveOrchestrator, OrchestratorRecord
from .scaling import AppliedDecisions
from .triggers import TriggerRequest, TriggerRequestRecord
from .urls import STATE_ENV, default_url, describe_url, normalize_url, resolve_url

__all__ = [
    "CONSUMER_LOG_KEEP",
    "MAX_OUTPUT_CHARS",
    "STATE_ENV",
    "AppliedDecisions",
    "Fence",
    "FencedError",
    "FinishedAttempt",
    "FirstStart",
    "FlowRecord",
    "LeaseGrant",
    "LeaseState",
    "LiveOrchestrator",
    "OrchestratorRecord",
    "Store",
    "StoreError",
    "StoreNotFound",
    "TriggerRequest",
    "TriggerRequestRecord",
    "default_url",
    "describe_url",
    "lease_key",
    "normalize_url",
    "resolve_url",
    "utcnow",
]
