"""The database schema as typed ORM classes. Nothing here leaves ``bot.storage``: the
repository converts rows to the domain's frozen dataclasses at its boundary."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bot.domain.models import SettingsScope, TurnState
from bot.storage.types import Id, UtcDateTime

# Discord snowflakes are at most 20 decimal digits; the domain carries them as strings.
Snowflake = String(20)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TURN_STATES = tuple(s.value for s in TurnState)
SETTING_SCOPES = tuple(s.value for s in SettingsScope)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ConversationRow(Base):
    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    scope_id: Mapped[str] = mapped_column(Snowflake, unique=True)
    guild_id: Mapped[str | None] = mapped_column(Snowflake)
    parent_channel_id: Mapped[str | None] = mapped_column(Snowflake)
    owner_id: Mapped[str] = mapped_column(Snowflake)
    epoch: Mapped[int] = mapped_column(Integer)
    trim_notified_epoch: Mapped[int | None] = mapped_column(Integer)
    # Position of the next stored model message, across epochs. Bumping it with
    # UPDATE … RETURNING hands out positions without reading the history, and the row lock it
    # takes serialises concurrent appends to one conversation.
    next_position: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Start-up looks for messages missed while down in recently active conversations.
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class TurnRow(Base):
    __tablename__ = "turns"
    __table_args__ = (
        CheckConstraint(
            "state IN (" + ", ".join(f"'{s}'" for s in TURN_STATES) + ")", name="state"
        ),
        # A Discord message is answered once per attempt: Retry and edit-to-redo make the
        # next attempt, a duplicate delivery of the same message is refused.
        UniqueConstraint("source_id", "attempt"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        Id, ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    epoch: Mapped[int] = mapped_column(Integer)
    # Looked up through the (source_id, attempt) unique index.
    source_id: Mapped[str] = mapped_column(Snowflake)
    attempt: Mapped[int] = mapped_column(Integer)
    author_id: Mapped[str] = mapped_column(Snowflake)
    author_name: Mapped[str] = mapped_column(Text)
    reply_channel_id: Mapped[str] = mapped_column(Snowflake)
    prompt: Mapped[str] = mapped_column(Text)
    image_urls: Mapped[list[str]] = mapped_column(JSON)
    video_urls: Mapped[list[str]] = mapped_column(JSON)
    warnings: Mapped[list[str]] = mapped_column(JSON)
    # The file names behind image_urls / video_urls, index for index (named in errors).
    image_names: Mapped[list[str]] = mapped_column(JSON, server_default="[]")
    video_names: Mapped[list[str]] = mapped_column(JSON, server_default="[]")
    state: Mapped[str] = mapped_column(String(16), index=True)
    request_id: Mapped[str | None] = mapped_column(String(255))
    status_url: Mapped[str | None] = mapped_column(Text)
    response_url: Mapped[str | None] = mapped_column(Text)
    cancel_url: Mapped[str | None] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    # Kept for display only; never sent back to the model.
    reasoning: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    reply_message_ids: Mapped[list[str]] = mapped_column(JSON)
    # The progress message a restart edits instead of posting another.
    status_message_id: Mapped[str | None] = mapped_column(Snowflake)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class MessageRow(Base):
    """One message of the model's history. ``content`` is plain JSON, not JSONB, on
    PostgreSQL so that it comes back exactly as the model sent it (key order included)."""

    __tablename__ = "messages"
    __table_args__ = (
        # Also the index behind history(): (conversation, epoch) equality, position order.
        UniqueConstraint("conversation_id", "epoch", "position"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        Id, ForeignKey("conversations.id", ondelete="CASCADE")
    )
    turn_id: Mapped[int] = mapped_column(Id, ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(32))
    content: Mapped[Any] = mapped_column(JSON(none_as_null=False))


class SettingsRow(Base):
    __tablename__ = "settings"
    __table_args__ = (
        CheckConstraint(
            "scope IN (" + ", ".join(f"'{s}'" for s in SETTING_SCOPES) + ")", name="scope"
        ),
    )

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope_id: Mapped[str] = mapped_column(Snowflake, primary_key=True)
    thinking: Mapped[str | None] = mapped_column(String(16))
    effort: Mapped[str | None] = mapped_column(String(16))
    system_prompt: Mapped[str | None] = mapped_column(Text)
    max_completion_tokens: Mapped[int | None] = mapped_column(Integer)
    temperature: Mapped[float | None] = mapped_column(Double)
    top_p: Mapped[float | None] = mapped_column(Double)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class UsageEventRow(Base):
    """One counted request against a quota key (``user:…``, ``guild:…``)."""

    __tablename__ = "usage_events"
    __table_args__ = (Index("ix_usage_events_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    key: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(UtcDateTime)


metadata = Base.metadata
