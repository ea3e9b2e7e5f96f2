"""The flows that reach the service, each an explicit value: a new message (``Incoming``),
``Redo`` (Retry, or an edit of the latest message; with its payer once admitted: ``Redone``)
and ``Resume`` (a turn a previous run left unfinished)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.domain.models import Incoming, Turn


@dataclass(frozen=True, slots=True)
class Redo:
    """Answer a conversation's latest turn again: Retry (``edited`` None: the same prompt and
    media) or an edit of the latest message (``edited``: rebuilt from the edited message).
    ``turn_id`` names the turn the person meant; when it is no longer the latest, nothing
    happens."""

    scope_id: str
    turn_id: int | None = None
    edited: Incoming | None = None


@dataclass(frozen=True, slots=True)
class Redone:
    """A ``Redo`` with who pays for the new answer: the person the admission checked (a
    moderator's Retry is the moderator's, not the author's)."""

    redo: Redo
    payer_id: str


@dataclass(frozen=True, slots=True)
class Resume:
    """Carry on a turn a previous run left unfinished (pending, submitted or completed)."""

    turn: Turn


Flow = Incoming | Redone | Resume


def flow_key(flow: Flow) -> str:
    """What an outage's story counts a flow as (one turn)."""
    if isinstance(flow, Resume):
        return f"turn {flow.turn.id}"
    if isinstance(flow, Redone):
        return f"redo {flow.redo.scope_id}/{flow.redo.turn_id}"
    return f"message {flow.source_id}"
