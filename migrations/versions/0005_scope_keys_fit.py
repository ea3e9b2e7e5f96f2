"""scope keys fit: the columns a conversation's scope lands in take 64 characters, not a
snowflake's 20, so conversations held through interactions (``interaction:<id>``) store on
PostgreSQL

Revision ID: 0005
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of what the models say today: a migration must not change when they do.
Snowflake = sa.String(length=20)
ScopeKey = sa.String(length=64)

# (table, column, nullable) of every column a scope key lands in.
SCOPE_COLUMNS = (
    ("conversations", "scope_id", False),
    ("turns", "reply_channel_id", False),
    ("settings", "scope_id", False),
    ("turn_costs", "scope_id", True),
)


def _alter(old: sa.String, new: sa.String) -> None:
    # Batch form: SQLite rebuilds each table (its declared lengths are not enforced, but the
    # schema should say what is stored); PostgreSQL runs a plain ALTER, and widening a
    # varchar rewrites neither the table nor its indexes.
    for table, column, nullable in SCOPE_COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, existing_type=old, type_=new, existing_nullable=nullable)


def upgrade() -> None:
    _alter(Snowflake, ScopeKey)


def downgrade() -> None:
    # The older schema cannot hold a key longer than a snowflake. PostgreSQL would refuse to
    # narrow the column with a bare "value too long"; say what is in the way instead, and
    # delete nothing (the whole migration rolls back).
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        long_keys = {
            f"{table}.{column}": conn.scalar(
                sa.text(f"SELECT count(*) FROM {table} WHERE length({column}) > 20")
            )
            for table, column, _ in SCOPE_COLUMNS
        }
        found = {where: count for where, count in long_keys.items() if count}
        if found:
            raise CommandError(
                "cannot downgrade below 0005: rows hold scope keys longer than 20 characters"
                " (conversations held through interactions), which the older schema cannot"
                " store: "
                + ", ".join(f"{where} ({count})" for where, count in found.items())
                + ". Delete those conversations first, or stay at 0005."
            )
    _alter(ScopeKey, Snowflake)
