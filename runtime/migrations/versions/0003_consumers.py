"""Consumer instances and autoscaler decisions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from tideflow.runtime.store.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consumer_instances",
        sa.Column("id", sa.String(64), nullable=False),
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
        sa.Column("rate", sa.Float, nullable=False),
        sa.Column("partitions", sa.JSON, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_consumer_instances"),
    )
    op.create_index(
        "ix_consumer_instances_flow_consumer", "consumer_instances", ["flow", "consumer"]
    )
    op.create_table(
        "scale_decisions",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("taken_at", UTCDateTime, nullable=False),
        sa.Column("backlog", sa.BigInteger),
        sa.Column("per_partition", sa.JSON, nullable=False),
        sa.Column("partitions", sa.Integer),
        sa.Column("reading_error", sa.Text),
        sa.Column("current", sa.Integer, nullable=False),
        sa.Column("desired", sa.Integer, nullable=False),
        sa.Column("applied", sa.Boolean, nullable=False),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("explanation", sa.Text, nullable=False),
        sa.Column("rule", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scale_decisions"),
    )
    op.create_index(
        "ix_scale_decisions_flow_consumer_taken",
        "scale_decisions",
        ["flow", "consumer", "taken_at"],
    )


def downgrade() -> None:
    op.drop_table("scale_decisions")
    op.drop_table("consumer_instances")
