"""Run history: flows, flow runs, job runs, attempts, log lines, schedule state, orchestrators.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from tideflow.runtime.store.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flows",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("ir", sa.JSON, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_flows"),
    )
    op.create_table(
        "flow_runs",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("root_job", sa.String(200), nullable=False),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("scheduled_at", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("params", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_flow_runs"),
    )
    op.create_index("ix_flow_runs_flow", "flow_runs", ["flow"])
    op.create_index("ix_flow_runs_created_at", "flow_runs", ["created_at"])
    op.create_table(
        "job_runs",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("flow_run_id", sa.Integer, nullable=False),
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("job", sa.String(200), nullable=False),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("scheduled_at", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_run_id"], ["flow_runs.id"], name="fk_job_runs_flow_run_id_flow_runs"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_job_runs"),
    )
    op.create_index("ix_job_runs_flow_run_id", "job_runs", ["flow_run_id"])
    op.create_index("ix_job_runs_flow_job_created", "job_runs", ["flow", "job", "created_at"])
    op.create_index("ix_job_runs_status", "job_runs", ["status"])
    op.create_index("ix_job_runs_created_at", "job_runs", ["created_at"])
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("job_run_id", sa.Integer, nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("exit_code", sa.Integer),
        sa.Column("pid", sa.Integer),
        sa.Column("host", sa.String(255)),
        sa.Column("orchestrator_id", sa.Integer),
        sa.Column("stdout", sa.Text, nullable=False),
        sa.Column("stderr", sa.Text, nullable=False),
        sa.Column("error_type", sa.String(300)),
        sa.Column("error_message", sa.Text),
        sa.Column("error_traceback", sa.Text),
        sa.Column("error_function", sa.String(300)),
        sa.Column("error_location", sa.String(500)),
        sa.ForeignKeyConstraint(
            ["job_run_id"], ["job_runs.id"], name="fk_attempts_job_run_id_job_runs"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_attempts"),
        sa.UniqueConstraint("job_run_id", "number", name="uq_attempts_job_run_id_number"),
    )
    op.create_index("ix_attempts_job_run_id", "attempts", ["job_run_id"])
    op.create_index("ix_attempts_status", "attempts", ["status"])
    op.create_table(
        "log_lines",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("attempt_id", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.ForeignKeyConstraint(
            ["attempt_id"], ["attempts.id"], name="fk_log_lines_attempt_id_attempts"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_log_lines"),
    )
    op.create_index("ix_log_lines_attempt_id", "log_lines", ["attempt_id"])
    op.create_table(
        "schedule_state",
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("job", sa.String(200), nullable=False),
        sa.Column("last_fired_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("flow", "job", name="pk_schedule_state"),
    )
    op.create_table(
        "orchestrators",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("flows", sa.JSON, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("heartbeat_at", UTCDateTime, nullable=False),
        sa.Column("stopped_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_orchestrators"),
    )


def downgrade() -> None:
    for table in (
        "orchestrators",
        "schedule_state",
        "log_lines",
        "attempts",
        "job_runs",
        "flow_runs",
        "flows",
    ):
        op.drop_table(table)
