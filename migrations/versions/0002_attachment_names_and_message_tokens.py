"""attachment names stored with the turn; a token estimate stored per message

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the domain's estimate_tokens as of this revision (scripts never import app
# code): the backfill gives existing rows what the bot of this revision would have stored.
CHARS_PER_TOKEN = 3
IMAGE_TOKENS = 1_500
VIDEO_TOKENS = 10_000
BATCH = 1_000


def _estimate(content: object) -> int:
    if isinstance(content, str):
        return len(content) // CHARS_PER_TOKEN + 4
    media = 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                kind = str(part.get("type", ""))
                if "image" in kind:
                    media += IMAGE_TOKENS
                elif "video" in kind:
                    media += VIDEO_TOKENS
    text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return len(text) // CHARS_PER_TOKEN + media + 4


# Plain ALTER TABLE ADD/DROP COLUMN, not batch mode: SQLite (3.35+) does both natively, and
# batch mode would rebuild "turns", whose DROP would cascade to the messages with foreign
# keys on.


def upgrade() -> None:
    for name in ("image_names", "video_names"):
        op.add_column(
            "turns", sa.Column(name, sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
    op.add_column(
        "messages", sa.Column("tokens", sa.Integer(), nullable=False, server_default=sa.text("0"))
    )
    _backfill_tokens()


def _backfill_tokens() -> None:
    conn = op.get_bind()
    messages = sa.table(
        "messages",
        sa.column("id", sa.Integer()),
        sa.column("content", sa.Text()),
        sa.column("tokens", sa.Integer()),
    )
    update = (
        sa.update(messages)
        .where(messages.c.id == sa.bindparam("row_id"))
        .values(tokens=sa.bindparam("row_tokens"))
    )
    last = 0
    while True:
        rows = conn.execute(
            sa.select(messages.c.id, sa.cast(messages.c.content, sa.Text()))
            .where(messages.c.id > last)
            .order_by(messages.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        conn.execute(
            update,
            [
                {"row_id": row_id, "row_tokens": _estimate(json.loads(text))}
                for row_id, text in rows
            ],
        )
        last = rows[-1][0]


def downgrade() -> None:
    op.drop_column("messages", "tokens")
    op.drop_column("turns", "video_names")
    op.drop_column("turns", "image_names")
