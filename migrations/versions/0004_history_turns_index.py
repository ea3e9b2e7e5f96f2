"""an index the history-turns read is answered from alone: each message's position, turn and
token estimate, in (conversation, epoch, position) order

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ["conversation_id", "epoch", "position", "turn_id", "tokens"]


def upgrade() -> None:
    op.create_index("ix_messages_history_turns", "messages", COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_messages_history_turns", table_name="messages")
