"""Dead letters and consumer instances' log lines.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from tideflow.runtime.store.tables import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("dead_letter_topic", sa.String(255)),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("notified_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_index("ix_dead_letters_flow_consumer", "dead_letters", ["flow", "consumer"])
    op.create_index("ix_dead_letters_notified_at", "dead_letters", ["notified_at"])
    op.create_table(
        "consumer_log_lines",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_consumer_log_lines"),
    )
    op.create_index(
        "ix_consumer_log_lines_flow_consumer", "consumer_log_lines", ["flow", "consumer"]
    )
    op.create_index("ix_consumer_log_lines_instance_id", "consumer_log_lines", ["instance_id"])


def downgrade() -> None:
    op.drop_table("consumer_log_lines")
    op.drop_table("dead_letters")
