"""People's data in SQL: the ``PrivacyStore`` (retention sweep, export, forget, purge).

Every deletion is a condition, not a list read earlier: a turn goes only while it still
matches (old enough, or that person's, and finished), so several processes sweeping one
PostgreSQL database at once each delete what is left and never what the condition does
not cover; a row another run deleted first is simply not counted twice. Large deletions
go in batches of ``batch`` turns, one short transaction each, oldest first.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.models import SettingsScope
from bot.domain.privacy import (
    ConversationExport,
    Removed,
    guild_usage_key,
    user_usage_key,
)
from bot.storage.database import Database
from bot.storage.rows import conversation_from, turn_from
from bot.storage.tables import conversations, messages, settings, speakers, turns, usage_events
from bot.storage.turns import UNFINISHED_STATES

DEFAULT_BATCH = 500

_FINISHED = turns.c.state.notin_(UNFINISHED_STATES)
_HAS_TURNS = exists().where(turns.c.conversation_id == conversations.c.id)
# Speakers whose first turn was deleted (the foreign key cleared it) and who have no turn
# left in that epoch: their id goes with their turns. One with turns left is re-derived
# when the conversation is next read.
_SPEAKERS_LEFT = delete(speakers).where(
    speakers.c.turn_id.is_(None),
    ~exists().where(
        turns.c.conversation_id == speakers.c.conversation_id,
        turns.c.epoch == speakers.c.epoch,
        turns.c.author_id == speakers.c.author_id,
    ),
)


@dataclass(frozen=True, slots=True)
class _Counted:
    removed: int
    messages: int


class SqlPrivacy:
    """``PrivacyStore`` on the shared transaction helper (``Repositories.db``)."""

    def __init__(self, db: Database, *, batch: int = DEFAULT_BATCH) -> None:
        self._db = db
        self._batch = batch

    # --- the sweep ------------------------------------------------------------------------

    async def remove_older(
        self, turns_before: datetime, usage_before: datetime, *, dry_run: bool = False
    ) -> Removed:
        old = turns.c.created_at < turns_before
        # Left empty, and not touched since the cut: a conversation a turn is starting in
        # right now has just been touched (begin_turn updates it in its own transaction).
        idle = conversations.c.updated_at < turns_before
        stale_usage = usage_events.c.at < usage_before
        if dry_run:

            async def count(conn: AsyncConnection) -> Removed:
                keeps_turns = exists().where(
                    turns.c.conversation_id == conversations.c.id, ~and_(old, _FINISHED)
                )
                return Removed(
                    turns=await _count(conn, turns, and_(old, _FINISHED)),
                    messages=await _count_messages(conn, and_(old, _FINISHED)),
                    conversations=await _count(conn, conversations, and_(idle, ~keeps_turns)),
                    usage_events=await _count(conn, usage_events, stale_usage),
                    kept_unfinished=await _count(conn, turns, and_(old, ~_FINISHED)),
                )

            return await self._db.run("privacy dry run: older", count, write=False)
        done = await self._delete_turns("retention: turns", and_(old, _FINISHED))
        emptied = await self._delete_where(
            "retention: conversations", conversations, and_(idle, ~_HAS_TURNS)
        )
        usage = await self._delete_where("retention: usage", usage_events, stale_usage)
        kept = await self._count("retention: kept", turns, and_(old, ~_FINISHED))
        return Removed(
            turns=done.removed,
            messages=done.messages,
            conversations=emptied,
            usage_events=usage,
            kept_unfinished=kept,
        )

    # --- export ---------------------------------------------------------------------------

    async def export(self, scope_id: str) -> ConversationExport | None:
        async def op(conn: AsyncConnection) -> ConversationExport | None:
            row = (
                await conn.execute(
                    select(conversations).where(conversations.c.scope_id == scope_id)
                )
            ).one_or_none()
            if row is None:
                return None
            rows = await conn.execute(
                select(turns).where(turns.c.conversation_id == row.id).order_by(turns.c.id)
            )
            return ConversationExport(conversation_from(row), tuple(turn_from(r) for r in rows))

        # One read transaction: the turns are those of the conversation as of one moment.
        return await self._db.run("privacy: export", op, write=False)

    # --- forget and purge -----------------------------------------------------------------

    async def forget(self, user_id: str, guild_id: str | None, *, dry_run: bool = False) -> Removed:
        place = (
            conversations.c.guild_id.is_(None)
            if guild_id is None
            else conversations.c.guild_id == guild_id
        )
        in_place = turns.c.conversation_id.in_(select(conversations.c.id).where(place))
        theirs = and_(turns.c.author_id == user_id, in_place)
        return await self._remove_turns("forget", theirs, dry_run=dry_run)

    async def forget_messages(self, source_ids: Collection[str]) -> Removed:
        if not source_ids:
            return Removed()
        deleted = turns.c.source_id.in_(sorted(source_ids))
        return await self._remove_turns("message deleted", deleted, dry_run=False)

    async def purge_user(self, user_id: str, *, dry_run: bool = False) -> Removed:
        removed = await self._remove_turns(
            "purge user", turns.c.author_id == user_id, dry_run=dry_run
        )
        owned = conversations.c.owner_id == user_id
        usage = usage_events.c.key == user_usage_key(user_id)
        if dry_run:
            # Conversations they started with nobody else's turns in them.
            others = exists().where(
                turns.c.conversation_id == conversations.c.id,
                or_(turns.c.author_id != user_id, ~_FINISHED),
            )
            return removed + Removed(
                conversations=await self._count(
                    "purge user: count", conversations, and_(owned, ~others)
                ),
                usage_events=await self._count("purge user: count", usage_events, usage),
            )
        return removed + Removed(
            conversations=await self._delete_where(
                "purge user: conversations", conversations, and_(owned, ~_HAS_TURNS)
            ),
            usage_events=await self._delete_where("purge user: usage", usage_events, usage),
        )

    async def purge_guild(self, guild_id: str, *, dry_run: bool = False) -> Removed:
        of_guild = conversations.c.guild_id == guild_id
        in_guild = turns.c.conversation_id.in_(select(conversations.c.id).where(of_guild))
        removed = await self._remove_turns("purge guild", in_guild, dry_run=dry_run)
        # The server's settings, and those of its channels and threads that had a
        # conversation (settings rows carry no server id of their own).
        guild_settings = or_(
            and_(settings.c.scope == SettingsScope.SERVER.value, settings.c.scope_id == guild_id),
            and_(
                settings.c.scope == SettingsScope.CHANNEL.value,
                settings.c.scope_id.in_(
                    select(conversations.c.parent_channel_id).where(
                        of_guild, conversations.c.parent_channel_id.is_not(None)
                    )
                ),
            ),
            and_(
                settings.c.scope == SettingsScope.THREAD.value,
                settings.c.scope_id.in_(select(conversations.c.scope_id).where(of_guild)),
            ),
        )
        usage = usage_events.c.key == guild_usage_key(guild_id)
        if dry_run:
            busy = exists().where(turns.c.conversation_id == conversations.c.id, ~_FINISHED)
            return removed + Removed(
                conversations=await self._count(
                    "purge guild: count", conversations, and_(of_guild, ~busy)
                ),
                usage_events=await self._count("purge guild: count", usage_events, usage),
                settings=await self._count("purge guild: count", settings, guild_settings),
            )
        # Settings first: which channels and threads they belong to is read from the
        # conversations about to go.
        dropped_settings = await self._delete_where(
            "purge guild: settings", settings, guild_settings
        )
        return removed + Removed(
            conversations=await self._delete_where(
                "purge guild: conversations", conversations, and_(of_guild, ~_HAS_TURNS)
            ),
            usage_events=await self._delete_where("purge guild: usage", usage_events, usage),
            settings=dropped_settings,
        )

    # --- helpers --------------------------------------------------------------------------

    async def _remove_turns(
        self, what: str, which: ColumnElement[bool], *, dry_run: bool
    ) -> Removed:
        """The finished turns ``which`` selects, with their messages (the answers to them);
        the unfinished ones it selects are counted as kept."""
        if dry_run:

            async def count(conn: AsyncConnection) -> Removed:
                return Removed(
                    turns=await _count(conn, turns, and_(which, _FINISHED)),
                    messages=await _count_messages(conn, and_(which, _FINISHED)),
                    kept_unfinished=await _count(conn, turns, and_(which, ~_FINISHED)),
                )

            return await self._db.run(f"privacy dry run: {what}", count, write=False)
        done = await self._delete_turns(f"{what}: turns", and_(which, _FINISHED))
        kept = await self._count(f"{what}: kept", turns, and_(which, ~_FINISHED))
        return Removed(turns=done.removed, messages=done.messages, kept_unfinished=kept)

    async def _delete_turns(self, what: str, which: ColumnElement[bool]) -> _Counted:
        """Delete the turns ``which`` selects in batches, messages first (the foreign key
        would cascade; deleting them explicitly counts them)."""
        batch = select(turns.c.id).where(which).order_by(turns.c.id).limit(self._batch)

        async def op(conn: AsyncConnection) -> _Counted:
            # Starts with a write, as a write unit must (SQLite takes its lock there).
            gone_messages = await conn.execute(
                delete(messages).where(messages.c.turn_id.in_(batch)).returning(messages.c.id)
            )
            message_count = len(gone_messages.all())
            # The same condition again: a turn that stopped matching meanwhile stays.
            gone = await conn.execute(
                delete(turns).where(turns.c.id.in_(batch), which).returning(turns.c.id)
            )
            await conn.execute(_SPEAKERS_LEFT)
            return _Counted(len(gone.all()), message_count)

        total = _Counted(0, 0)
        while True:
            done = await self._db.run(what, op, write=True)
            total = _Counted(total.removed + done.removed, total.messages + done.messages)
            if done.removed == 0 and done.messages == 0:
                return total

    async def _delete_where(self, what: str, table: Any, which: ColumnElement[bool]) -> int:
        async def op(conn: AsyncConnection) -> int:
            result = await conn.execute(delete(table).where(which).returning(*table.primary_key))
            return len(result.all())

        return await self._db.run(what, op, write=True, single=True)

    async def _count(self, what: str, table: Any, which: ColumnElement[bool]) -> int:
        async def op(conn: AsyncConnection) -> int:
            return await _count(conn, table, which)

        return await self._db.run(what, op, write=False, single=True)


async def _count(conn: AsyncConnection, table: Any, which: ColumnElement[bool]) -> int:
    return int(await conn.scalar(select(func.count()).select_from(table).where(which)) or 0)


async def _count_messages(conn: AsyncConnection, which_turns: ColumnElement[bool]) -> int:
    chosen = select(turns.c.id).where(which_turns)
    return await _count(conn, messages, messages.c.turn_id.in_(chosen))
