"""leases and shared signing secret

Tasks carry the claim of whoever works on them (owner, lease_expires_at), so any
node can recover a task whose process died; the key result links are signed with
lives in the database, so every API node signs and verifies the same links.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.Float(), nullable=True))
        batch.create_index("ix_tasks_lease_expires_at", ["lease_expires_at"])

    op.create_table(
        "signing_secrets",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("signing_secrets")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_index("ix_tasks_lease_expires_at")
        batch.drop_column("lease_expires_at")
        batch.drop_column("owner")
