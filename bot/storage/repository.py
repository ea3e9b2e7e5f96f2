"""The SQL implementation of the domain's ``ConversationStore``, ``SettingsStore`` and
``UsageStore``. Each call is one short transaction in its own session; rows are converted to
domain values before they leave."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar, cast

from sqlalchemy import and_, case, delete, exists, func, insert, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql import Select

from bot.domain.errors import DuplicateMessage, StorageError, StorageUnavailable
from bot.domain.models import (
    SETTING_NAMES,
    ChatMessage,
    Conversation,
    Effort,
    GenerationSettings,
    HistoryEntry,
    JsonValue,
    ModelReply,
    NewConversation,
    NewTurn,
    RequestHandle,
    SettingsScope,
    Speaker,
    Thinking,
    Turn,
    TurnState,
)
from bot.storage.engine import WRITE_OPTIONS
from bot.storage.tables import (
    ConversationRow,
    MessageRow,
    SettingsRow,
    TurnRow,
    UsageEventRow,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

IN_HISTORY_STATES = tuple(s.value for s in TurnState if s.in_history)
UNFINISHED_STATES = tuple(s.value for s in TurnState if not s.finished)
FINAL_STATES = frozenset({TurnState.FAILED, TurnState.STOPPED, TurnState.SUPERSEDED})
_COMPLETABLE = (TurnState.PENDING.value, TurnState.SUBMITTED.value)
_FINAL_VALUES = tuple(s.value for s in FINAL_STATES)

# SQLSTATEs worth another try on PostgreSQL: serialization failure, deadlock, lock timeout,
# and the server going away or refusing connections for now.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"})


class _Conflict(StorageError):
    """A constraint refused the write (unique or foreign key); callers that expect one
    translate it further."""


def _now() -> datetime:
    return datetime.now(UTC)


def history_query(conversation_id: int, epoch: int) -> Select[tuple[int, int, str, Any]]:
    """History of one conversation's epoch, oldest first: a range scan of the unique
    (conversation_id, epoch, position) index, joined by primary key to the turns to keep only
    those in history."""
    return (
        select(MessageRow.turn_id, MessageRow.position, MessageRow.role, MessageRow.content)
        .join(TurnRow, TurnRow.id == MessageRow.turn_id)
        .where(
            MessageRow.conversation_id == conversation_id,
            MessageRow.epoch == epoch,
            TurnRow.state.in_(IN_HISTORY_STATES),
        )
        .order_by(MessageRow.position)
    )


def _advisory_lock_id(key: str) -> int:
    """A stable signed 64-bit id for ``pg_advisory_xact_lock`` (Python's hash() is salted)."""
    digest = hashlib.blake2b(b"seed-bot usage:" + key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# --- the one conversion per boundary: rows -> domain values ---------------------------------


def _conversation(row: ConversationRow) -> Conversation:
    return Conversation(
        id=row.id,
        scope_id=row.scope_id,
        guild_id=row.guild_id,
        parent_channel_id=row.parent_channel_id,
        owner_id=row.owner_id,
        epoch=row.epoch,
        created_at=row.created_at,
        updated_at=row.updated_at,
        trim_notified_epoch=row.trim_notified_epoch,
    )


def _turn(row: TurnRow) -> Turn:
    handle = None
    if row.request_id is not None:
        handle = RequestHandle(
            request_id=row.request_id,
            status_url=row.status_url,
            response_url=row.response_url,
            cancel_url=row.cancel_url,
        )
    return Turn(
        id=row.id,
        conversation_id=row.conversation_id,
        epoch=row.epoch,
        source_id=row.source_id,
        author_id=row.author_id,
        author_name=row.author_name,
        reply_channel_id=row.reply_channel_id,
        prompt=row.prompt,
        image_urls=tuple(row.image_urls),
        video_urls=tuple(row.video_urls),
        warnings=tuple(row.warnings),
        image_names=tuple(row.image_names or ()),
        video_names=tuple(row.video_names or ()),
        state=TurnState(row.state),
        handle=handle,
        output=row.output,
        reasoning=row.reasoning,
        error=row.error,
        reply_message_ids=tuple(row.reply_message_ids),
        created_at=row.created_at,
        updated_at=row.updated_at,
        attempt=row.attempt,
        status_message_id=row.status_message_id,
    )


def _settings(row: SettingsRow) -> GenerationSettings:
    return GenerationSettings(
        thinking=cast("Thinking | None", row.thinking),
        effort=cast("Effort | None", row.effort),
        system_prompt=row.system_prompt,
        max_completion_tokens=row.max_completion_tokens,
        temperature=row.temperature,
        top_p=row.top_p,
    )


class SqlStore:
    """``ConversationStore``, ``SettingsStore`` and ``UsageStore`` over one SQLAlchemy async
    engine (SQLite or PostgreSQL). The caller owns the engine and disposes of it.

    Transient failures (SQLite busy past its timeout, lost connections, PostgreSQL
    serialisation failures) are retried ``retries`` times with exponential backoff from
    ``retry_delay`` seconds, then raised as ``StorageUnavailable``; anything else the database
    raises becomes ``StorageError``.
    """

    def __init__(self, engine: AsyncEngine, *, retries: int = 3, retry_delay: float = 0.05) -> None:
        self._postgres = engine.dialect.name == "postgresql"
        self._sqlite = engine.dialect.name == "sqlite"
        self._read = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        self._write = async_sessionmaker(
            engine.execution_options(**WRITE_OPTIONS), expire_on_commit=False, autoflush=False
        )
        self._retries = retries
        self._retry_delay = retry_delay

    # --- transactions -------------------------------------------------------------------

    async def _run(
        self, what: str, op: Callable[[AsyncSession], Awaitable[T]], *, write: bool
    ) -> T:
        """Run ``op`` in one transaction, retrying transient failures."""
        maker = self._write if write else self._read
        delay = self._retry_delay
        attempt = 0
        while True:
            try:
                async with maker() as session, session.begin():
                    return await op(session)
            except sa_exc.IntegrityError as e:
                raise _Conflict(f"{what}: constraint violated: {e.orig}") from e
            except (sa_exc.SQLAlchemyError, OSError) as e:
                if not _is_transient(e):
                    raise StorageError(f"{what}: database error: {_describe(e)}") from e
                if attempt >= self._retries:
                    raise StorageUnavailable(
                        f"{what}: database unavailable after {attempt + 1} attempts: {_describe(e)}"
                    ) from e
                log.warning(
                    "storage: %s failed (%s), retry %d in %.2fs",
                    what,
                    _describe(e),
                    attempt + 1,
                    delay,
                )
            attempt += 1
            await asyncio.sleep(delay)
            delay *= 2

    # --- conversations ------------------------------------------------------------------

    async def conversation_for_scope(self, scope_id: str) -> Conversation | None:
        async def op(s: AsyncSession) -> Conversation | None:
            row = await s.scalar(
                select(ConversationRow).where(ConversationRow.scope_id == scope_id)
            )
            return None if row is None else _conversation(row)

        return await self._run("conversation_for_scope", op, write=False)

    async def create_conversation(self, new: NewConversation) -> Conversation:
        async def op(s: AsyncSession) -> Conversation:
            now = _now()
            row = ConversationRow(
                scope_id=new.scope_id,
                guild_id=new.guild_id,
                parent_channel_id=new.parent_channel_id,
                owner_id=new.owner_id,
                epoch=0,
                trim_notified_epoch=None,
                next_position=0,
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            await s.flush()
            return _conversation(row)

        try:
            return await self._run("create_conversation", op, write=True)
        except _Conflict:
            # Someone bound this scope first: theirs is the conversation.
            existing = await self.conversation_for_scope(new.scope_id)
            if existing is None:
                raise
            log.info(
                "storage: scope %s already bound to conversation %d", new.scope_id, existing.id
            )
            return existing

    async def get_conversation(self, conversation_id: int) -> Conversation:
        async def op(s: AsyncSession) -> Conversation:
            row = await s.get(ConversationRow, conversation_id)
            if row is None:
                raise StorageError(f"no conversation {conversation_id}")
            return _conversation(row)

        return await self._run("get_conversation", op, write=False)

    async def history(self, conversation_id: int, epoch: int) -> list[HistoryEntry]:
        return await self._run(
            "history",
            partial(_load_history, conversation_id=conversation_id, epoch=epoch),
            write=False,
        )

    async def turn_context(
        self,
        conversation_id: int,
        epoch: int,
        *,
        thread_id: str | None,
        channel_id: str | None,
        guild_id: str | None,
    ) -> tuple[list[HistoryEntry], dict[SettingsScope, GenerationSettings]]:
        wanted = _settings_scopes(thread_id, channel_id, guild_id)

        async def op(
            s: AsyncSession,
        ) -> tuple[list[HistoryEntry], dict[SettingsScope, GenerationSettings]]:
            history = await _load_history(s, conversation_id=conversation_id, epoch=epoch)
            return history, await _load_layers(s, wanted)

        return await self._run("turn_context", op, write=False)

    async def reset(self, conversation_id: int) -> int:
        async def op(s: AsyncSession) -> int:
            epoch = await s.scalar(
                update(ConversationRow)
                .where(ConversationRow.id == conversation_id)
                .values(epoch=ConversationRow.epoch + 1, updated_at=_now())
                .returning(ConversationRow.epoch)
                .execution_options(synchronize_session=False)
            )
            if epoch is None:
                raise StorageError(f"no conversation {conversation_id}")
            return epoch

        return await self._run("reset", op, write=True)

    async def mark_trim_notified(self, conversation_id: int, epoch: int) -> None:
        async def op(s: AsyncSession) -> None:
            await self._update_one(
                s,
                ConversationRow,
                conversation_id,
                {"trim_notified_epoch": epoch},
                what="conversation",
            )

        await self._run("mark_trim_notified", op, write=True)

    # --- turns --------------------------------------------------------------------------

    async def begin_turn(self, new: NewTurn, *, superseding: int | None = None) -> Turn:
        async def op(s: AsyncSession) -> Turn:
            now = _now()
            if superseding is not None:
                # Retry / edit: the old attempt leaves the history in the same transaction
                # the new one is stored in, so a failure leaves both as they were.
                await self._update_one(
                    s,
                    TurnRow,
                    superseding,
                    {"state": TurnState.SUPERSEDED.value, "updated_at": now},
                    what="turn",
                )
            await self._update_one(
                s, ConversationRow, new.conversation_id, {"updated_at": now}, what="conversation"
            )
            row = TurnRow(
                conversation_id=new.conversation_id,
                epoch=new.epoch,
                source_id=new.source_id,
                attempt=new.attempt,
                author_id=new.author_id,
                author_name=new.author_name,
                reply_channel_id=new.reply_channel_id,
                prompt=new.prompt,
                image_urls=list(new.image_urls),
                video_urls=list(new.video_urls),
                warnings=list(new.warnings),
                image_names=list(new.image_names),
                video_names=list(new.video_names),
                state=TurnState.PENDING.value,
                request_id=None,
                status_url=None,
                response_url=None,
                cancel_url=None,
                output=None,
                reasoning=None,
                error=None,
                reply_message_ids=[],
                status_message_id=None,
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            await s.flush()
            return _turn(row)

        try:
            return await self._run("begin_turn", op, write=True)
        except _Conflict as e:
            latest = await self.turn_for_source(new.source_id)
            if latest is not None and latest.attempt >= new.attempt:
                raise DuplicateMessage(f"message {new.source_id} already has a turn") from e
            raise

    async def record_status_message(self, turn_id: int, message_id: str) -> None:
        async def op(s: AsyncSession) -> None:
            await self._update_one(
                s, TurnRow, turn_id, {"status_message_id": message_id}, what="turn"
            )

        await self._run("record_status_message", op, write=True)

    async def record_reply_parts(self, turn_id: int, message_ids: Sequence[str]) -> None:
        async def op(s: AsyncSession) -> None:
            await self._update_one(
                s, TurnRow, turn_id, {"reply_message_ids": list(message_ids)}, what="turn"
            )

        await self._run("record_reply_parts", op, write=True)

    async def latest_turn(self, conversation_id: int) -> Turn | None:
        async def op(s: AsyncSession) -> Turn | None:
            epoch = select(ConversationRow.epoch).where(ConversationRow.id == conversation_id)
            row = await s.scalar(
                select(TurnRow)
                .where(
                    TurnRow.conversation_id == conversation_id,
                    TurnRow.epoch == epoch.scalar_subquery(),
                    TurnRow.state != TurnState.SUPERSEDED.value,
                )
                .order_by(TurnRow.id.desc())
                .limit(1)
            )
            return None if row is None else _turn(row)

        return await self._run("latest_turn", op, write=False)

    async def recent_conversations(self, since: datetime) -> list[tuple[Conversation, str | None]]:
        async def op(s: AsyncSession) -> list[tuple[Conversation, str | None]]:
            newest = (
                select(TurnRow.source_id)
                .where(TurnRow.conversation_id == ConversationRow.id)
                .order_by(TurnRow.id.desc())
                .limit(1)
                .scalar_subquery()
            )
            rows = await s.execute(
                select(ConversationRow, newest)
                .where(ConversationRow.updated_at >= since)
                .order_by(ConversationRow.updated_at)
            )
            return [(_conversation(row), source) for row, source in rows]

        return await self._run("recent_conversations", op, write=False)

    async def speakers(self, conversation_id: int, epoch: int) -> tuple[Speaker, ...]:
        async def op(s: AsyncSession) -> tuple[Speaker, ...]:
            rows = await s.execute(
                select(TurnRow.author_id, TurnRow.author_name)
                .where(
                    TurnRow.conversation_id == conversation_id,
                    TurnRow.epoch == epoch,
                    TurnRow.state.in_(IN_HISTORY_STATES),
                )
                .order_by(TurnRow.id)
            )
            seen: dict[str, Speaker] = {}
            for author_id, author_name in rows:
                seen.setdefault(author_id, Speaker(author_id, author_name))
            return tuple(seen.values())

        return await self._run("speakers", op, write=False)

    async def has_other_speakers(self, conversation_id: int, author_id: str) -> bool:
        async def op(s: AsyncSession) -> bool:
            others = select(TurnRow.id).where(
                TurnRow.conversation_id == conversation_id, TurnRow.author_id != author_id
            )
            return bool(await s.scalar(select(exists(others))))

        return await self._run("has_other_speakers", op, write=False)

    async def turn_for_source(self, source_id: str) -> Turn | None:
        async def op(s: AsyncSession) -> Turn | None:
            row = await s.scalar(
                select(TurnRow)
                .where(TurnRow.source_id == source_id)
                .order_by(TurnRow.attempt.desc())
                .limit(1)
            )
            return None if row is None else _turn(row)

        return await self._run("turn_for_source", op, write=False)

    async def get_turn(self, turn_id: int) -> Turn:
        async def op(s: AsyncSession) -> Turn:
            row = await s.get(TurnRow, turn_id)
            if row is None:
                raise StorageError(f"no turn {turn_id}")
            return _turn(row)

        return await self._run("get_turn", op, write=False)

    async def record_submission(self, turn_id: int, handle: RequestHandle) -> None:
        async def op(s: AsyncSession) -> None:
            # A turn stopped while it was being submitted keeps its state (it must not come
            # back to life) but still records the request, for support and cancellation.
            await self._update_one(
                s,
                TurnRow,
                turn_id,
                {
                    "request_id": handle.request_id,
                    "status_url": handle.status_url,
                    "response_url": handle.response_url,
                    "cancel_url": handle.cancel_url,
                    "state": _case_state({TurnState.PENDING.value: TurnState.SUBMITTED.value}),
                    "updated_at": _now(),
                },
                what="turn",
            )

        await self._run("record_submission", op, write=True)

    async def complete_turn(
        self, turn_id: int, reply: ModelReply, new_messages: Sequence[ChatMessage]
    ) -> None:
        async def op(s: AsyncSession) -> None:
            now = _now()
            done = (
                await s.execute(
                    update(TurnRow)
                    .where(TurnRow.id == turn_id, TurnRow.state.in_(_COMPLETABLE))
                    .values(
                        state=TurnState.COMPLETED.value,
                        output=reply.output,
                        reasoning=reply.reasoning,
                        request_id=func.coalesce(TurnRow.request_id, reply.request_id),
                        updated_at=now,
                    )
                    .returning(TurnRow.conversation_id, TurnRow.epoch)
                    .execution_options(synchronize_session=False)
                )
            ).one_or_none()
            if done is None:
                state = await s.scalar(select(TurnRow.state).where(TurnRow.id == turn_id))
                if state is None:
                    raise StorageError(f"no turn {turn_id}")
                raise StorageError(f"turn {turn_id} is {state}: its answer is not stored")
            conversation_id, epoch = done
            count = len(new_messages)
            # Hands out positions without looking at the history, and the row lock this
            # UPDATE takes orders concurrent appends to the conversation (PostgreSQL; SQLite
            # has a single writer anyway).
            end = await s.scalar(
                update(ConversationRow)
                .where(ConversationRow.id == conversation_id)
                .values(next_position=ConversationRow.next_position + count, updated_at=now)
                .returning(ConversationRow.next_position)
                .execution_options(synchronize_session=False)
            )
            if end is None:
                raise StorageError(f"no conversation {conversation_id}")
            if count:
                start = end - count
                await s.execute(
                    insert(MessageRow),
                    [
                        {
                            "conversation_id": conversation_id,
                            "turn_id": turn_id,
                            "epoch": epoch,
                            "position": start + i,
                            "role": message.role,
                            "content": message.content,
                        }
                        for i, message in enumerate(new_messages)
                    ],
                )

        await self._run("complete_turn", op, write=True)

    async def record_delivery(self, turn_id: int, message_ids: Sequence[str]) -> None:
        async def op(s: AsyncSession) -> None:
            # A failure notice is delivered too, but the turn stays failed (or stopped).
            await self._update_one(
                s,
                TurnRow,
                turn_id,
                {
                    "reply_message_ids": list(message_ids),
                    "state": _case_state(
                        {v: v for v in _FINAL_VALUES}, default=TurnState.DELIVERED.value
                    ),
                    "updated_at": _now(),
                },
                what="turn",
            )

        await self._run("record_delivery", op, write=True)

    async def finish_turn(self, turn_id: int, state: TurnState, error: str | None = None) -> None:
        if state not in FINAL_STATES:
            raise ValueError(f"finish_turn takes failed, stopped or superseded, not {state}")

        async def op(s: AsyncSession) -> None:
            await self._update_one(
                s,
                TurnRow,
                turn_id,
                {"state": state.value, "error": error, "updated_at": _now()},
                what="turn",
            )

        await self._run("finish_turn", op, write=True)

    async def stop_turn(self, turn_id: int, by: str) -> bool:
        async def op(s: AsyncSession) -> bool:
            # Conditional: a turn whose answer was stored meanwhile is not stopped.
            result = await s.execute(
                update(TurnRow)
                .where(
                    TurnRow.id == turn_id,
                    TurnRow.state.in_((TurnState.PENDING.value, TurnState.SUBMITTED.value)),
                )
                .values(state=TurnState.STOPPED.value, error=by, updated_at=_now())
                .returning(TurnRow.id)
            )
            return result.first() is not None

        return await self._run("stop_turn", op, write=True)

    async def unfinished_turns(self) -> list[Turn]:
        async def op(s: AsyncSession) -> list[Turn]:
            rows = await s.scalars(
                select(TurnRow).where(TurnRow.state.in_(UNFINISHED_STATES)).order_by(TurnRow.id)
            )
            return [_turn(row) for row in rows]

        return await self._run("unfinished_turns", op, write=False)

    @staticmethod
    async def _update_one(
        s: AsyncSession,
        table: type[ConversationRow] | type[TurnRow],
        row_id: int,
        values: dict[str, Any],
        *,
        what: str,
    ) -> None:
        result = await s.execute(
            update(table)
            .where(table.id == row_id)
            .values(values)
            .returning(table.id)
            .execution_options(synchronize_session=False)
        )
        if result.first() is None:
            raise StorageError(f"no {what} {row_id}")

    # --- settings -----------------------------------------------------------------------

    async def settings_layers(
        self, *, thread_id: str | None, channel_id: str | None, guild_id: str | None
    ) -> dict[SettingsScope, GenerationSettings]:
        wanted = _settings_scopes(thread_id, channel_id, guild_id)
        return await self._run("settings_layers", partial(_load_layers, wanted=wanted), write=False)

    async def update_settings(
        self,
        scope: SettingsScope,
        scope_id: str,
        changes: GenerationSettings,
        *,
        clear: Sequence[str] = (),
    ) -> GenerationSettings:
        unknown = sorted(set(clear) - set(SETTING_NAMES))
        if unknown:
            raise ValueError(f"unknown settings to clear: {', '.join(unknown)}")
        values: dict[str, Any] = {
            name: getattr(changes, name)
            for name in SETTING_NAMES
            if getattr(changes, name) is not None
        }
        both = sorted(set(values) & set(clear))
        if both:
            raise ValueError(f"settings both set and cleared: {', '.join(both)}")
        values.update(dict.fromkeys(clear))
        scope = SettingsScope(scope)

        async def op(s: AsyncSession) -> GenerationSettings:
            key = (SettingsRow.scope == scope.value, SettingsRow.scope_id == scope_id)
            if values:
                now = _now()
                insert_ = pg_insert if self._postgres else sqlite_insert
                stmt = insert_(SettingsRow).values(
                    scope=scope.value, scope_id=scope_id, updated_at=now, **values
                )
                await s.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[SettingsRow.scope, SettingsRow.scope_id],
                        set_={**values, "updated_at": now},
                    )
                )
            row = await s.scalar(select(SettingsRow).where(*key))
            if row is None:
                return GenerationSettings()
            result = _settings(row)
            if result.is_empty():
                # An all-unset layer is no layer: settings_layers leaves it out.
                await s.execute(delete(SettingsRow).where(*key))
            return result

        return await self._run("update_settings", op, write=bool(values))

    # --- usage --------------------------------------------------------------------------

    async def try_consume(
        self,
        keys: Sequence[tuple[str, int] | tuple[str, int, int]],
        *,
        window_seconds: int | None = None,
        now: datetime,
    ) -> datetime | None:
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("try_consume needs a timezone-aware `now`")
        limits: dict[str, int] = {}
        windows: dict[str, timedelta] = {}
        for entry in keys:
            key, limit = entry[0], entry[1]
            seconds = entry[2] if len(entry) == 3 else window_seconds
            if seconds is None or seconds <= 0:
                raise ValueError(f"window_seconds must be positive (for {key!r})")
            if limit < 1:
                raise ValueError(f"quota limit for {key!r} must be at least 1, not {limit}")
            limits[key] = min(limit, limits.get(key, limit))
            windows[key] = timedelta(seconds=seconds)
        if not limits:
            return None
        names = sorted(limits)

        async def op(s: AsyncSession) -> datetime | None:
            if self._postgres:
                # One lock per key, taken in a global order so that two requests sharing
                # keys cannot deadlock; held until commit. SQLite's BEGIN IMMEDIATE already
                # serialises every writer.
                for lock_id in sorted({_advisory_lock_id(k) for k in names}):
                    await s.execute(select(func.pg_advisory_xact_lock(lock_id)))
            retry_at: datetime | None = None
            for key in names:
                window = windows[key]
                since = now - window
                # A key is used with one window, so what left it is never needed again.
                await s.execute(
                    delete(UsageEventRow).where(UsageEventRow.key == key, UsageEventRow.at <= since)
                )
                count = await s.scalar(
                    select(func.count()).where(UsageEventRow.key == key, UsageEventRow.at > since)
                )
                excess = (count or 0) - limits[key]
                if excess < 0:
                    continue
                # Allowed again once all but limit-1 of the counted requests have left the
                # window: when the (excess+1)-th oldest one does.
                oldest = await s.scalar(
                    select(UsageEventRow.at)
                    .where(UsageEventRow.key == key, UsageEventRow.at > since)
                    .order_by(UsageEventRow.at)
                    .offset(excess)
                    .limit(1)
                )
                assert oldest is not None
                free_at = oldest + window
                retry_at = free_at if retry_at is None else max(retry_at, free_at)
            if retry_at is not None:
                return retry_at
            await s.execute(insert(UsageEventRow), [{"key": k, "at": now} for k in names])
            return None

        return await self._run("try_consume", op, write=True)

    async def usage_full(self, key: str, limit: int, window_seconds: int, now: datetime) -> bool:
        async def op(s: AsyncSession) -> bool:
            since = now - timedelta(seconds=window_seconds)
            count = await s.scalar(
                select(func.count()).where(UsageEventRow.key == key, UsageEventRow.at > since)
            )
            return (count or 0) >= limit

        return await self._run("usage_full", op, write=False)


async def _load_history(s: AsyncSession, *, conversation_id: int, epoch: int) -> list[HistoryEntry]:
    result = await s.execute(history_query(conversation_id, epoch))
    return [
        HistoryEntry(
            turn_id=turn_id,
            position=position,
            message=ChatMessage(role=role, content=cast(JsonValue, content)),
        )
        for turn_id, position, role, content in result
    ]


def _settings_scopes(
    thread_id: str | None, channel_id: str | None, guild_id: str | None
) -> list[tuple[SettingsScope, str]]:
    return [
        (scope, scope_id)
        for scope, scope_id in (
            (SettingsScope.THREAD, thread_id),
            (SettingsScope.CHANNEL, channel_id),
            (SettingsScope.SERVER, guild_id),
        )
        if scope_id is not None
    ]


async def _load_layers(
    s: AsyncSession, wanted: list[tuple[SettingsScope, str]]
) -> dict[SettingsScope, GenerationSettings]:
    if not wanted:
        return {}
    rows = await s.scalars(
        select(SettingsRow).where(
            or_(
                *(
                    and_(SettingsRow.scope == scope.value, SettingsRow.scope_id == scope_id)
                    for scope, scope_id in wanted
                )
            )
        )
    )
    return {SettingsScope(row.scope): _settings(row) for row in rows}


def _case_state(mapping: dict[str, str], *, default: str | None = None) -> Any:
    """``CASE state WHEN … THEN … ELSE default END`` (``default`` ``None`` keeps the state)."""
    return case(mapping, value=TurnRow.state, else_=TurnRow.state if default is None else default)


def _describe(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    return f"{type(orig or e).__name__}: {orig or e}".splitlines()[0]


def _is_transient(e: BaseException) -> bool:
    if isinstance(e, OSError | sa_exc.TimeoutError):
        return True  # connection refused or reset; pool exhausted
    if isinstance(e, sa_exc.DBAPIError):
        if e.connection_invalidated:
            return True
        orig = e.orig
        if isinstance(orig, OSError):
            return True
        message = str(orig).lower()
        if "database is locked" in message or "database is busy" in message:
            return True
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if isinstance(sqlstate, str) and (
            sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith("08")
        ):
            return True
    return False
