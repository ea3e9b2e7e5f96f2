"""Protocols the edges implement: the model client (bot/fal), the stores (bot/storage: one
port per aggregate, each implemented directly by its repository) and the delivery of
replies (bot/chat)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from bot.domain.models import (
    SETTING_NAMES,
    Attachment,
    ChatMessage,
    Conversation,
    Cost,
    Destination,
    GenerationSettings,
    ModelReply,
    ModelRequest,
    NewConversation,
    NewTurn,
    Progress,
    Refusal,
    RequestHandle,
    Reservation,
    SettingsScope,
    Settlement,
    StoredInteraction,
    Turn,
    TurnContext,
    TurnStart,
    TurnState,
)

ProgressCallback = Callable[[Progress], Awaitable[None]]
# Opens a file's bytes as a stream of chunks, once per attempt to send it (a retried upload
# reads the file again instead of holding it in memory).
OpenBody = Callable[[], AsyncGenerator[bytes, None]]


# --- parameter objects of the store ports ---------------------------------------------


@dataclass(frozen=True, slots=True)
class SettingsChange:
    """One change of the overrides at one scope: the fields of ``values`` that are set, and
    the settings named in ``clear``, unset. Raises ``ValueError`` for a name that is no
    setting or one both set and cleared (a caller's mistake, not a person's)."""

    values: GenerationSettings = field(default_factory=GenerationSettings)
    clear: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.clear) - set(SETTING_NAMES))
        if unknown:
            raise ValueError(f"unknown settings to clear: {', '.join(unknown)}")
        both = sorted(set(self.set_values()) & set(self.clear))
        if both:
            raise ValueError(f"settings both set and cleared: {', '.join(both)}")

    def set_values(self) -> dict[str, Any]:
        """The values set, by setting name."""
        return {
            n: getattr(self.values, n) for n in SETTING_NAMES if getattr(self.values, n) is not None
        }

    def stored_values(self) -> dict[str, Any]:
        """What the scope's row takes: the values set, and ``None`` for each cleared one."""
        return {**self.set_values(), **dict.fromkeys(self.clear)}


@dataclass(frozen=True, slots=True)
class SubmittedWith:
    """What the write that records a turn's request id stores too: that the person was told
    the history is trimmed in ``trim_notified_epoch``, and the turn's cost so far, held as
    ``reservation`` (no budget checked)."""

    trim_notified_epoch: int | None = None
    reservation: Reservation | None = None


NOTHING_MORE = SubmittedWith()


class ModelClient(Protocol):
    """The model behind fal's queue. Every failure is raised as a ``ModelError``."""

    async def submit(self, request: ModelRequest) -> RequestHandle:
        """Queue the request; never submits twice for one call."""
        ...

    async def wait(
        self,
        handle: RequestHandle,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
        sent: int | None = None,
    ) -> ModelReply:
        """Wait for the request to finish and return its answer. When ``timeout`` seconds
        pass first, cancel the request at fal and raise ``ModelTimeout``. ``sent``: how many
        history messages the request carried (None: unknown), which the answer need not
        decode again (``ModelReply.skipped``)."""
        ...

    async def cancel(self, handle: RequestHandle) -> ModelReply | None:
        """Ask fal to cancel the request (best effort; an already finished one is fine).
        Returns the answer of a request that had already completed (fal billed it, so its
        cost is what the answer reports); None otherwise."""
        ...

    async def upload(self, data: bytes, *, content_type: str, file_name: str) -> str:
        """Store a file at fal and return its durable URL."""
        ...

    async def upload_stream(
        self, open_body: OpenBody, *, size: int, content_type: str, file_name: str
    ) -> str:
        """Store a file of exactly ``size`` bytes at fal, streamed from ``open_body`` (never
        held whole), and return its durable URL. An ``AttachmentError`` the body raises
        (the file is not what its size said) is raised as it is, not retried."""
        ...


