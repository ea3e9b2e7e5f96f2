"""Conversations and the turns begun in them: the SQL ``ConversationStore``. Each method is one
transaction of plain Core statements on the shared transaction helper."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.cache import Lru
from bot.domain.errors import StorageError
from bot.domain.models import (
    Conversation,
    HistoryEntry,
    NewConversation,
    NewTurn,
    Speaker,
    Turn,
    TurnContext,
    TurnStart,
    TurnState,
)
from bot.storage.database import Database, now_utc
from bot.storage.dialects import PerDialect
from bot.storage.rows import (
    FIRST_TURN_OF,
    HISTORY,
    HISTORY_NEWEST,
    SPEAKERS,
    HistoryCut,
    conversation_from,
    history_from,
    pending_turn,
    turn_row,
)
from bot.storage.settings import load_layers
from bot.storage.tables import conversations, speakers, turns
from bot.storage.unit import Unit

log = logging.getLogger(__name__)

# How the unique (source_id, attempt) index names itself in a refusal: PostgreSQL, SQLite.
_DUPLICATE_TURN = ("uq_turns_source_id_attempt", "turns.source_id, turns.attempt")
PLACES_CACHED = 4096
# Messages in the first newest-first read of a history: a short conversation's whole
# history; a long one's next read is sized from what the first found (``_next_batch``).
HISTORY_BATCH = 256
# Above every position (an INTEGER column): where the newest-first read starts.
_NO_POSITION = 2**31 - 1


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a conversation lives: what its settings layers are looked up by."""

    scope_id: str
    parent_channel_id: str | None
    guild_id: str | None


_TOUCH = (
    update(conversations)
    .where(conversations.c.scope_id == bindparam("b_scope"))
    .values(updated_at=bindparam("b_now"))
    .returning(*conversations.c)
)
_BY_SCOPE = select(conversations).where(conversations.c.scope_id == bindparam("b_scope"))
_BY_ID = select(conversations).where(conversations.c.id == bindparam("b_id"))
_PLACE = select(
    conversations.c.scope_id, conversations.c.parent_channel_id, conversations.c.guild_id
).where(conversations.c.id == bindparam("b_id"))
# Binds a scope to a new conversation; a conflicting (racing or older) row wins and only has
# its updated_at touched.
_BIND = PerDialect(
    lambda insert: (
        insert(conversations)
        .values(
            scope_id=bindparam("b_scope"),
            guild_id=bindparam("b_guild"),
            parent_channel_id=bindparam("b_parent"),
            owner_id=bindparam("b_owner"),
            epoch=0,
            trim_notified_epoch=None,
            next_position=0,
            created_at=bindparam("b_now"),
            updated_at=bindparam("b_now"),
        )
        .on_conflict_do_update(
            index_elements=[conversations.c.scope_id], set_={"updated_at": bindparam("b_now")}
        )
        .returning(*conversations.c)
    )
)
_INSERT_TURN = insert(turns).returning(turns.c.id)
# A superseded attempt gives up its prompt: the attempt replacing it holds the same text
# (Retry), the merged one (a burst starting over, where keeping it would store every earlier
# message once per attempt) or the edited one, and no history or export shows it.
_SUPERSEDE = (
    update(turns)
    .where(turns.c.id == bindparam("b_id"))
    .values(state=TurnState.SUPERSEDED.value, updated_at=bindparam("b_now"), prompt="")
    .returning(turns.c.id)
)
# A speaker whose stored first turn has left the history: their first turn in it now.
_SPEAKER_MOVED = (
    update(speakers)
    .where(
        speakers.c.conversation_id == bindparam("conversation_id"),
        speakers.c.epoch == bindparam("epoch"),
        speakers.c.author_id == bindparam("author_id"),
    )
    .values(turn_id=bindparam("b_turn"), position=bindparam("b_position"))
)
_SPEAKER_GONE = delete(speakers).where(
    speakers.c.conversation_id == bindparam("conversation_id"),
    speakers.c.epoch == bindparam("epoch"),
    speakers.c.author_id == bindparam("author_id"),
)


