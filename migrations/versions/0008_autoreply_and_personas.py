"""autoreply and personas: the settings layers hold whether the bot answers every message
of a channel (off, threads, inline) and the persona set there (a name from the config);
unset means the layer below decides

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("settings") as batch:
        batch.add_column(sa.Column("persona", sa.Text(), nullable=True))
        batch.add_column(sa.Column("autoreply", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("settings") as batch:
        batch.drop_column("autoreply")
        batch.drop_column("persona")
