"""interactions: the sealed token of each interaction a running turn answers through, so that
a restart within Discord's 15 minutes still answers it

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of what the models say today: a migration must not change when they do.
Snowflake = sa.String(length=20)
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "interactions",
        sa.Column("interaction_id", Snowflake, nullable=False),
        sa.Column("application_id", Snowflake, nullable=False),
        sa.Column("user_id", Snowflake, nullable=False),
        sa.Column("sealed_token", sa.LargeBinary(), nullable=False),
        sa.Column("ephemeral", sa.Boolean(), nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("interaction_id", name=op.f("pk_interactions")),
    )
    op.create_index("ix_interactions_expires_at", "interactions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_interactions_expires_at", table_name="interactions")
    op.drop_table("interactions")
