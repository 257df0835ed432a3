"""The public plugin API: everything a tideflow plugin imports.

A plugin imports from here only (and `tideflow.testing` in its tests); nothing
here imports the rest of tideflow, so this stays the bottom layer that built-in
and third-party plugins alike stand on. `docs/plugins.md` has the table.

- `options`: option schemas (`Field`, `StringType`, `DurationType`, ...);
- `backends`: the interfaces (`Broker`, `Scaler`, `Notifier`) and `BackendContext`;
- `executors`: the `Executor` interface and what it is handed and gives back;
- `messages`: `Message`, `OutgoingMessage`, `BacklogReading`, `NotifyEvent`, ...;
- `errors`: `BackendError` and its kinds;
- `abilities`: optional abilities, checked with `isinstance`;
- `hooks`: `hookimpl` and the hooks; `registry`: what the hooks receive;
- `lint`: the `LintRule` protocol.
"""

from __future__ import annotations

from .abilities import ReportsAssignedPartitions, ReportsCrashLoops
from .backends import (
    DEFAULT_DRAIN_TIMEOUT,
    Backend,
    BackendContext,
    Broker,
    Notifier,
    Scaler,
    backend_summary,
    check_backend_class,
    ready_message,
)
from .errors import BackendClosedError, BackendConfigError, BackendError, UnknownTopicError
from .executors import (
    ATTEMPT_RESULT_STATUSES,
    AttemptError,
    AttemptHandle,
    AttemptRequest,
    AttemptResources,
    AttemptResult,
    Executor,
    SecretEnv,
    reply_from_json,
    worker_argv,
)
from .hooks import PROJECT_NAME, hookimpl
from .lint import LintRule
from .messages import (
    SUBJECT_HEADER,
    BacklogFailure,
    BacklogReading,
    Message,
    NotifyEvent,
    OutgoingMessage,
)
from .options import (
    BackendSpec,
    BackoffType,
    BlockSchema,
    BoolType,
    CallableType,
    Catalog,
    DurationType,
    EnumType,
    EnvRef,
    Field,
    IntType,
    ListType,
    LiteralType,
    MapType,
    NumberType,
    ObjectType,
    RefType,
    ScheduleType,
    SecretRef,
    SizeType,
    StringType,
    ValueType,
)
from .registry import BackendRegistry, LintRuleRegistry, RegistrationError

__all__ = [
    "ATTEMPT_RESULT_STATUSES",
    "DEFAULT_DRAIN_TIMEOUT",
    "PROJECT_NAME",
    "SUBJECT_HEADER",
    "AttemptError",
    "AttemptHandle",
    "AttemptRequest",
    "AttemptResources",
    "AttemptResult",
    "Backend",
    "BackendClosedError",
    "BackendConfigError",
    "BackendContext",
    "BackendError",
    "BackendRegistry",
    "BackendSpec",
    "BacklogFailure",
    "BacklogReading",
    "BackoffType",
    "BlockSchema",
    "BoolType",
    "Broker",
    "CallableType",
    "Catalog",
    "DurationType",
    "EnumType",
    "EnvRef",
    "Executor",
    "Field",
    "IntType",
    "LintRule",
    "LintRuleRegistry",
    "ListType",
    "LiteralType",
    "MapType",
    "Message",
    "Notifier",
    "NotifyEvent",
    "NumberType",
    "ObjectType",
    "OutgoingMessage",
    "RefType",
    "RegistrationError",
    "ReportsAssignedPartitions",
    "ReportsCrashLoops",
    "Scaler",
    "ScheduleType",
    "SecretEnv",
    "SecretRef",
    "SizeType",
    "StringType",
    "UnknownTopicError",
    "ValueType",
    "backend_summary",
    "check_backend_class",
    "hookimpl",
    "ready_message",
    "reply_from_json",
    "worker_argv",
]
