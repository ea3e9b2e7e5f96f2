"""Frozen values of the domain. Nothing here knows Discord, HTTP or SQL."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, NamedTuple, TypeAlias

from bot.domain.params import (
    AUTOREPLY,
    EFFORT,
    MAX_COMPLETION_TOKENS,
    PARAMS,
    PERSONA,
    SYSTEM_PROMPT,
    TEMPERATURE,
    THINKING,
    TOP_P,
    Param,
)

# Re-exported: the settings' value types and scopes are part of the domain's vocabulary.
from bot.domain.params import Autoreply as Autoreply
from bot.domain.params import Effort as Effort
from bot.domain.params import SettingsScope as SettingsScope
from bot.domain.params import Thinking as Thinking

JsonValue: TypeAlias = (
    str | int | float | bool | Sequence["JsonValue"] | Mapping[str, "JsonValue"] | None
)

# The parameters' own names, kinds and ranges are declared in bot.domain.params.
MAX_IMAGES_PER_TURN = 6
MAX_VIDEOS_PER_TURN = 3


@dataclass(frozen=True, slots=True)
class RawJson:
    """JSON text exactly as stored: history read from the database is sent on to the model
    as this text, never decoded and re-encoded on the way."""

    text: str


class ChatMessage(NamedTuple):
    """One message of the model's history. ``content`` is opaque: sent back unchanged (as
    ``RawJson`` when it comes from the database). A named tuple, not a frozen dataclass: a
    long conversation's turn builds hundreds (its history), and a tuple costs a third."""

    role: str
    content: JsonValue | RawJson


def _setting(param: Param) -> Any:
    """A settings field, unset by default, that knows its parameter (the config's
    ``[model]`` section reads its documentation and range from it)."""
    return field(default=None, metadata={"param": param})


@dataclass(frozen=True, slots=True)
class GenerationSettings:
    """Generation parameters (one field per ``params.PARAMS`` entry, same order); ``None``
    means "not set at this layer"."""

    thinking: Thinking | None = _setting(THINKING)
    effort: Effort | None = _setting(EFFORT)
    system_prompt: str | None = _setting(SYSTEM_PROMPT)
    max_completion_tokens: int | None = _setting(MAX_COMPLETION_TOKENS)
    temperature: float | None = _setting(TEMPERATURE)
    top_p: float | None = _setting(TOP_P)
    persona: str | None = _setting(PERSONA)
    autoreply: Autoreply | None = _setting(AUTOREPLY)

    def merged_over(self, lower: GenerationSettings) -> GenerationSettings:
        """Values set here win; unset ones come from ``lower``."""
        return replace(
            lower, **{n: getattr(self, n) for n in SETTING_NAMES if getattr(self, n) is not None}
        )

    def is_empty(self) -> bool:
        return all(getattr(self, n) is None for n in SETTING_NAMES)

    @staticmethod
    def of(values: Mapping[str, Any]) -> GenerationSettings:
        """Settings from values keyed by parameter name (checked by ``validate_settings``
        where they come from people)."""
        return GenerationSettings(**values)

    def only_settings(self) -> GenerationSettings:
        """Just the parameters (of a subclass that holds more, such as the config's)."""
        return GenerationSettings.of({n: getattr(self, n) for n in SETTING_NAMES})

    def wire_values(self) -> dict[str, Any]:
        """The values keyed by the model input's keys (``ModelRequest``'s field names)."""
        return {p.wire_key: getattr(self, p.name) for p in PARAMS if p.wire_key is not None}


SETTING_NAMES: tuple[str, ...] = tuple(p.name for p in PARAMS)


class MediaKind(enum.StrEnum):
    IMAGE = "image"
    VIDEO = "video"
    TEXT = "text"
    UNSUPPORTED = "unsupported"


