"""Trigger requests: manual triggers waiting for the orchestrator of their flow.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from tideflow.runtime.store.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trigger_requests",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("job", sa.String(200), nullable=False),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("requested_at", UTCDateTime, nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("claimed_by", sa.Integer),
        sa.Column("claimed_at", UTCDateTime),
        sa.Column("flow_run_id", sa.Integer),
        sa.PrimaryKeyConstraint("id", name="pk_trigger_requests"),
    )
    op.create_index("ix_trigger_requests_flow_claimed", "trigger_requests", ["flow", "claimed_by"])


def downgrade() -> None:
    op.drop_table("trigger_requests")