class ConversationStore(Protocol):
    """Conversations, and what a turn's request is built from. Every method of this and the
    other store ports is one short transaction; failures are raised as ``StorageError``.
    Ids of Discord objects are strings. A fast turn costs four: ``begin_turn`` here, then
    the ``TurnStore``'s ``record_submission`` and ``complete_turn`` and the
    ``DeliveryRecorder``'s ``record_delivery``."""

    async def conversation_for_scope(self, scope_id: str) -> Conversation | None:
        """The conversation bound to a thread or DM channel, if any."""
        ...

    async def get_conversation(self, conversation_id: int) -> Conversation:
        """The conversation; ``StorageError`` when there is none."""
        ...

    async def find_conversation(self, conversation_id: int) -> Conversation | None:
        """The conversation, or None when there is none (forgotten, or an id from a custom
        id)."""
        ...

    async def begin_turn(
        self, new: NewTurn, *, conversation: NewConversation | None = None
    ) -> TurnStart:
        """Store a user turn as ``pending`` in the conversation bound to ``new.scope_id``, in
        its current epoch, and read what its request is built from, in one transaction.

        An unbound scope is bound to a new conversation made from ``conversation`` (when
        another binds it first, theirs is used); with ``conversation`` None it raises
        ``StorageError``. Raises ``DuplicateMessage`` when the source message already has a
        turn of that attempt. The turn ``new.supersedes`` (the one it answers again) is marked
        superseded in the same transaction."""
        ...

    async def turn_context(self, turn: Turn) -> TurnContext:
        """What a stored turn's request is built from (a resumed turn): the history of its
        epoch without the turn itself, the settings layers of its thread, channel and
        server, and the speakers. One read transaction."""
        ...

    async def reset(self, conversation_id: int) -> int:
        """Start a new epoch: older turns stay stored but are no longer sent. Returns it."""
        ...

    async def recent_conversations(self, since: datetime) -> list[tuple[Conversation, str | None]]:
        """Conversations active since ``since``, each with the source id of its newest turn
        (where to look for messages that arrived while the bot was down)."""
        ...


class TurnStore(Protocol):
    """The life of stored turns, from submitted to finished (failures raised as
    ``StorageError``)."""

    async def stop_turn(self, turn_id: int, by: str) -> bool:
        """Mark a pending or submitted turn stopped (``by`` kept as its error); False when
        it had already moved on (answered, failed…)."""
        ...

    async def get_turn(self, turn_id: int) -> Turn:
        """The turn; ``StorageError`` when there is none."""
        ...

    async def find_turn(self, turn_id: int) -> Turn | None:
        """The turn, or None when there is none (forgotten, or an id from a custom id)."""
        ...

    async def turn_for_source(self, source_id: str) -> Turn | None:
        """The newest attempt's turn answering a Discord message (the person's), if any."""
        ...

    async def record_submission(
        self, turn_id: int, handle: RequestHandle, also: SubmittedWith = NOTHING_MORE
    ) -> None:
        """Store fal's request id and URLs; the turn becomes ``submitted``. What ``also``
        holds is stored in the same transaction, which is not kept waiting behind this
        process's other writes."""
        ...

    async def complete_turn(
        self,
        turn_id: int,
        reply: ModelReply,
        new_messages: Sequence[ChatMessage],
        *,
        settlement: Settlement | None = None,
    ) -> Cost | None:
        """Store the answer: append ``new_messages`` (each as its JSON text, with its token
        estimate) after the conversation's last stored message (cost independent of the
        history's length), keep output and reasoning for display, and mark the turn
        ``completed``; with ``settlement``, replace the turn's reservation with its final
        cost and return it (None when it held none). All in one transaction."""
        ...

    async def finish_turn(self, turn_id: int, state: TurnState, error: str | None = None) -> None:
        """Mark a turn ``failed``, ``stopped`` or ``superseded`` with the error shown (if any)."""
        ...

    async def unfinished_turns(self) -> list[Turn]:
        """Turns not yet delivered nor finished (pending, submitted, completed), oldest
        first, to resume after a restart."""
        ...

    async def latest_turn(self, scope_id: str) -> Turn | None:
        """The newest turn that is not superseded in the current epoch of the conversation
        bound to ``scope_id`` (None when no conversation is bound there, or it has none)."""
        ...


class DeliveryRecorder(Protocol):
    """Where a delivery records what it has posted, so a restart continues it instead of
    posting again. Implemented by the turns repository; handed to the delivery by the entry
    point."""

    async def record_status_message(self, turn_id: int, message_id: str) -> None:
        """Remember the turn's progress message, so a restart edits it, not posts another."""
        ...

    async def record_reply_parts(self, turn_id: int, message_ids: Sequence[str]) -> None:
        """Store the ids of the reply's parts posted so far (the state does not change), so
        a delivery interrupted by a crash resumes after them."""
        ...

    async def record_delivery(self, turn_id: int, message_ids: Sequence[str]) -> None:
        """Store the Discord ids of the whole reply; the turn becomes ``delivered``."""
        ...


