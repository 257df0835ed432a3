"""Handlers of examples/quickstart.flow.

The runtime imports `quickstart.jobs` and `quickstart.workers` with the flow
file's directory on `sys.path`, and calls each handler with a context object:
a `tideflow.JobContext` for jobs, a `tideflow.ConsumerContext` and a
`tideflow.HandlerMessage` for the consumer (docs/handlers.md is the full
reference). The part of that contract these handlers use (`Context` below is
only a description of it, so that the tests can pass a stand-in):

- `ctx.publish(topic, value, key=None)`: publish `value` (JSON-serialisable) to
  the named topic, which must be one the job `publishes`; `key` chooses the
  partition.
- `ctx.params`: the `params` map of the job or consumer, as plain Python values.
- `ctx.logger`: a `logging.Logger` whose records land in the run's log.
- `ctx.run_id`: the id of the current run (a string).
- `ctx.scheduled_at`: the instant the run was scheduled for, an aware
  `datetime`, or None for a run that no schedule started.

A job is called as `function(ctx)`; a consumer's handler as
`function(ctx, message)`, where `message.value` is the published value and
`message.key` its key. A handler that raises fails the attempt (jobs) or the
message (consumers: it is delivered again, then dead-lettered).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol


class Context(Protocol):
    """What a handler may use of the context the runtime passes it."""

    @property
    def params(self) -> Mapping[str, Any]: ...

    @property
    def logger(self) -> logging.Logger: ...

    @property
    def run_id(self) -> str: ...

    @property
    def scheduled_at(self) -> datetime | None: ...

    def publish(self, topic: str, value: Any, key: str | None = None) -> None: ...


class Message(Protocol):
    """A message as a consumer's handler receives it."""

    @property
    def value(self) -> Any: ...

    @property
    def key(self) -> str | None: ...