class SqlConversations:
    """``ConversationStore`` on the shared transaction helper."""

    def __init__(
        self,
        db: Database,
        *,
        places_cached: int = PLACES_CACHED,
        history_tokens: int | None = None,
    ) -> None:
        self._db = db
        # The most history one request can hold (the context budget): older turns are not
        # read. None: the whole epoch is read.
        self._history_tokens = history_tokens
        # Conversation id -> its scope, channel and server. Cannot go stale: those columns
        # are written only by the INSERT that creates the conversation (nothing updates
        # them, a conversation is never re-bound), so a resumed turn's context needs no
        # conversation read. Bounded; an evicted entry is read again.
        self._places: Lru[int, _Place] = Lru(places_cached)

    def _remember(self, conversation: Conversation) -> Conversation:
        self._places.put(
            conversation.id,
            _Place(conversation.scope_id, conversation.parent_channel_id, conversation.guild_id),
        )
        return conversation

    # --- conversations ------------------------------------------------------------------

    async def conversation_for_scope(self, scope_id: str) -> Conversation | None:
        async def op(unit: Unit) -> Conversation | None:
            row = await unit.first(_BY_SCOPE, {"b_scope": scope_id})
            return None if row is None else conversation_from(row)

        found = await self._db.run_unit("conversation_for_scope", op, write=False, single=True)
        return None if found is None else self._remember(found)

    async def create_conversation(self, new: NewConversation) -> Conversation:
        """Bind a conversation to ``new.scope_id``; when one is bound already, return it."""

        async def op(unit: Unit) -> Conversation:
            return await self._bind(unit, new, now_utc())

        bound = await self._db.run_unit("create_conversation", op, write=True, single=True)
        return self._remember(bound)

    async def _bind(self, unit: Unit, new: NewConversation, now: datetime) -> Conversation:
        # One statement whether or not the scope is bound.
        row = await unit.first(
            _BIND.on(unit.postgres),
            {
                "b_scope": new.scope_id,
                "b_guild": new.guild_id,
                "b_parent": new.parent_channel_id,
                "b_owner": new.owner_id,
                "b_now": now,
            },
        )
        if row is None:
            raise StorageError(f"binding scope {new.scope_id} returned no row")
        return conversation_from(row)

    async def get_conversation(self, conversation_id: int) -> Conversation:
        found = await self._find_conversation("get_conversation", conversation_id)
        if found is None:
            raise StorageError(f"no conversation {conversation_id}")
        return found

    async def find_conversation(self, conversation_id: int) -> Conversation | None:
        return await self._find_conversation("find_conversation", conversation_id)

    async def _find_conversation(self, what: str, conversation_id: int) -> Conversation | None:
        async def op(unit: Unit) -> Conversation | None:
            row = await unit.first(_BY_ID, {"b_id": conversation_id})
            return None if row is None else conversation_from(row)

        found = await self._db.run_unit(what, op, write=False, single=True)
        return None if found is None else self._remember(found)

    async def reset(self, conversation_id: int) -> int:
        async def op(conn: AsyncConnection) -> int:
            epoch = await conn.scalar(
                update(conversations)
                .where(conversations.c.id == conversation_id)
                .values(epoch=conversations.c.epoch + 1, updated_at=now_utc())
                .returning(conversations.c.epoch)
            )
            if epoch is None:
                raise StorageError(f"no conversation {conversation_id}")
            return int(epoch)

        return await self._db.run("reset", op, write=True, single=True)

    async def recent_conversations(self, since: datetime) -> list[tuple[Conversation, str | None]]:
        newest = (
            select(turns.c.source_id)
            .where(turns.c.conversation_id == conversations.c.id)
            .order_by(turns.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )

        async def op(conn: AsyncConnection) -> list[tuple[Conversation, str | None]]:
            rows = await conn.execute(
                select(conversations, newest.label("newest_source"))
                .where(conversations.c.updated_at >= since)
                .order_by(conversations.c.updated_at)
            )
            return [(self._remember(conversation_from(row)), row.newest_source) for row in rows]

        return await self._db.run("recent_conversations", op, write=False, single=True)

    # --- a turn's start and context -----------------------------------------------------

    async def begin_turn(
        self, new: NewTurn, *, conversation: NewConversation | None = None
    ) -> TurnStart:
        if conversation is not None and conversation.scope_id != new.scope_id:
            raise ValueError(
                f"conversation for scope {conversation.scope_id} given for a turn in {new.scope_id}"
            )

        async def op(unit: Unit) -> TurnStart:
            now = now_utc()
            # The conversation's row as of now (its current epoch: a /reset that committed
            # first is seen, one that comes later waits for this transaction).
            if conversation is not None:
                bound = await self._bind(unit, conversation, now)
            else:
                row = await unit.first(_TOUCH, {"b_scope": new.scope_id, "b_now": now})
                if row is None:
                    raise StorageError(f"no conversation for scope {new.scope_id}")
                bound = conversation_from(row)
            # Retry / edit: the old attempt leaves the history in the same transaction the
            # new one is stored in, so a failure leaves both as they were.
            superseded = new.supersedes
            if (
                superseded is not None
                and await unit.first(_SUPERSEDE, {"b_id": superseded, "b_now": now}) is None
            ):
                raise StorageError(f"no turn {superseded}")
            turn = pending_turn(new, bound, now)
            turn_id = await unit.insert(_INSERT_TURN, turn_row(turn))
            assert turn_id is not None
            turn = replace(turn, id=int(turn_id))
            context = await self._context(
                unit,
                turn,
                _Place(bound.scope_id, bound.parent_channel_id, bound.guild_id),
                repair=True,
            )
            return TurnStart(bound, turn, context)

        start = await self._db.run_unit("begin_turn", op, write=True, duplicate=_DUPLICATE_TURN)
        self._remember(start.conversation)
        return start

    async def history(self, conversation_id: int, epoch: int) -> list[HistoryEntry]:
        """The stored history of one epoch (tests and benches; the service gets it with
        begin_turn or turn_context)."""

        async def op(unit: Unit) -> list[HistoryEntry]:
            rows = await unit.values(
                HISTORY,
                {"conversation_id": conversation_id, "epoch": epoch, "exclude": 0, "since": 0},
            )
            return list(history_from(rows))

        return await self._db.run_unit("history", op, write=False, single=True)

    async def turn_context(self, turn: Turn) -> TurnContext:
        place = self._places.get(turn.conversation_id)

        async def op(unit: Unit) -> tuple[_Place, TurnContext]:
            where = place
            if where is None:
                row = await unit.first(_PLACE, {"b_id": turn.conversation_id})
                if row is None:
                    raise StorageError(f"no conversation {turn.conversation_id}")
                where = _Place(row.scope_id, row.parent_channel_id, row.guild_id)
            return where, await self._context(unit, turn, where, repair=False)

        where, context = await self._db.run_unit("turn_context", op, write=False)
        self._places.put(turn.conversation_id, where)
        return context

    async def _context(self, unit: Unit, turn: Turn, place: _Place, *, repair: bool) -> TurnContext:
        """``repair``: a write unit, which stores what it re-derives of the speakers."""
        where = {"conversation_id": turn.conversation_id, "epoch": turn.epoch, "exclude": turn.id}
        if self._history_tokens is None:
            history = history_from(await unit.values(HISTORY, {**where, "since": 0}))
            omitted = 0
        else:
            cut = await self._cut(unit, where, self._history_tokens)
            history, omitted = cut.history(), cut.omitted
        layers = await load_layers(
            unit,
            thread_id=place.scope_id,
            channel_id=place.parent_channel_id,
            guild_id=place.guild_id,
        )
        speakers = await self._speakers(unit, turn, where, repair=repair)
        return TurnContext(history, layers, speakers, omitted_turns=omitted)

    async def _cut(self, unit: Unit, where: dict[str, Any], budget: int) -> HistoryCut:
        """What of the history a request can hold: read newest first, in batches, up to the
        first turn that does not fit ``budget`` (the whole epoch when there is none)."""
        cut = HistoryCut(budget)
        before, limit = _NO_POSITION, HISTORY_BATCH
        while True:
            rows = await unit.values(HISTORY_NEWEST, {**where, "before": before, "limit": limit})
            cut.take(rows)
            if cut.done:
                return cut
            if len(rows) < limit:
                cut.end()
                return cut
            before = int(rows[-1][1])
            limit = _next_batch(cut, budget, len(rows))

    async def _speakers(
        self, unit: Unit, turn: Turn, where: dict[str, Any], *, repair: bool
    ) -> tuple[Speaker, ...]:
        """The distinct authors of the epoch's turns in history, in order of first
        appearance (from the stored speakers), then the turn's own author if not among them.
        A stored speaker whose turn has left the history is looked up again (rare: a Retry or
        edit of their first turn, a deletion)."""
        found: list[tuple[int, Speaker]] = []
        moved = False
        for author_id, position, author_name, valid in await unit.values(SPEAKERS, where):
            if valid:
                found.append((int(position), Speaker(author_id, author_name)))
                continue
            moved = True
            key = {**where, "author_id": author_id}
            first = await unit.first(FIRST_TURN_OF, key)
            if first is not None:
                found.append((int(first.position), Speaker(author_id, first.author_name)))
            if not repair:
                continue
            if first is None:
                await unit.execute(_SPEAKER_GONE, key)
            else:
                await unit.execute(
                    _SPEAKER_MOVED, {**key, "b_turn": first.turn_id, "b_position": first.position}
                )
        if moved:
            found.sort(key=lambda pair: pair[0])
        listed = {speaker.author_id: speaker for _, speaker in found}
        listed.setdefault(turn.author_id, Speaker(turn.author_id, turn.author_name))
        return tuple(listed.values())

    # --- a turn's steps -----------------------------------------------------------------


def _next_batch(cut: HistoryCut, budget: int, read: int) -> int:
    """How many messages the next newest-first read takes: what the rest of the budget
    holds at the tokens per message read so far, with a small margin (each message read
    past the budget is content read for nothing), so that a long history usually takes two
    reads; four times the last when nothing has tokens."""
    if cut.used <= 0:
        return read * 4
    per_message = cut.used / cut.read
    return max(16, int((budget - cut.used) / per_message * 1.1) + 8)
