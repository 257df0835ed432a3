"""The run-history schema (SQLAlchemy Core). Changes go through a migration in
`tideflow.runtime.migrations` (and `migrate.HEAD_REVISION` names the newest).

Times are stored as timezone-aware UTC (`UTCDateTime`), on SQLite as ISO text and
on PostgreSQL as `timestamptz`, so that SQL an operator writes reads naturally.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite without a native type
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


flows = sa.Table(
    "flows",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("ir", sa.JSON, nullable=False),  # compiled IR (secrets as references only)
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

flow_runs = sa.Table(
    "flow_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("flow", sa.String(200), nullable=False, index=True),
    sa.Column("root_job", sa.String(200), nullable=False),
    sa.Column("trigger", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("scheduled_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False, index=True),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("params", sa.JSON, nullable=False),
)

job_runs = sa.Table(
    "job_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("flow_run_id", sa.Integer, sa.ForeignKey("flow_runs.id"), nullable=False, index=True),
    sa.Column("flow", sa.String(200), nullable=False),
    sa.Column("job", sa.String(200), nullable=False),
    sa.Column("trigger", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("scheduled_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("note", sa.Text),  # why it ended without an attempt
    sa.Index("ix_job_runs_flow_job_created", "flow", "job", "created_at"),
    sa.Index("ix_job_runs_status", "status"),
    sa.Index("ix_job_runs_created_at", "created_at"),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_run_id", sa.Integer, sa.ForeignKey("job_runs.id"), nullable=False, index=True),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("exit_code", sa.Integer),
    sa.Column("pid", sa.Integer),
    sa.Column("host", sa.String(255)),
    sa.Column("orchestrator_id", sa.Integer),
    sa.Column("stdout", sa.Text, nullable=False, default=""),
    sa.Column("stderr", sa.Text, nullable=False, default=""),
    sa.Column("error_type", sa.String(300)),
    sa.Column("error_message", sa.Text),
    sa.Column("error_traceback", sa.Text),
    sa.Column("error_function", sa.String(300)),
    sa.Column("error_location", sa.String(500)),
    sa.Column("executor", sa.String(200)),
    sa.Column("executor_ref", sa.String(300)),
    sa.Column("executor_where", sa.String(500)),
    sa.UniqueConstraint("job_run_id", "number"),
)

log_lines = sa.Table(
    "log_lines",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("attempt_id", sa.Integer, sa.ForeignKey("attempts.id"), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("level", sa.String(10), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
)

schedule_state = sa.Table(
    "schedule_state",
    metadata,
    sa.Column("flow", sa.String(200), primary_key=True),
    sa.Column("job", sa.String(200), primary_key=True),
    sa.Column("last_fired_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

orchestrators = sa.Table(
    "orchestrators",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("flows", sa.JSON, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),  # the scheduler's last tick
    sa.Column("stopped_at", UTCDateTime),
)

# A manual trigger from the CLI or the dashboard waits here until the orchestrator
# running its flow claims it (the store is the only channel between them).
trigger_requests = sa.Table(
    "trigger_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("flow", sa.String(200), nullable=False),
    sa.Column("job", sa.String(200), nullable=False),
    sa.Column("trigger", sa.String(20), nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("requested_at", UTCDateTime, nullable=False),
    sa.Column("requested_by", sa.String(255), nullable=False),
    sa.Column("claimed_by", sa.Integer),  # orchestrators.id
    sa.Column("claimed_at", UTCDateTime),
    sa.Column("flow_run_id", sa.Integer),
    sa.Index("ix_trigger_requests_flow_claimed", "flow", "claimed_by"),
)

# One row per consumer instance (`tideflow worker` process or pod), updated by
# its heartbeat: what the runtime, the CLI and the dashboard show as "instances".
consumer_instances = sa.Table(
    "consumer_instances",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # chosen by the instance (uuid)
    sa.Column("flow", sa.String(200), nullable=False),
    sa.Column("consumer", sa.String(200), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),
    sa.Column("stopped_at", UTCDateTime),
    sa.Column("handled", sa.BigInteger, nullable=False),
    sa.Column("failed", sa.BigInteger, nullable=False),
    sa.Column("dead_lettered", sa.BigInteger, nullable=False),
    sa.Column("in_flight", sa.Integer, nullable=False),
    sa.Column("rate", sa.Float, nullable=False),  # messages handled per second, recently
    sa.Column("partitions", sa.JSON, nullable=False),  # partitions it holds, when known
    sa.Column("last_error", sa.Text),
    sa.Index("ix_consumer_instances_flow_consumer", "flow", "consumer"),
)

# Every autoscaler decision with its inputs, so "why 7 instances now?" has an answer.
scale_decisions = sa.Table(
    "scale_decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("flow", sa.String(200), nullable=False),
    sa.Column("consumer", sa.String(200), nullable=False),
    sa.Column("taken_at", UTCDateTime, nullable=False),
    sa.Column("backlog", sa.BigInteger),  # None when the reading failed
    sa.Column("per_partition", sa.JSON, nullable=False),
    sa.Column("partitions", sa.Integer),
    sa.Column("reading_error", sa.Text),
    sa.Column("current", sa.Integer, nullable=False),
    sa.Column("desired", sa.Integer, nullable=False),
    sa.Column("applied", sa.Boolean, nullable=False),  # the scaler was told to change
    sa.Column("reason", sa.String(40), nullable=False),
    sa.Column("explanation", sa.Text, nullable=False),  # the arithmetic, in words
    sa.Column("rule", sa.JSON, nullable=False),
    sa.Index("ix_scale_decisions_flow_consumer_taken", "flow", "consumer", "taken_at"),
)

# One row per message a consumer instance gave up on (dead-lettered, or dropped when
# the consumer has no dead-letter topic): what `status`, `explain`, `/metrics` count
# and what the orchestrator's `dead_letter` notifications are made of.
dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("flow", sa.String(200), nullable=False),
    sa.Column("consumer", sa.String(200), nullable=False),
    sa.Column("instance_id", sa.String(64), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("topic", sa.String(255), nullable=False),  # where the message came from
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("dead_letter_topic", sa.String(255)),  # None: dropped (no dead_letter topic)
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("notified_at", UTCDateTime),  # when the orchestrator told the notify blocks
    sa.Index("ix_dead_letters_flow_consumer", "flow", "consumer"),
    sa.Index("ix_dead_letters_notified_at", "notified_at"),
)

# What consumer instances log (the handler's `ctx.logger` and the instance's own
# lines), written with each heartbeat; `tideflow logs --consumer` and the dashboard
# read it. Each instance keeps its newest CONSUMER_LOG_KEEP lines (see the store).
consumer_log_lines = sa.Table(
    "consumer_log_lines",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("flow", sa.String(200), nullable=False),
    sa.Column("consumer", sa.String(200), nullable=False),
    sa.Column("instance_id", sa.String(64), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("level", sa.String(10), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Index("ix_consumer_log_lines_flow_consumer", "flow", "consumer"),
    sa.Index("ix_consumer_log_lines_instance_id", "instance_id"),
)

# One row per set of flows run together (`key`: their names, sorted, comma-joined): the
# orchestrator that leads them (`holder`), and the fencing token that grows at every
# change of leader and that every write acting on the world checks. Times are seconds
# since the epoch by the DATABASE's clock, so that expiry never depends on the clocks of
# the hosts that run orchestrators.
leader_leases = sa.Table(
    "leader_leases",
    metadata,
    sa.Column("key", sa.String(500), primary_key=True),
    sa.Column("holder", sa.Integer),  # orchestrators.id; None: released
    sa.Column("token", sa.BigInteger, nullable=False),
    sa.Column("acquired_at", sa.Float, nullable=False),
    sa.Column("renewed_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("released_at", sa.Float),  # set by a graceful release
    sa.Column("previous_holder", sa.Integer),  # the holder before the current term
    sa.Column("previous_expires_at", sa.Float),  # when that term ended (release or expiry)
)
