"""The one conversion per boundary: database rows to domain values, and the history read."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, get_origin, get_type_hints

from sqlalchemy import Integer, Row, Select, Text, and_, bindparam, case, select
from sqlalchemy import cast as sql_cast

from bot.domain.models import (
    SETTING_NAMES,
    ChatMessage,
    Conversation,
    GenerationSettings,
    HistoryEntry,
    NewTurn,
    RawJson,
    RequestHandle,
    StoredInteraction,
    Turn,
    TurnState,
)
from bot.storage.tables import messages, speakers, turns

IN_HISTORY_STATES = tuple(s.value for s in TurnState if s.in_history)


# The domain's values are read from the columns of the same names (tables.py): their
# fields are listed once, in models.py.
_CONVERSATION_FIELDS = tuple(f.name for f in fields(Conversation))
_HANDLE_FIELDS = tuple(f.name for f in fields(RequestHandle))
_TURN_FIELDS = tuple(f.name for f in fields(Turn) if f.name not in ("state", "handle"))
# Array columns come back as lists.
_TURN_TUPLES = tuple(name for name, tp in get_type_hints(Turn).items() if get_origin(tp) is tuple)
# What a stored turn keeps of the new turn it was begun from (the scope names its
# conversation instead; the turn it supersedes is marked so).
_BEGUN_FIELDS = tuple(f.name for f in fields(NewTurn) if f.name not in ("scope_id", "supersedes"))
_INTERACTION_FIELDS = tuple(f.name for f in fields(StoredInteraction))


def conversation_from(row: Row[Any]) -> Conversation:
    return Conversation(**{name: getattr(row, name) for name in _CONVERSATION_FIELDS})


def turn_from(row: Row[Any]) -> Turn:
    values = {name: getattr(row, name) for name in _TURN_FIELDS}
    for name in _TURN_TUPLES:
        values[name] = tuple(values[name])
    handle = None
    if row.request_id is not None:
        handle = RequestHandle(**{name: getattr(row, name) for name in _HANDLE_FIELDS})
    return Turn(**values, state=TurnState(row.state), handle=handle)


def pending_turn(new: NewTurn, conversation: Conversation, now: datetime) -> Turn:
    """``new`` as the pending turn stored in ``conversation``'s current epoch (its id is 0
    until it is inserted)."""
    begun = {name: getattr(new, name) for name in _BEGUN_FIELDS}
    return Turn(
        **begun,
        id=0,
        conversation_id=conversation.id,
        epoch=conversation.epoch,
        state=TurnState.PENDING,
        handle=None,
        output=None,
        reasoning=None,
        error=None,
        reply_message_ids=(),
        created_at=now,
        updated_at=now,
    )


def turn_row(turn: Turn) -> dict[str, Any]:
    """The columns of a new row for ``turn`` (its id is the database's to give), as
    ``turn_from`` reads them back."""
    values = {name: getattr(turn, name) for name in _TURN_FIELDS if name != "id"}
    for name in _TURN_TUPLES:
        values[name] = list(values[name])
    handle = turn.handle
    for name in _HANDLE_FIELDS:
        values[name] = None if handle is None else getattr(handle, name)
    values["state"] = turn.state.value
    return values


def interaction_from(row: Row[Any]) -> StoredInteraction:
    values = {name: getattr(row, name) for name in _INTERACTION_FIELDS}
    # As the domain types them, whatever type the driver hands back.
    values.update(sealed_token=bytes(row.sealed_token), ephemeral=bool(row.ephemeral))
    return StoredInteraction(**values)


def settings_from(row: Row[Any]) -> GenerationSettings:
    # The columns are named after the settings (tables.py makes one per parameter).
    return GenerationSettings.of({name: getattr(row, name) for name in SETTING_NAMES})


# The history of one conversation's epoch (``:conversation_id``, ``:epoch``): its messages
# whose turns are in history, leaving out turn ``:exclude`` (the one being answered).
_IN_HISTORY = (
    messages.c.conversation_id == bindparam("conversation_id"),
    messages.c.epoch == bindparam("epoch"),
    turns.c.state.in_(IN_HISTORY_STATES),
    turns.c.id != bindparam("exclude"),
)


def _history_messages() -> Select[Any]:
    """The history's messages (``_IN_HISTORY``) as ``history_from`` takes them."""
    return (
        select(
            messages.c.turn_id,
            messages.c.position,
            messages.c.role,
            sql_cast(messages.c.content, Text).label("content"),
            messages.c.tokens,
        )
        .join(turns, turns.c.id == messages.c.turn_id)
        .where(*_IN_HISTORY)
    )


def history_query() -> Select[Any]:
    """The history's messages from position ``:since`` on, oldest first: a range scan of
    an index on (conversation_id, epoch, position), joined by primary key to the turns to
    keep only those in history. The content is read as its JSON text (CAST:
    PostgreSQL's driver would decode a json column), to be sent on as it is."""
    return (
        _history_messages()
        .where(messages.c.position >= bindparam("since"))
        .order_by(messages.c.position)
    )


def history_newest_query() -> Select[Any]:
    """``HISTORY``'s columns for the messages before position ``:before``, newest first, at
    most ``:limit`` of them: a backward range scan of the history index, joined by primary
    key to the turns to keep those in history. Read in batches until the context budget
    is full, so what is read stops where the request does, however long the conversation
    (no grouping or sort over the whole epoch)."""
    return (
        _history_messages()
        .where(messages.c.position < bindparam("before"))
        .order_by(messages.c.position.desc())
        .limit(bindparam("limit", type_=Integer))
    )


def speakers_query() -> Select[Any]:
    """The stored speakers of one epoch (``:conversation_id``, ``:epoch``) in order of first
    appearance, each with the turn it was first seen in and whether that turn still counts:
    in history, and not turn ``:exclude`` (the one being answered)."""
    valid = and_(turns.c.state.in_(IN_HISTORY_STATES), turns.c.id != bindparam("exclude"))
    return (
        select(
            speakers.c.author_id,
            speakers.c.position,
            turns.c.author_name,
            case((valid, True), else_=False).label("valid"),
        )
        .select_from(speakers)
        .outerjoin(turns, turns.c.id == speakers.c.turn_id)
        .where(
            speakers.c.conversation_id == bindparam("conversation_id"),
            speakers.c.epoch == bindparam("epoch"),
        )
        .order_by(speakers.c.position)
    )


def first_turn_of_query() -> Select[Any]:
    """Author ``:author_id``'s first message in the history (``_IN_HISTORY``): its position,
    turn and the author's name on that turn. For a stored speaker whose turn has left the
    history: oldest first over the history index, stopping at the first of theirs."""
    return (
        select(messages.c.position, messages.c.turn_id, turns.c.author_name)
        .join(turns, turns.c.id == messages.c.turn_id)
        .where(*_IN_HISTORY, turns.c.author_id == bindparam("author_id"))
        .order_by(messages.c.position)
        .limit(1)
    )


HISTORY = history_query()
HISTORY_NEWEST = history_newest_query()
SPEAKERS = speakers_query()
FIRST_TURN_OF = first_turn_of_query()


@dataclass(slots=True)
class HistoryCut:
    """The history a request can hold, read newest first (``HISTORY_NEWEST``' rows, fed in
    batches): the newest whole turns whose tokens total at most ``budget``, which is all a
    request can ever hold, since the domain trims the oldest whole turns first within a
    smaller budget. ``omitted`` is 1 when an older turn did not fit (the read stops there:
    how many more there are is not read)."""

    budget: int
    omitted: int = 0
    done: bool = False
    # Tokens and messages read so far (what the next batch is sized from).
    used: int = 0
    read: int = 0
    # The rows kept, newest first; those from ``_turn_start`` on are the turn being read.
    _rows: list[Sequence[Any]] = field(default_factory=list)
    _turn: int | None = None
    _turn_start: int = 0

    def take(self, rows: Iterable[Sequence[Any]]) -> None:
        """The next messages, newest first; sets ``done`` once a turn does not fit."""
        budget = self.budget
        kept = self._rows
        for row in rows:
            turn_id = row[0]
            if turn_id != self._turn:
                self._turn = turn_id
                self._turn_start = len(kept)
            self.used += int(row[4])
            self.read += 1
            if self.used > budget:
                del kept[self._turn_start :]  # that turn does not fit whole
                self.omitted = 1
                self.done = True
                return
            kept.append(row)

    def end(self) -> None:
        """No older messages: everything read fits."""
        self.done = True

    def history(self) -> tuple[HistoryEntry, ...]:
        """The entries kept, oldest first."""
        return history_from(reversed(self._rows))


def history_from(rows: Iterable[Sequence[Any]]) -> tuple[HistoryEntry, ...]:
    """The history entries of ``HISTORY``'s rows. (``_make``: the named tuples built from a
    tuple without their ``__new__``'s argument handling; hundreds per turn of a long
    conversation.)"""
    entry, message = HistoryEntry._make, ChatMessage._make
    return tuple(
        entry((turn_id, position, message((role, RawJson(content))), tokens))
        for turn_id, position, role, content, tokens in rows
    )
