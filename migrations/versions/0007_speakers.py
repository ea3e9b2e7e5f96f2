"""speakers: who has spoken in each epoch of a conversation (the first turn in history of each
author), so that a turn's context reads its few speakers instead of every turn; backfilled
from the stored history

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of what the models say today: a migration must not change when they do.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Snowflake = sa.String(length=20)
IN_HISTORY = ("completed", "delivered")

# Each author's first message in the history of each epoch (the turns in history only), and
# the turn it belongs to: what the store would have derived from all the turns.
BACKFILL = f"""
INSERT INTO speakers (conversation_id, epoch, author_id, turn_id, position)
SELECT m.conversation_id, m.epoch, t.author_id, m.turn_id, m.position
FROM messages m JOIN turns t ON t.id = m.turn_id
JOIN (
    SELECT m2.conversation_id AS conversation_id, m2.epoch AS epoch,
           t2.author_id AS author_id, MIN(m2.position) AS position
    FROM messages m2 JOIN turns t2 ON t2.id = m2.turn_id
    WHERE t2.state IN {IN_HISTORY!r}
    GROUP BY m2.conversation_id, m2.epoch, t2.author_id
) firsts ON firsts.conversation_id = m.conversation_id AND firsts.epoch = m.epoch
    AND firsts.position = m.position
"""


def upgrade() -> None:
    op.create_table(
        "speakers",
        sa.Column("conversation_id", Id, nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("author_id", Snowflake, nullable=False),
        sa.Column("turn_id", Id, nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_speakers_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["turn_id"],
            ["turns.id"],
            name=op.f("fk_speakers_turn_id_turns"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("conversation_id", "epoch", "author_id", name=op.f("pk_speakers")),
    )
    op.create_index(op.f("ix_speakers_turn_id"), "speakers", ["turn_id"])
    op.execute(BACKFILL)


def downgrade() -> None:
    op.drop_index(op.f("ix_speakers_turn_id"), table_name="speakers")
    op.drop_table("speakers")
