"""Where an attempt runs: its executor block and the engine's name for it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        # the executor block the attempt ran on (NULL: the built-in local executor)
        batch.add_column(sa.Column("executor", sa.String(200)))
        # the engine's own name for the attempt (a Dask key, a Kubernetes Job), from
        # which a restarted orchestrator re-attaches to it
        batch.add_column(sa.Column("executor_ref", sa.String(300)))
        # where it ran, as the executor said (a worker's address and pid, a pod)
        batch.add_column(sa.Column("executor_where", sa.String(500)))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("executor_where")
        batch.drop_column("executor_ref")
        batch.drop_column("executor")
