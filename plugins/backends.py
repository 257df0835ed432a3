"""Old home of the backend interfaces and message types: see `tideflow.plugins.api`.

A re-export kept while the built-in plugins move their imports to the API; it
goes away once nothing imports it.
"""

from __future__ import annotations

from .api.backends import (
    BACKEND_NAME,
    Backend,
    BackendContext,
    Broker,
    Notifier,
    Scaler,
    backend_summary,
    check_backend_class,
)
from .api.errors import BackendClosedError, BackendConfigError, BackendError, UnknownTopicError
from .api.messages import (
    SUBJECT_HEADER,
    BacklogFailure,
    BacklogReading,
    Message,
    NotifyEvent,
    OutgoingMessage,
)

__all__ = [
    "BACKEND_NAME",
    "SUBJECT_HEADER",
    "Backend",
    "BackendClosedError",
    "BackendConfigError",
    "BackendContext",
    "BackendError",
    "BacklogFailure",
    "BacklogReading",
    "Broker",
    "Message",
    "Notifier",
    "NotifyEvent",
    "OutgoingMessage",
    "Scaler",
    "UnknownTopicError",
    "backend_summary",
    "check_backend_class",
]