class Origin(enum.StrEnum):
    """Where an attachment comes from."""

    FILE = "file"  # attached to the message: Discord reported its size
    LINKED = "linked"  # media a link in the text unfurled into: its size is unknown
    PAGE = "page"  # a web page linked in the text: read, not downloaded from Discord


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file attached to a user's message, as Discord describes it, or media or a page a
    link in the message points to (``origin``; ``size`` is 0 when unknown)."""

    id: str
    filename: str
    content_type: str | None
    size: int
    url: str
    origin: Origin = Origin.FILE


@dataclass(frozen=True, slots=True)
class Incoming:
    """One person's message the bot should answer, with opaque Discord ids.

    ``scope_id`` is the conversation's key: the thread id, or the DM channel id.
    ``source_id`` is the Discord message (or interaction) id; a source is answered once.
    ``reply_text``/``reply_author`` carry the message this one replies to, when it starts a
    conversation (its attachments are already in ``attachments``). ``reply_to`` is the
    message the answer replies to (None: none, e.g. in a thread opened on this message).
    ``interaction_id`` is set when the bot cannot post where the person is (a server that did
    not add it, a DM between people): the answer goes through that interaction instead.
    ``channel_id`` is where the answer goes when that is not the conversation's own channel:
    a message answered once in a thread its conversation is not bound to.
    """

    source_id: str
    scope_id: str
    author_id: str
    author_name: str
    text: str
    attachments: tuple[Attachment, ...] = ()
    guild_id: str | None = None
    parent_channel_id: str | None = None
    created_at: datetime | None = None
    reply_text: str | None = None
    reply_author: str | None = None
    reply_to: str | None = None
    interaction_id: str | None = None
    channel_id: str | None = None


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a turn's progress and answer go: a channel (thread or DM), and the message the
    answer replies to (None: no reply reference); or, with ``interaction_id``, the
    interaction the person started where the bot cannot post (``channel_id`` is then the
    conversation's scope)."""

    channel_id: str
    reply_to: str | None = None
    interaction_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredInteraction:
    """What answering an interaction after a restart takes: its webhook (the application
    and the interaction's token, sealed by the Discord layer, which alone can open it), the
    person it answers, the visibility chosen when it was acknowledged, and when Discord
    stops taking answers on it (15 minutes after its creation)."""

    interaction_id: str
    application_id: str
    user_id: str
    sealed_token: bytes = field(repr=False)
    ephemeral: bool
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """Everything sent to the model for one turn (the wire shape is the fal client's)."""

    prompt: str
    messages: tuple[ChatMessage, ...] = ()
    image_urls: tuple[str, ...] = ()
    video_urls: tuple[str, ...] = ()
    system_prompt: str | None = None
    thinking: Thinking | None = None
    reasoning_effort: Effort | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None


@dataclass(frozen=True, slots=True)
class ModelReply:
    """The model's answer. ``messages`` is the conversation as the model returned it, less
    the first ``skipped`` conversation messages (system ones aside): those the request sent,
    which the history holds already, so they are not decoded again."""

    output: str
    reasoning: str | None
    messages: tuple[ChatMessage, ...]
    request_id: str
    inference_time: float | None = None
    # What fal reported the request consumed (X-Fal-Billable-Units); None when it did not.
    billable_units: int | None = None
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class RequestHandle:
    """A submitted fal request. The URLs are those fal returned; ``None`` after a resume
    by id alone, when the client builds them from the endpoint id."""

    request_id: str
    status_url: str | None = None
    response_url: str | None = None
    cancel_url: str | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """A queue update: ``queued`` with the number of requests ahead, or ``running``; or
    ``database``: the turn waits for the bot's database to come back."""

    state: Literal["queued", "running", "database"]
    queue_position: int | None = None


class TurnState(enum.StrEnum):
    """Life of one turn. ``pending`` is stored before submit, ``submitted`` once fal's request
    id is stored, ``completed`` once the answer is stored, ``delivered`` once it is posted."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    DELIVERED = "delivered"
    FAILED = "failed"
    STOPPED = "stopped"
    SUPERSEDED = "superseded"

    @property
    def in_history(self) -> bool:
        """Whether this turn's messages are sent back to the model."""
        return self in (TurnState.COMPLETED, TurnState.DELIVERED)

    @property
    def settled(self) -> bool:
        """The model's part is over (answered, failed or stopped): it may be retried."""
        return self in (
            TurnState.COMPLETED,
            TurnState.DELIVERED,
            TurnState.FAILED,
            TurnState.STOPPED,
        )

    @property
    def finished(self) -> bool:
        return self in (
            TurnState.DELIVERED,
            TurnState.FAILED,
            TurnState.STOPPED,
            TurnState.SUPERSEDED,
        )


@dataclass(frozen=True, slots=True)
class Conversation:
    id: int
    scope_id: str
    guild_id: str | None
    parent_channel_id: str | None
    owner_id: str
    epoch: int
    created_at: datetime
    updated_at: datetime
    trim_notified_epoch: int | None = None


