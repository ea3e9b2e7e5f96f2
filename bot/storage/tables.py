"""The database schema as SQLAlchemy Core tables: the model the migrations are checked
against (tests/storage/test_migrations.py). Nothing here leaves ``bot.storage``: rows are
converted to the domain's frozen dataclasses at its boundary (bot/storage/rows.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from bot.domain.models import SettingsScope, TurnState
from bot.domain.params import PARAMS, Kind
from bot.storage.types import Id, UtcDateTime

# Discord snowflakes are at most 20 decimal digits; the domain carries them as strings.
Snowflake = String(20)
# Where a conversation lives: a channel or thread id, or a key that is not a snowflake, such as
# ``interaction:<id>`` for one held through interactions (user-install /ask, "Ask Seed",
# Reply). Every column a scope lands in (the conversation's, a turn's reply channel, a
# thread's settings, a cost's scope) takes this type: PostgreSQL refuses a longer value.
ScopeKey = String(64)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TURN_STATES = tuple(s.value for s in TurnState)
SETTING_SCOPES = tuple(s.value for s in SettingsScope)
EMPTY_LIST = text("'[]'")

metadata = MetaData(naming_convention=NAMING_CONVENTION)

conversations = Table(
    "conversations",
    metadata,
    Column("id", Id, primary_key=True),
    Column("scope_id", ScopeKey, nullable=False, unique=True),
    Column("guild_id", Snowflake),
    Column("parent_channel_id", Snowflake),
    Column("owner_id", Snowflake, nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("trim_notified_epoch", Integer),
    # Position of the next stored model message, across epochs. Bumping it with
    # UPDATE … RETURNING hands out positions without reading the history, and the row lock it
    # takes serialises concurrent appends to one conversation.
    Column("next_position", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # Start-up looks for messages missed while down in recently active conversations.
    Column("updated_at", UtcDateTime, nullable=False, index=True),
)

turns = Table(
    "turns",
    metadata,
    Column("id", Id, primary_key=True),
    Column(
        "conversation_id",
        Id,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("epoch", Integer, nullable=False),
    # Looked up through the (source_id, attempt) unique index.
    Column("source_id", Snowflake, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("author_id", Snowflake, nullable=False),
    Column("author_name", Text, nullable=False),
    Column("reply_channel_id", ScopeKey, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("image_urls", JSON, nullable=False),
    Column("video_urls", JSON, nullable=False),
    Column("warnings", JSON, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("request_id", String(255)),
    Column("status_url", Text),
    Column("response_url", Text),
    Column("cancel_url", Text),
    Column("output", Text),
    # Kept for display only; never sent back to the model.
    Column("reasoning", Text),
    Column("error", Text),
    Column("reply_message_ids", JSON, nullable=False),
    # The progress message a restart edits instead of posting another.
    Column("status_message_id", Snowflake),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # The file names of the attachments sent, parallel to image_urls / video_urls.
    Column("image_names", JSON, nullable=False, server_default=EMPTY_LIST),
    Column("video_names", JSON, nullable=False, server_default=EMPTY_LIST),
    CheckConstraint("state IN (" + ", ".join(f"'{s}'" for s in TURN_STATES) + ")", name="state"),
    # A Discord message is answered once per attempt: Retry and edit-to-redo make the
    # next attempt, a duplicate delivery of the same message is refused.
    UniqueConstraint("source_id", "attempt"),
)

# One model message of the history. ``content`` is plain JSON, not JSONB, on PostgreSQL so
# that its text comes back exactly as stored (key order included): it is read as text and
# sent on as such. ``tokens`` is its estimate (the domain's estimate_tokens), computed once.
messages = Table(
    "messages",
    metadata,
    Column("id", Id, primary_key=True),
    Column(
        "conversation_id", Id, ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    ),
    Column("turn_id", Id, ForeignKey("turns.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("epoch", Integer, nullable=False),
    Column("position", Integer, nullable=False),
    Column("role", String(32), nullable=False),
    Column("content", JSON(none_as_null=False), nullable=False),
    Column("tokens", Integer, nullable=False, server_default=text("0")),
    UniqueConstraint("conversation_id", "epoch", "position"),
    # Behind the history reads: (conversation, epoch) equality, position order; the turns'
    # token totals (rows.HISTORY_TURNS) come from the index alone, without the contents.
    Index("ix_messages_history_turns", "conversation_id", "epoch", "position", "turn_id", "tokens"),
)

# Who has spoken in each epoch of a conversation, for the speaker labels (domain
# ``speakers_note``): each author once, with the first message position of their first turn
# in history, so that a turn's context reads the few speakers instead of every turn. Written
# when a turn's answer is stored; a row whose turn has left the history (superseded, failed,
# deleted: the foreign key clears ``turn_id``) is re-derived on read (conversations.py).
speakers = Table(
    "speakers",
    metadata,
    Column(
        "conversation_id",
        Id,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("epoch", Integer, primary_key=True),
    Column("author_id", Snowflake, primary_key=True),
    Column("turn_id", Id, ForeignKey("turns.id", ondelete="SET NULL"), index=True),
    Column("position", Integer, nullable=False),
)

# The column of each kind of parameter: one per parameter, named after it.
_PARAM_COLUMN: dict[Kind, Any] = {
    Kind.CHOICE: String(16),
    Kind.TEXT: Text,
    Kind.WHOLE: Integer,
    Kind.NUMBER: Double,
}

settings = Table(
    "settings",
    metadata,
    Column("scope", String(16), primary_key=True),
    Column("scope_id", ScopeKey, primary_key=True),
    *(Column(p.name, _PARAM_COLUMN[p.kind]) for p in PARAMS),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("scope IN (" + ", ".join(f"'{s}'" for s in SETTING_SCOPES) + ")", name="scope"),
)

# One counted request against a quota key (``user:…``, ``guild:…``).
usage_events = Table(
    "usage_events",
    metadata,
    Column("id", Id, primary_key=True),
    Column("key", String(255), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Index("ix_usage_events_key_at", "key", "at"),
)

# What one turn cost: its worst case while it runs (``settled`` false: a reservation against
# the budgets), then what fal billed (or the estimate, ``estimated``). No foreign key to
# turns: spending outlives a turn's deletion (a budget cannot be reset by deleting turns).
turn_costs = Table(
    "turn_costs",
    metadata,
    Column("turn_id", BigInteger, primary_key=True, autoincrement=False),
    Column("user_id", Snowflake, nullable=False),
    Column("guild_id", Snowflake),
    Column("scope_id", ScopeKey),
    # When the turn was submitted: the day and month its cost counts in (UTC).
    Column("at", UtcDateTime, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("units", BigInteger, nullable=False),
    Column("usd", Double, nullable=False),
    Column("estimated", Boolean, nullable=False),
    Column("settled", Boolean, nullable=False),
    Index("ix_turn_costs_user_id_at", "user_id", "at"),
    Index("ix_turn_costs_guild_id_at", "guild_id", "at"),
    Index("ix_turn_costs_scope_id", "scope_id"),
    Index("ix_turn_costs_at", "at"),
)

# An interaction a running turn answers through, kept so that a restart can still answer it
# (bot/storage/interactions.py). The token is sealed (encrypted and bound to the id) by the
# Discord layer; a row lives at most Discord's 15 minutes, start-up drops expired ones.
interactions = Table(
    "interactions",
    metadata,
    Column("interaction_id", Snowflake, primary_key=True),
    Column("application_id", Snowflake, nullable=False),
    Column("user_id", Snowflake, nullable=False),
    Column("sealed_token", LargeBinary, nullable=False),
    Column("ephemeral", Boolean, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
)
