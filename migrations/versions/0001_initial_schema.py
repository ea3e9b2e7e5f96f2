"""initial schema: conversations, turns, messages, settings, usage events

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of what the models say today: a migration must not change when they do.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Snowflake = sa.String(length=20)
Timestamp = sa.DateTime(timezone=True)
TURN_STATES = ("pending", "submitted", "completed", "delivered", "failed", "stopped", "superseded")


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", Id, nullable=False),
        sa.Column("scope_id", Snowflake, nullable=False),
        sa.Column("guild_id", Snowflake, nullable=True),
        sa.Column("parent_channel_id", Snowflake, nullable=True),
        sa.Column("owner_id", Snowflake, nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("trim_notified_epoch", sa.Integer(), nullable=True),
        sa.Column("next_position", sa.Integer(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
        sa.UniqueConstraint("scope_id", name=op.f("uq_conversations_scope_id")),
    )
    op.create_table(
        "turns",
        sa.Column("id", Id, nullable=False),
        sa.Column("conversation_id", Id, nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("source_id", Snowflake, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("author_id", Snowflake, nullable=False),
        sa.Column("author_name", sa.Text(), nullable=False),
        sa.Column("reply_channel_id", Snowflake, nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("image_urls", sa.JSON(), nullable=False),
        sa.Column("video_urls", sa.JSON(), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=True),
        sa.Column("status_url", sa.Text(), nullable=True),
        sa.Column("response_url", sa.Text(), nullable=True),
        sa.Column("cancel_url", sa.Text(), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("reasoning", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("reply_message_ids", sa.JSON(), nullable=False),
        sa.Column("status_message_id", Snowflake, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.CheckConstraint(
            "state IN (" + ", ".join(f"'{s}'" for s in TURN_STATES) + ")",
            name=op.f("ck_turns_state"),
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_turns_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_turns")),
        sa.UniqueConstraint("source_id", "attempt", name=op.f("uq_turns_source_id_attempt")),
    )
    op.create_index(op.f("ix_conversations_updated_at"), "conversations", ["updated_at"])
    op.create_index(op.f("ix_turns_conversation_id"), "turns", ["conversation_id"])
    op.create_index(op.f("ix_turns_state"), "turns", ["state"])
    op.create_table(
        "messages",
        sa.Column("id", Id, nullable=False),
        sa.Column("conversation_id", Id, nullable=False),
        sa.Column("turn_id", Id, nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_messages_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["turn_id"],
            ["turns.id"],
            name=op.f("fk_messages_turn_id_turns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        # Also the index history() reads: one range scan in position order.
        sa.UniqueConstraint(
            "conversation_id",
            "epoch",
            "position",
            name=op.f("uq_messages_conversation_id_epoch_position"),
        ),
    )
    op.create_index(op.f("ix_messages_turn_id"), "messages", ["turn_id"])
    op.create_table(
        "settings",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("scope_id", Snowflake, nullable=False),
        sa.Column("thinking", sa.String(length=16), nullable=True),
        sa.Column("effort", sa.String(length=16), nullable=True),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("max_completion_tokens", sa.Integer(), nullable=True),
        sa.Column("temperature", sa.Double(), nullable=True),
        sa.Column("top_p", sa.Double(), nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.CheckConstraint(
            "scope IN ('thread', 'channel', 'server')", name=op.f("ck_settings_scope")
        ),
        sa.PrimaryKeyConstraint("scope", "scope_id", name=op.f("pk_settings")),
    )
    op.create_table(
        "usage_events",
        sa.Column("id", Id, nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_events")),
    )
    op.create_index("ix_usage_events_key_at", "usage_events", ["key", "at"])


def downgrade() -> None:
    op.drop_index("ix_usage_events_key_at", table_name="usage_events")
    op.drop_table("usage_events")
    op.drop_table("settings")
    op.drop_index(op.f("ix_messages_turn_id"), table_name="messages")
    op.drop_table("messages")
    op.drop_index(op.f("ix_turns_state"), table_name="turns")
    op.drop_index(op.f("ix_turns_conversation_id"), table_name="turns")
    op.drop_table("turns")
    op.drop_index(op.f("ix_conversations_updated_at"), table_name="conversations")
    op.drop_table("conversations")