class InteractionStore(Protocol):
    """The interactions whose turns are running, kept so that a restart can still answer
    them: each kept from its acknowledgement until its answer is out (or Discord's window
    is over), never longer."""

    async def keep_interaction(self, stored: StoredInteraction) -> None:
        """Keep ``stored`` (replacing what was kept for the same interaction; expired ones
        are dropped on the way)."""
        ...

    async def stored_interaction(self, interaction_id: str) -> StoredInteraction | None: ...

    async def drop_interaction(self, interaction_id: str) -> None:
        """Forget the interaction (nothing kept is fine)."""
        ...

    async def drop_expired_interactions(self, now: datetime) -> int:
        """Forget every interaction Discord no longer takes answers on; returns how many."""
        ...


class SettingsStore(Protocol):
    """Settings overrides per thread, channel and server."""

    async def settings_layers(
        self, *, thread_id: str | None, channel_id: str | None, guild_id: str | None
    ) -> dict[SettingsScope, GenerationSettings]:
        """The stored overrides for each given scope (absent scopes are left out), in one
        query."""
        ...

    async def update_settings(
        self, scope: SettingsScope, scope_id: str, change: SettingsChange
    ) -> GenerationSettings:
        """Apply ``change`` to the overrides at that scope; return them afterwards."""
        ...


class UsageStore(Protocol):
    """Request counters for quotas, shared by every process using the database."""

    async def try_consume(
        self, keys: Sequence[tuple[str, int, int]], *, now: datetime
    ) -> Refusal | None:
        """Atomically count one request against every ``(key, limit, window_seconds)`` over
        the sliding window ending at ``now``. When all are under their limit, record the
        request for each and return ``None``; otherwise record nothing and return a
        ``Refusal`` naming the keys that are used up and the earliest time at which the
        request would be allowed."""
        ...


class Delivery(Protocol):
    """Where one turn's progress and answer go (a Discord thread). Implemented by chat/.

    The service calls ``start`` when it begins working on the message, ``attach`` once the
    turn is stored, ``waiting`` when no in-flight slot is free for it, ``running`` once it
    holds one, then ``progress`` as fal reports, then one of ``deliver``, ``fail`` or
    ``stopped``, and ``close`` at the end, whatever happened."""

    async def start(self) -> None:
        """Raises ``DeliveryError`` when nothing can receive the answer any more (then no
        model call is made for it)."""
        ...

    def deadline(self) -> datetime | None:
        """When the answer can no longer be posted (None: never): nothing is submitted,
        nor waited for, past it."""
        ...

    async def attach(self, turn: Turn) -> None:
        """The turn is stored: progress shown from now on can offer to stop it."""
        ...

    async def waiting(self, place: Callable[[], int | None]) -> None:
        """The turn waits for an in-flight slot; ``place()`` is its place in line (1 = next;
        None once it has left). Until ``running``, at most a status saying it waits."""
        ...

    async def running(self) -> None:
        """The turn holds an in-flight slot: typing and progress may be shown from now on."""
        ...

    async def progress(self, progress: Progress) -> None: ...

    async def stopped(self, turn: Turn, by: str) -> None:
        """The turn was stopped: say so where its progress was shown."""
        ...

    async def supersede(self, old: Turn) -> None:
        """``old``'s answer is being replaced by this turn's: mark its messages."""
        ...

    async def close(self) -> None: ...

    async def deliver(self, turn: Turn, reply: ModelReply, warnings: Sequence[str]) -> list[str]:
        """Post the answer, recording the Discord message ids as they go out (the turn is
        ``delivered`` once the last is recorded); return them, in order."""
        ...

    async def fail(self, turn: Turn | None, error: Exception) -> list[str]:
        """Post a short, specific failure notice (``turn`` is None when the failure came
        before the turn was stored); return the message ids."""
        ...


class Deliveries(Protocol):
    """Opens the delivery of one turn at its destination. Implemented by chat/."""

    def open(self, destination: Destination) -> Delivery: ...


class MediaSource(Protocol):
    """Downloads an attachment's bytes from Discord's CDN. Implemented by chat/."""

    async def fetch(self, attachment: Attachment, max_bytes: int) -> bytes:
        """The file's bytes; raises ``AttachmentError`` when it cannot be had within
        ``max_bytes`` or from an allowed host."""
        ...

    def stream(self, attachment: Attachment, max_bytes: int) -> AsyncGenerator[bytes, None]:
        """The file's bytes in chunks, never held whole; raises ``AttachmentError`` as
        ``fetch`` does, and when the file turns out longer or shorter than the size Discord
        reported (a body sent on with that size as its length must not be cut short)."""
        ...
