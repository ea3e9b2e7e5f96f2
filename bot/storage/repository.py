"""``SqlStore``: the domain's ``Store`` over one SQLAlchemy async engine (SQLite or
PostgreSQL), composed of its concerns sharing one transaction helper: conversations and
turns, settings, usage (quotas), ``costs`` (turn costs and budgets, the ``CostStore``,
used directly) and ``interactions`` (the ``InteractionStore``, used directly). The caller
owns the engine and disposes of it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.models import (
    ChatMessage,
    Conversation,
    Cost,
    GenerationSettings,
    HistoryEntry,
    ModelReply,
    NewConversation,
    NewTurn,
    Refusal,
    RequestHandle,
    Reservation,
    SettingsScope,
    Settlement,
    Turn,
    TurnContext,
    TurnStart,
    TurnState,
)
from bot.domain.outage import Outage
from bot.storage.conversations import SqlConversations
from bot.storage.costs import SqlCosts
from bot.storage.database import Database, RetryPolicy
from bot.storage.interactions import SqlInteractions
from bot.storage.settings import SqlSettings
from bot.storage.turns import SqlTurns
from bot.storage.usage import SqlUsage


class SqlStore:
    """``Store`` for the service. Transient failures (SQLite busy past its timeout, lost
    connections, PostgreSQL serialisation failures) are retried ``retries`` times with
    exponential backoff from ``retry_delay`` seconds, then raised as ``StorageUnavailable``;
    an unreachable database is ridden out for ``outage_tolerance`` seconds first (``outage``
    tells the story). Anything else the database raises becomes ``StorageError``. A turn's
    context holds at most ``history_tokens`` of history (the newest whole turns: the
    context budget; None reads the whole epoch)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        retries: int = 3,
        retry_delay: float = 0.05,
        outage_tolerance: float = 0.0,
        outage: Outage | None = None,
        history_tokens: int | None = None,
    ) -> None:
        policy = RetryPolicy(retries=retries, delay=retry_delay, outage_tolerance=outage_tolerance)
        self.db = Database(engine, policy=policy, outage=outage)
        self.outage = self.db.outage
        self.conversations = SqlConversations(self.db, history_tokens=history_tokens)
        self.turns = SqlTurns(self.db)
        self.settings = SqlSettings(self.db)
        self.usage = SqlUsage(self.db)
        self.costs = SqlCosts(self.db)
        self.interactions = SqlInteractions(self.db)

    # --- conversations and turns --------------------------------------------------------

    async def conversation_for_scope(self, scope_id: str) -> Conversation | None:
        return await self.conversations.conversation_for_scope(scope_id)

    async def create_conversation(self, new: NewConversation) -> Conversation:
        """Bind a conversation (tests and benches; the service binds through begin_turn)."""
        return await self.conversations.create_conversation(new)

    async def get_conversation(self, conversation_id: int) -> Conversation:
        return await self.conversations.get_conversation(conversation_id)

    async def reset(self, conversation_id: int) -> int:
        return await self.conversations.reset(conversation_id)

    async def recent_conversations(self, since: datetime) -> list[tuple[Conversation, str | None]]:
        return await self.conversations.recent_conversations(since)

    async def begin_turn(
        self,
        new: NewTurn,
        *,
        conversation: NewConversation | None = None,
        superseding: int | None = None,
    ) -> TurnStart:
        return await self.conversations.begin_turn(
            new, conversation=conversation, superseding=superseding
        )

    async def history(self, conversation_id: int, epoch: int) -> list[HistoryEntry]:
        """The stored history of one epoch (tests and benches; not in the Protocol)."""
        return await self.conversations.history(conversation_id, epoch)

    async def turn_context(self, turn: Turn) -> TurnContext:
        return await self.conversations.turn_context(turn)

    async def record_submission(
        self,
        turn_id: int,
        handle: RequestHandle,
        *,
        trim_notified_epoch: int | None = None,
        reservation: Reservation | None = None,
    ) -> None:
        await self.turns.record_submission(
            turn_id, handle, trim_notified_epoch=trim_notified_epoch, reservation=reservation
        )

    async def complete_turn(
        self,
        turn_id: int,
        reply: ModelReply,
        new_messages: Sequence[ChatMessage],
        *,
        settlement: Settlement | None = None,
    ) -> Cost | None:
        return await self.turns.complete_turn(turn_id, reply, new_messages, settlement=settlement)

    async def record_delivery(self, turn_id: int, message_ids: Sequence[str]) -> None:
        await self.turns.record_delivery(turn_id, message_ids)

    async def finish_turn(self, turn_id: int, state: TurnState, error: str | None = None) -> None:
        await self.turns.finish_turn(turn_id, state, error)

    async def stop_turn(self, turn_id: int, by: str) -> bool:
        return await self.turns.stop_turn(turn_id, by)

    async def record_status_message(self, turn_id: int, message_id: str) -> None:
        await self.turns.record_status_message(turn_id, message_id)

    async def record_reply_parts(self, turn_id: int, message_ids: Sequence[str]) -> None:
        await self.turns.record_reply_parts(turn_id, message_ids)

    async def get_turn(self, turn_id: int) -> Turn:
        return await self.turns.get_turn(turn_id)

    async def latest_turn(self, conversation_id: int) -> Turn | None:
        return await self.turns.latest_turn(conversation_id)

    async def turn_for_source(self, source_id: str) -> Turn | None:
        """The newest attempt's turn for a Discord message."""
        return await self.turns.turn_for_source(source_id)

    async def unfinished_turns(self) -> list[Turn]:
        return await self.turns.unfinished_turns()

    # --- settings -----------------------------------------------------------------------

    async def settings_layers(
        self, *, thread_id: str | None, channel_id: str | None, guild_id: str | None
    ) -> dict[SettingsScope, GenerationSettings]:
        return await self.settings.settings_layers(
            thread_id=thread_id, channel_id=channel_id, guild_id=guild_id
        )

    async def update_settings(
        self,
        scope: SettingsScope,
        scope_id: str,
        changes: GenerationSettings,
        *,
        clear: Sequence[str] = (),
    ) -> GenerationSettings:
        return await self.settings.update_settings(scope, scope_id, changes, clear=clear)

    # --- usage --------------------------------------------------------------------------

    async def try_consume(
        self, keys: Sequence[tuple[str, int, int]], *, now: datetime
    ) -> Refusal | None:
        return await self.usage.try_consume(keys, now=now)
