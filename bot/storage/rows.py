"""The one conversion per boundary: database rows to domain values, and the history read."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import Row, Select, Text, bindparam, select
from sqlalchemy import cast as sql_cast

from bot.domain.models import (
    ChatMessage,
    Conversation,
    Effort,
    GenerationSettings,
    HistoryEntry,
    RawJson,
    RequestHandle,
    Speaker,
    Thinking,
    Turn,
    TurnState,
)
from bot.storage.tables import messages, turns

IN_HISTORY_STATES = tuple(s.value for s in TurnState if s.in_history)


def conversation_from(row: Row[Any]) -> Conversation:
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


def turn_from(row: Row[Any]) -> Turn:
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
        image_names=tuple(row.image_names),
        video_names=tuple(row.video_names),
    )


def settings_from(row: Row[Any]) -> GenerationSettings:
    return GenerationSettings(
        thinking=cast("Thinking | None", row.thinking),
        effort=cast("Effort | None", row.effort),
        system_prompt=row.system_prompt,
        max_completion_tokens=row.max_completion_tokens,
        temperature=row.temperature,
        top_p=row.top_p,
    )


def history_query() -> Select[Any]:
    """History of one conversation's epoch (``:conversation_id``, ``:epoch``), oldest
    first, leaving out turn ``:exclude``: a range scan of the unique (conversation_id,
    epoch, position) index, joined by primary key to the turns to keep only those in history
    and to name their authors. The content is read as its JSON text (CAST: PostgreSQL's
    driver would decode a json column), to be sent on as it is."""
    return (
        select(
            messages.c.turn_id,
            messages.c.position,
            messages.c.role,
            sql_cast(messages.c.content, Text).label("content"),
            messages.c.tokens,
            turns.c.author_id,
            turns.c.author_name,
        )
        .join(turns, turns.c.id == messages.c.turn_id)
        .where(
            messages.c.conversation_id == bindparam("conversation_id"),
            messages.c.epoch == bindparam("epoch"),
            turns.c.state.in_(IN_HISTORY_STATES),
            turns.c.id != bindparam("exclude"),
        )
        .order_by(messages.c.position)
    )


HISTORY = history_query()


def history_from(
    rows: Iterable[Sequence[Any]], author: Speaker | None
) -> tuple[tuple[HistoryEntry, ...], tuple[Speaker, ...]]:
    """The history entries, and the speakers: the distinct authors of its turns in order of
    first appearance, then ``author`` (of the turn being answered) if not among them."""
    history: list[HistoryEntry] = []
    speakers: dict[str, Speaker] = {}
    for turn_id, position, role, content, tokens, author_id, author_name in rows:
        history.append(HistoryEntry(turn_id, position, ChatMessage(role, RawJson(content)), tokens))
        if author_id not in speakers:
            speakers[author_id] = Speaker(author_id, author_name)
    if author is not None:
        speakers.setdefault(author.author_id, author)
    return tuple(history), tuple(speakers.values())
