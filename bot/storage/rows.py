"""The one conversion per boundary: database rows to domain values, and the history read."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Row, Select, Text, bindparam, func, select
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


# The history of one conversation's epoch (``:conversation_id``, ``:epoch``): its messages
# whose turns are in history, leaving out turn ``:exclude`` (the one being answered).
_IN_HISTORY = (
    messages.c.conversation_id == bindparam("conversation_id"),
    messages.c.epoch == bindparam("epoch"),
    turns.c.state.in_(IN_HISTORY_STATES),
    turns.c.id != bindparam("exclude"),
)


def history_query() -> Select[Any]:
    """The history's messages from position ``:since`` on, oldest first: a range scan of
    an index on (conversation_id, epoch, position), joined by primary key to the turns to
    keep only those in history. The content is read as its JSON text (CAST:
    PostgreSQL's driver would decode a json column), to be sent on as it is."""
    return (
        select(
            messages.c.turn_id,
            messages.c.position,
            messages.c.role,
            sql_cast(messages.c.content, Text).label("content"),
            messages.c.tokens,
        )
        .join(turns, turns.c.id == messages.c.turn_id)
        .where(*_IN_HISTORY, messages.c.position >= bindparam("since"))
        .order_by(messages.c.position)
    )


def history_turns_query() -> Select[Any]:
    """The history's turns, oldest first: each one's first position, its messages' stored
    token estimates summed, and its author. Read before the messages, so that only the
    turns a request can hold are read with their content."""
    first = func.min(messages.c.position)
    return (
        select(
            turns.c.id,
            first.label("first"),
            func.sum(messages.c.tokens).label("tokens"),
            turns.c.author_id,
            turns.c.author_name,
        )
        .select_from(messages)
        .join(turns, turns.c.id == messages.c.turn_id)
        .where(*_IN_HISTORY)
        .group_by(turns.c.id)
        .order_by(first)
    )


HISTORY = history_query()
HISTORY_TURNS = history_turns_query()


@dataclass(frozen=True, slots=True)
class HistoryCut:
    """Which of the history to read: from position ``since`` (None: nothing), leaving
    ``omitted`` older turns out; and the speakers of all of it."""

    since: int | None
    omitted: int
    speakers: tuple[Speaker, ...]


def history_cut(
    history_turns: Sequence[Sequence[Any]], author: Speaker | None, budget: int | None
) -> HistoryCut:
    """From the history's turns (``HISTORY_TURNS``' rows): the newest whole turns whose
    tokens total at most ``budget`` (all of them when ``None``), which is all a request can
    ever hold of it, since the domain trims the oldest whole turns first within a smaller
    budget. The speakers are the distinct authors of every turn, in order of first
    appearance, then ``author`` (of the turn being answered) if not among them."""
    speakers: dict[str, Speaker] = {}
    for _, _, _, author_id, author_name in history_turns:
        if author_id not in speakers:
            speakers[author_id] = Speaker(author_id, author_name)
    if author is not None:
        speakers.setdefault(author.author_id, author)
    kept = len(history_turns)
    if budget is not None:
        used = 0
        for index in range(len(history_turns) - 1, -1, -1):
            used += int(history_turns[index][2])
            if used > budget:
                kept = len(history_turns) - 1 - index
                break
    since = int(history_turns[len(history_turns) - kept][1]) if kept else None
    return HistoryCut(since, len(history_turns) - kept, tuple(speakers.values()))


def history_from(rows: Iterable[Sequence[Any]]) -> tuple[HistoryEntry, ...]:
    """The history entries of ``HISTORY``'s rows."""
    return tuple(
        HistoryEntry(turn_id, position, ChatMessage(role, RawJson(content)), tokens)
        for turn_id, position, role, content, tokens in rows
    )
