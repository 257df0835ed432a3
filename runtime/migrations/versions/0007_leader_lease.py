"""The leader lease: which orchestrator of a set of flows acts, with a fencing token.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leader_leases",
        sa.Column("key", sa.String(500), nullable=False),
        sa.Column("holder", sa.Integer),
        sa.Column("token", sa.BigInteger, nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=False),
        sa.Column("renewed_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("released_at", sa.Float),
        sa.Column("previous_holder", sa.Integer),
        sa.Column("previous_expires_at", sa.Float),
        sa.PrimaryKeyConstraint("key", name="pk_leader_leases"),
    )


def downgrade() -> None:
    op.drop_table("leader_leases")
