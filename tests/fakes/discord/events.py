"""The fake's event log: everything that happened on it, in order.

Tests read ``fake.events`` or wait on it (``await fake.wait_for(predicate)``). Each entry is one
of the frozen dataclasses below; match with ``isinstance``. ``by_bot`` tells actions of the bot
under test from those a test performed as a user.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .models import FakeMessage

__all__ = [
    "CdnFetched",
    "CommandsSynced",
    "Event",
    "GatewayClosed",
    "GatewayIdentified",
    "GatewayRejected",
    "GatewayResumed",
    "HttpRequest",
    "InteractionCreated",
    "InteractionResponded",
    "MessageCreated",
    "MessageDeleted",
    "MessageEdited",
    "Problem",
    "ReactionAdded",
    "ReactionRemoved",
    "ThreadCreated",
    "ThreadMemberAdded",
    "ThreadUpdated",
    "TypingStarted",
    "UploadedFile",
]


@dataclass(frozen=True)
class Event:
    """Base class of all log entries."""

    def describe(self) -> str:
        return repr(self)


@dataclass(frozen=True)
class UploadedFile:
    field_name: str
    filename: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class HttpRequest(Event):
    """One REST request, with the status the fake answered (429s and injected faults too)."""

    method: str
    path: str
    #: The matched route template, e.g. ``POST /channels/{channel_id}/messages``
    #: (``None`` for an unknown route).
    route: str | None
    query: Mapping[str, str]
    status: int
    body: Any = field(repr=False, default=None)
    files: tuple[UploadedFile, ...] = field(repr=False, default=())

    def describe(self) -> str:
        return f"HTTP {self.method} {self.path} -> {self.status}"


@dataclass(frozen=True)
class CdnFetched(Event):
    """A download from the fake CDN (``attachment_id`` is ``None`` for unknown files)."""

    path: str
    attachment_id: int | None
    status: int

    def describe(self) -> str:
        return f"CDN GET {self.path} -> {self.status}"


@dataclass(frozen=True)
class GatewayIdentified(Event):
    session_id: str
    shard_id: int
    shard_count: int
    intents: int
    path: str


@dataclass(frozen=True)
class GatewayResumed(Event):
    session_id: str
    replayed: int
    path: str


@dataclass(frozen=True)
class GatewayRejected(Event):
    """IDENTIFY/RESUME refused: closed with ``code`` (e.g. 4014) or invalid session (``None``)."""

    reason: str
    code: int | None


@dataclass(frozen=True)
class GatewayClosed(Event):
    session_id: str | None
    code: int | None
    by_server: bool


@dataclass(frozen=True)
class MessageCreated(Event):
    message: FakeMessage
    #: ``rest``, ``user``, ``interaction_response``, ``followup``, ``system``.
    via: str
    interaction_id: int | None = None

    @property
    def by_bot(self) -> bool:
        return self.via in ("rest", "interaction_response", "followup")

    def describe(self) -> str:
        return f"MessageCreated(via={self.via}, {self.message!r})"


@dataclass(frozen=True)
class MessageEdited(Event):
    before: FakeMessage
    after: FakeMessage
    via: str
    interaction_id: int | None = None

    @property
    def by_bot(self) -> bool:
        return self.via != "user"

    def describe(self) -> str:
        return f"MessageEdited(via={self.via}, {self.after!r})"


@dataclass(frozen=True)
class MessageDeleted(Event):
    message: FakeMessage
    via: str

    @property
    def by_bot(self) -> bool:
        return self.via != "user"


@dataclass(frozen=True)
class ThreadCreated(Event):
    thread_id: int
    parent_id: int
    name: str
    type: int
    owner_id: int
    from_message_id: int | None
    by_bot: bool
    invitable: bool = True
    auto_archive_duration: int = 1440


@dataclass(frozen=True)
class ThreadUpdated(Event):
    thread_id: int
    archived: bool
    locked: bool
    by_bot: bool


@dataclass(frozen=True)
class ThreadMemberAdded(Event):
    thread_id: int
    user_id: int
    by_bot: bool


@dataclass(frozen=True)
class TypingStarted(Event):
    channel_id: int
    user_id: int
    by_bot: bool


@dataclass(frozen=True)
class ReactionAdded(Event):
    channel_id: int
    message_id: int
    emoji: str
    user_id: int
    by_bot: bool


@dataclass(frozen=True)
class ReactionRemoved(Event):
    channel_id: int
    message_id: int
    emoji: str
    user_id: int
    by_bot: bool


@dataclass(frozen=True)
class InteractionCreated(Event):
    """A test user invoked a command / pressed a component / submitted a modal."""

    interaction_id: int
    type: int
    user_id: int
    channel_id: int
    name: str | None
    custom_id: str | None


@dataclass(frozen=True)
class InteractionResponded(Event):
    """The bot's initial interaction callback (types 4, 5, 6, 7, 8, 9)."""

    interaction_id: int
    type: int
    data: Mapping[str, Any] | None = field(repr=False)
    ephemeral: bool
    #: The message created (4, 5) or updated (7); ``None`` otherwise.
    message: FakeMessage | None = None


@dataclass(frozen=True)
class CommandsSynced(Event):
    """A bulk overwrite (``PUT``) of the application commands, as stored by the fake."""

    guild_id: int | None
    commands: Sequence[Mapping[str, Any]] = field(repr=False)

    def describe(self) -> str:
        names = [str(c.get("name")) for c in self.commands]
        return f"CommandsSynced(guild_id={self.guild_id}, names={names})"


@dataclass(frozen=True)
class Problem(Event):
    """Something a test should hear about: unknown route, malformed request, invalid payload."""

    message: str
