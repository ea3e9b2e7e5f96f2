"""turns: the file names of the attachments sent, parallel to image_urls / video_urls

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("image_names", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("video_names", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("video_names")
        batch.drop_column("image_names")
