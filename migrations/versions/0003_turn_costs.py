"""turn costs: what each turn cost (fal's billable units, priced), and the reservations that
hold dollar budgets across processes

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of what the models say today: a migration must not change when they do.
Snowflake = sa.String(length=20)
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "turn_costs",
        sa.Column("turn_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", Snowflake, nullable=False),
        sa.Column("guild_id", Snowflake, nullable=True),
        sa.Column("scope_id", Snowflake, nullable=True),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("usd", sa.Double(), nullable=False),
        sa.Column("estimated", sa.Boolean(), nullable=False),
        sa.Column("settled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("turn_id", name=op.f("pk_turn_costs")),
    )
    op.create_index("ix_turn_costs_user_id_at", "turn_costs", ["user_id", "at"])
    op.create_index("ix_turn_costs_guild_id_at", "turn_costs", ["guild_id", "at"])
    op.create_index("ix_turn_costs_scope_id", "turn_costs", ["scope_id"])
    op.create_index("ix_turn_costs_at", "turn_costs", ["at"])


def downgrade() -> None:
    op.drop_index("ix_turn_costs_at", table_name="turn_costs")
    op.drop_index("ix_turn_costs_scope_id", table_name="turn_costs")
    op.drop_index("ix_turn_costs_guild_id_at", table_name="turn_costs")
    op.drop_index("ix_turn_costs_user_id_at", table_name="turn_costs")
    op.drop_table("turn_costs")