@dataclass(frozen=True, slots=True)
class NewConversation:
    scope_id: str
    owner_id: str
    guild_id: str | None = None
    parent_channel_id: str | None = None


class HistoryEntry(NamedTuple):
    """A stored model message of the current epoch, with the turn it belongs to and its
    token estimate (computed once, when it was stored). A named tuple, as ``ChatMessage``:
    hundreds per turn of a long conversation."""

    turn_id: int
    position: int
    message: ChatMessage
    tokens: int


@dataclass(frozen=True, slots=True)
class Speaker:
    """Someone who wrote a user turn of a conversation."""

    author_id: str
    author_name: str


@dataclass(frozen=True, slots=True)
class TurnContext:
    """What a turn's request is built from: the epoch's history (oldest first), the settings
    layers of its thread, channel and server, and the distinct authors of the turns in that
    history in order of first appearance, followed by the turn's own author if not listed."""

    history: tuple[HistoryEntry, ...]
    layers: dict[SettingsScope, GenerationSettings]
    speakers: tuple[Speaker, ...]
    # Older turns of the epoch the store did not read: more than a request can ever hold
    # (the history is then the newest whole turns within the context budget). The store
    # reads no further than the first that does not fit, so this is 1 when any were left
    # out (a trim to notify), not how many.
    omitted_turns: int = 0


@dataclass(frozen=True, slots=True)
class NewTurn:
    """A user turn about to be sent: what will be submitted, minus the history, so a restart
    can submit it again if it never reached fal. It joins the conversation bound to
    ``scope_id``, in that conversation's current epoch. ``image_names``/``video_names`` are
    the file names of the attachments sent, parallel to the URLs. ``supersedes``: the turn
    this one answers again (its previous attempt), which leaves the history as it is stored."""

    scope_id: str
    source_id: str
    author_id: str
    author_name: str
    reply_channel_id: str
    prompt: str
    image_urls: tuple[str, ...] = ()
    video_urls: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    attempt: int = 0
    image_names: tuple[str, ...] = ()
    video_names: tuple[str, ...] = ()
    supersedes: int | None = None


@dataclass(frozen=True, slots=True)
class Turn:
    """A stored turn: the user's message, the request for it and what became of it."""

    id: int
    conversation_id: int
    epoch: int
    source_id: str
    author_id: str
    author_name: str
    reply_channel_id: str
    prompt: str
    image_urls: tuple[str, ...]
    video_urls: tuple[str, ...]
    warnings: tuple[str, ...]
    state: TurnState
    handle: RequestHandle | None
    output: str | None
    reasoning: str | None
    error: str | None
    reply_message_ids: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    attempt: int = 0
    status_message_id: str | None = None
    image_names: tuple[str, ...] = ()
    video_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TurnStart:
    """What ``begin_turn`` stored and read in its one transaction."""

    conversation: Conversation
    turn: Turn
    context: TurnContext


@dataclass(frozen=True, slots=True)
class Refusal:
    """A quota refused a request: the keys that are used up (in the order given) and when
    the request would be allowed by all of them."""

    keys: tuple[str, ...]
    retry_at: datetime


# --- costs (the rules are in bot/domain/costs.py) -------------------------------------


@dataclass(frozen=True, slots=True)
class Payer:
    """Who a turn's cost is counted against: its author, its server (None in a DM) and its
    conversation (the thread or DM channel)."""

    user_id: str
    guild_id: str | None
    scope_id: str | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    """A turn's worst case, held against its budgets until the turn ends."""

    turn_id: int
    payer: Payer
    input_tokens: int
    units: int
    usd: float
    at: datetime


@dataclass(frozen=True, slots=True)
class Cost:
    """What a turn cost in the end; ``estimated`` when fal did not report its units."""

    units: int
    usd: float
    estimated: bool


@dataclass(frozen=True, slots=True)
class Settlement:
    """How a turn's final cost follows from how it ended (decided in the domain, applied by
    the store in the transaction that reads the reservation): ``reported``, what fal billed,
    or else ``estimate`` of the reservation's input estimate."""

    reported: Cost | None = None
    estimate: Callable[[int], Cost] | None = None

    def cost(self, input_tokens: int) -> Cost:
        if self.reported is not None:
            return self.reported
        if self.estimate is None:
            raise ValueError("a settlement needs a reported cost or an estimate")
        return self.estimate(input_tokens)
