"""The conversation service: the one orchestrator of a turn.

A turn: take the conversation's inbox (turns of one conversation run in arrival order),
prepare the attachments, store the user turn as *pending*, build the request from the
stored history, submit under the global in-flight cap and store fal's request id, wait,
store the answer, hand it to the delivery (which records the Discord message ids). Every
step is stored before the next one starts, so a restart can resume any turn from where it
stopped.

Three flows reach it, each an explicit value: :class:`Incoming` messages (a burst of one
person's messages becomes one turn), :class:`Redo` (Retry, or an edit of the latest message)
and :class:`Resume` (a turn a previous run left unfinished).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bot.domain.admission import Admission
from bot.domain.attachments import (
    AttachmentPolicy,
    MediaPreparer,
    PreparedFiles,
    PreparedMedia,
    Readers,
    left_out,
)
from bot.domain.conversation import (
    BuiltRequest,
    build_request,
    compose_prompt,
    merge_incoming,
    new_history_messages,
)
from bot.domain.costs import NO_COSTS, TurnCosts
from bot.domain.errors import (
    BudgetExceeded,
    DeliveryError,
    DuplicateMessage,
    FieldProblem,
    ModelError,
    ModelInputRejected,
    SeedBotError,
    StorageError,
    StorageUnavailable,
)
from bot.domain.inbox import Inboxes
from bot.domain.models import (
    MODEL_DEFAULT_MAX_TOKENS,
    Conversation,
    Destination,
    GenerationSettings,
    Incoming,
    ModelReply,
    NewConversation,
    NewTurn,
    Payer,
    Progress,
    RequestHandle,
    SettingsScope,
    Turn,
    TurnContext,
    TurnStart,
    TurnState,
)
from bot.domain.notices import NoticeReason, RefusalNotices, seconds_until
from bot.domain.observer import NO_OBSERVER, TurnObserver
from bot.domain.outage import Outage, waiting_as
from bot.domain.ports import Deliveries, Delivery, MediaSource, ModelClient, Store
from bot.domain.settings import EffectiveSettings, resolve_settings, validate_settings
from bot.domain.slots import Slots
from bot.domain.submission import SubmissionJournal, Submitter

log = logging.getLogger(__name__)

STOP_CANCEL_SECONDS = 5.0
TRIM_NOTICE = "older messages of this thread no longer fit the model's context and are left out"
# The API requires a prompt; an image alone still deserves an answer.
NO_TEXT_PROMPT = "(no text; see the attachments)"
EMPTY_PROMPT = "Hello!"
# The stored "stopped by" of a turn a budget refused before it reached fal.
BUDGET_REFUSAL = "budget"
# The stored error of a turn whose answer could no longer be posted when its turn came.
UNDELIVERABLE = "its answer could no longer be posted (the interaction expired first)"
# Scopes remembered as bound to a conversation (bounded: an evicted one costs one read).
BOUND_CACHE_SIZE = 4096


def utcnow() -> datetime:
    return datetime.now(UTC)


# The defaults of the service's settings, written once (config.py uses them).
DEFAULT_CONTEXT_BUDGET_TOKENS = 200_000
DEFAULT_TURN_TIMEOUT = 300.0
DEFAULT_MAX_IN_FLIGHT = 16
DEFAULT_BATCH_WINDOW = 1.5


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    defaults: GenerationSettings = field(default_factory=GenerationSettings)
    context_budget_tokens: int = DEFAULT_CONTEXT_BUDGET_TOKENS
    attachments: AttachmentPolicy = field(default_factory=AttachmentPolicy)
    turn_timeout: float = DEFAULT_TURN_TIMEOUT
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    batch_window: float = DEFAULT_BATCH_WINDOW


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
class _Redone:
    """A ``Redo`` with who pays for the new answer: the person the admission checked (a
    moderator's Retry is the moderator's, not the author's)."""

    redo: Redo
    payer_id: str


@dataclass(frozen=True, slots=True)
class Resume:
    """Carry on a turn a previous run left unfinished (pending, submitted or completed)."""

    turn: Turn


Flow = Incoming | _Redone | Resume
_MERGED_AWAY = object()  # _run_turn's outcome for an attempt a follow-up replaced


# Who "stops" a turn that a follow-up of the same person replaces (never shown to anyone).
# It is stored as the turn's error, and read back when the stop raced the answer: longer than
# any Discord name (32 characters at most), so no name can be taken for it, and printable,
# since stored text never carries a NUL (PostgreSQL refuses one).
MERGED = "(replaced by a follow-up of the same person's burst)"
# Who "stops" a turn whose Discord message was deleted (see ConversationService.withdraw).
MESSAGE_DELETED = "message deleted"
# Messages merged into one turn, remembered so deleting any of them finds the turn (bounded:
# a burst older than that is found by its last message only).
MERGED_CACHE_SIZE = 4096


@dataclass(eq=False)
class _Burst:
    """One person's messages being answered as one turn, which a follow-up may still join:
    the follow-up stops the attempt in flight and the burst starts over with every message.
    ``closed`` once the answer is stored: from then on a follow-up is the next turn."""

    author_id: str
    items: list[Incoming]
    last_arrival: float
    turn_id: int | None = None
    joined: bool = False
    closed: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # The stop of the attempt a follow-up replaces: its turn id and the stop. Follow-ups that
    # come while it is under way, or while that attempt winds down, share its outcome rather
    # than stop a turn already stopped (which would make them a turn of their own).
    replacing: tuple[int, asyncio.Task[StopResult]] | None = None
    # Its files, prepared once: starting over for a follow-up reuses them.
    files: PreparedFiles = field(default_factory=PreparedFiles)
    # One of its messages was deleted: its turn is stopped and not started over.
    withdrawn: bool = False


class TurnStopped(Exception):
    """Internal: the turn was stopped while it ran (not an error to report). ``reply``: the
    answer fal had given by the time the stop won (to the wait, or to the cancel of a
    request that had already completed): fal billed it, so the turn costs what it reports."""

    def __init__(self, by: str, reply: ModelReply | None = None) -> None:
        super().__init__(by)
        self.by = by
        self.reply = reply


class StopResult(enum.Enum):
    STOPPED = "stopped"
    ALREADY_FINISHED = "finished"
    UNKNOWN = "unknown"


@dataclass(eq=False)
class _Active:
    """A turn running in this process: how to stop it, and when it has ended."""

    source_id: str
    stopped_by: str | None = None
    waiter: asyncio.Future[ModelReply] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def check(self) -> None:
        """Raise ``TurnStopped`` if a stop was requested (read afresh after every await)."""
        if self.stopped_by is not None:
            raise TurnStopped(self.stopped_by)


def destination_of(turn: Turn) -> Destination:
    """Where a stored turn's answer goes: its channel, replying to its message (a thread
    opened on that message has the message's id, and the answer inside it replies to
    nothing, as a live turn does)."""
    replies = turn.source_id.isdigit() and turn.source_id != turn.reply_channel_id
    return Destination(turn.reply_channel_id, turn.source_id if replies else None)


def rejected_media(turn: Turn, error: ModelInputRejected) -> dict[str, set[int]] | None:
    """The attachments fal refused, by field and index, when that is all it refused and
    something is left to answer; None when the turn cannot go on without them."""
    refused: dict[str, set[int]] = {"image_urls": set(), "video_urls": set()}
    sizes = {"image_urls": len(turn.image_urls), "video_urls": len(turn.video_urls)}
    if not error.problems:
        return None
    for problem in error.problems:
        if problem.field not in refused or problem.index is None:
            return None
        if not 0 <= problem.index < sizes[problem.field]:
            return None
        refused[problem.field].add(problem.index)
    remaining = sum(sizes.values()) - sum(len(v) for v in refused.values())
    if remaining == 0 and turn.prompt == NO_TEXT_PROMPT:
        return None
    return refused


def next_attempt(
    turn: Turn,
    scope_id: str,
    refused: dict[str, set[int]] | None = None,
    problems: Sequence[FieldProblem] = (),
) -> NewTurn:
    """The next attempt of ``turn``: the same message, prompt and media, except the
    attachments ``refused`` (by field and index), which are left out with a warning naming
    each and why."""
    refused = refused or {}
    reasons = {(p.field, p.index): p.message for p in problems}
    warnings = list(turn.warnings)

    def keep(
        field_name: str, urls: tuple[str, ...], names: tuple[str, ...]
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        kept_urls, kept_names = [], []
        for index, url in enumerate(urls):
            name = names[index] if index < len(names) else f"attachment {index + 1}"
            if index in refused.get(field_name, ()):
                reason = reasons.get((field_name, index), "the model could not read it")
                warnings.append(left_out(name, reason.rstrip(".")))
            else:
                kept_urls.append(url)
                kept_names.append(name)
        return tuple(kept_urls), tuple(kept_names)

    image_urls, image_names = keep("image_urls", turn.image_urls, turn.image_names)
    video_urls, video_names = keep("video_urls", turn.video_urls, turn.video_names)
    return NewTurn(
        scope_id=scope_id,
        source_id=turn.source_id,
        author_id=turn.author_id,
        author_name=turn.author_name,
        reply_channel_id=turn.reply_channel_id,
        prompt=turn.prompt,
        image_urls=image_urls,
        video_urls=video_urls,
        warnings=tuple(warnings),
        attempt=turn.attempt + 1,
        image_names=image_names,
        video_names=video_names,
    )


def _flow_key(flow: Flow) -> str:
    """What an outage's story counts a flow as (one turn)."""
    if isinstance(flow, Resume):
        return f"turn {flow.turn.id}"
    if isinstance(flow, _Redone):
        return f"redo {flow.redo.scope_id}/{flow.redo.turn_id}"
    return f"message {flow.source_id}"


@dataclass(eq=False)
class _WaitNotice:
    """Shows "waiting for the database" on a flow's status message when one of its store
    calls starts waiting on an outage (once per outage). The store calls ``on_wait`` in the
    middle of its call, maybe under the delivery's own locks: the notice goes in a task."""

    outage: Outage
    tasks: set[asyncio.Task[None]]
    delivery: Delivery | None = None
    shown_for: int = 0

    def on_wait(self) -> None:
        if self.delivery is None or self.shown_for == self.outage.outages:
            return
        self.shown_for = self.outage.outages
        task = asyncio.create_task(self._show(self.delivery), name="database-wait-notice")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _show(delivery: Delivery) -> None:
        with contextlib.suppress(DeliveryError):
            await delivery.progress(Progress(state="database"))


class ConversationService:
    """Answers people's messages with the model, one stored step at a time."""

    def __init__(
        self,
        store: Store,
        model: ModelClient,
        media: MediaSource,
        deliveries: Deliveries,
        config: ServiceConfig,
        *,
        observer: TurnObserver = NO_OBSERVER,
        journal: SubmissionJournal | None = None,
        costs: TurnCosts = NO_COSTS,
        outage: Outage | None = None,
        refusals: RefusalNotices | None = None,
        readers: Readers = Readers(),  # noqa: B008 (frozen: one shared default is fine)
    ) -> None:
        self.observer = observer
        self.costs = costs
        # Who was told about a budget refusal (shared with the gate: told once a window).
        self.refusals = refusals if refusals is not None else RefusalNotices()
        # The database's outages as the store meets them: a turn whose store call waits on
        # one says so on its status message (see _WaitNotice).
        self._outage = outage or Outage()
        self._notices: set[asyncio.Task[None]] = set()
        self._store = store
        self._model = model
        self._submitter = Submitter(model, store, journal)
        # One preparation for all turns: its bounds on files and bytes are over all of them.
        self.media = MediaPreparer(media, model, config.attachments, readers)
        self._deliveries = deliveries
        self.config = config
        self._in_flight = Slots(config.max_in_flight)
        # No fixed wait: a message is taken up at once; a burst is merged speculatively
        # (see respond), and messages waiting behind an answer are batched by the inbox.
        self._inboxes: Inboxes[Flow] = Inboxes(self._handle)
        self._bursts: dict[str, _Burst] = {}
        self._active: dict[int, _Active] = {}
        self._critical: set[asyncio.Future[RequestHandle]] = set()
        # Scopes known to have a conversation. A conversation is never unbound, so a hit
        # needs no query: most messages in busy threads cost one database read fewer.
        self._bound: OrderedDict[str, None] = OrderedDict()
        # Each message of a merged burst -> the messages of that burst (see withdraw).
        self._merged: OrderedDict[str, tuple[str, ...]] = OrderedDict()

    @property
    def slots(self) -> Slots:
        """The in-flight cap's line (read-only use: how busy the service is)."""
        return self._in_flight

    def reconfigure(self, config: ServiceConfig) -> None:
        """Apply a reloaded config to the turns that start from now on."""
        if config.max_in_flight != self.config.max_in_flight:
            self._in_flight.resize(config.max_in_flight)
        if not self.media.bounded_as(config.attachments):
            # Files already being prepared finish under the old bounds.
            self.media = MediaPreparer(
                self.media.source, self._model, config.attachments, self.media.readers
            )
        self.config = config

    # -- the three ways in -----------------------------------------------------------------

    async def respond(
        self, incoming: Incoming, admission: Admission, *, batchable: bool = True
    ) -> None:
        """Answer one message, admitted by ``admission`` (its author pays). Messages of one
        conversation are answered in arrival order.

        A lone message is taken up at once. With ``batchable`` and a batch window, a
        person's burst is still answered as one turn: a follow-up that comes within
        ``batch_window`` seconds of their previous message, before its answer is stored,
        stops the attempt in flight (fal cancels a queued request; an answer already
        running is discarded) and the turn starts over with all the messages. Messages
        waiting behind an answer being produced become one turn too. Failures are reported
        through the delivery and stored on the turn; only cancellation (shutdown)
        propagates."""
        window = self.config.batch_window
        merging = batchable and window > 0
        if merging and await self._join_burst(incoming, window):
            return
        await self._inboxes.submit(
            incoming.scope_id, incoming, incoming.author_id if merging else None
        )

    async def _join_burst(self, incoming: Incoming, window: float) -> bool:
        """Add ``incoming`` to its author's burst in flight, if there is one it may join;
        return once the burst is answered (True), or False to queue it as the next turn."""
        burst = self._bursts.get(incoming.scope_id)
        now = asyncio.get_running_loop().time()
        if (
            burst is None
            or burst.closed
            or burst.withdrawn
            or burst.author_id != incoming.author_id
            or now - burst.last_arrival > window
        ):
            return False
        burst.items.append(incoming)
        burst.last_arrival = now
        burst.joined = True
        turn_id = burst.turn_id
        if turn_id is not None:
            log.info("message %s joins turn %s: starting over", incoming.source_id, turn_id)
            if burst.replacing is None or burst.replacing[0] != turn_id:
                burst.replacing = (turn_id, asyncio.create_task(self.stop(turn_id, MERGED)))
            if await asyncio.shield(burst.replacing[1]) is not StopResult.STOPPED:
                # Its answer was stored (or it ended) first: this one is the next turn.
                burst.items.remove(incoming)
                return False
        await burst.done.wait()
        return True

    async def redo(self, redo: Redo, admission: Admission) -> None:
        """Answer the conversation's latest turn again (see :class:`Redo`), paid by whom
        ``admission`` admitted. The old answer leaves the history and its messages are marked
        superseded."""
        redone = _Redone(redo, admission.payer.user_id)
        await self._inboxes.submit(redo.scope_id, redone, None)

    async def resume_unfinished(
        self,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        *,
        owns: Callable[[Conversation], bool] | None = None,
    ) -> int:
        """Queue every turn a previous run left unfinished: each waits for its submitted
        request by fal id, submits a pending one, or delivers a completed one. Turns of one
        conversation run in order, ahead of new messages; conversations concurrently; each in
        its own task (``spawn``), so one failing cannot take the others down. With several
        processes on one database, ``owns`` says which conversations are this process's (its
        shards'): another process's turns in flight are left to it. Returns how many turns
        were queued."""
        await self._submitter.recover()
        turns = await self._store.unfinished_turns()
        scopes: dict[int, str | None] = {}
        for turn in turns:
            if turn.conversation_id not in scopes:
                conversation = await self._store.get_conversation(turn.conversation_id)
                mine = owns is None or owns(conversation)
                scopes[turn.conversation_id] = conversation.scope_id if mine else None
        # Oldest first: tasks start in creation order and queue before their first await,
        # so each turn waits behind the previous one of its conversation.
        queued = 0
        for turn in turns:
            scope_id = scopes[turn.conversation_id]
            if scope_id is not None:
                spawn(self._inboxes.submit(scope_id, Resume(turn), None))
                queued += 1
        return queued

    async def _handle(self, batch: Sequence[Flow]) -> None:
        first = batch[0]
        notice = _WaitNotice(self._outage, self._notices)
        with waiting_as(_flow_key(first), notice.on_wait):
            if isinstance(first, Resume):
                await self._resume(first.turn, notice)
            elif isinstance(first, _Redone):
                await self._redo(first.redo, first.payer_id, notice)
            else:
                await self._new([i for i in batch if isinstance(i, Incoming)], notice)

    # -- flows -----------------------------------------------------------------------------

    async def _new(self, items: list[Incoming], notice: _WaitNotice) -> None:
        started = asyncio.get_running_loop().time()
        first = items[0]
        burst = _Burst(first.author_id, list(items), started)
        self._bursts[first.scope_id] = burst
        # The answer replies to the burst's first message: a status message may already
        # stand under it by the time a follow-up joins.
        delivery = self._deliveries.open(
            Destination(first.channel_id or first.scope_id, first.reply_to, first.interaction_id)
        )
        notice.delivery = delivery
        await delivery.start()
        try:
            superseding: int | None = None
            while True:
                taken = len(burst.items)
                burst.joined = False
                incoming = merge_incoming(burst.items[:taken])
                try:
                    # A message handled twice is refused by begin_turn (unique source id).
                    new = await self._new_turn(incoming, burst.files)
                    start = await self._store.begin_turn(
                        new,
                        conversation=NewConversation(
                            scope_id=incoming.scope_id,
                            owner_id=incoming.author_id,
                            guild_id=incoming.guild_id,
                            parent_channel_id=incoming.parent_channel_id,
                        ),
                        superseding=superseding,
                    )
                except DuplicateMessage:
                    log.info("message %s already answered; ignoring", incoming.source_id)
                    return
                except SeedBotError as exc:
                    # Failures before the turn was stored: nothing to mark, only to tell.
                    self.observer.turn_failed(exc)
                    log.warning("turn for message %s refused: %s", incoming.source_id, exc)
                    with contextlib.suppress(DeliveryError):
                        await delivery.fail(None, exc)
                    return
                self._remember_bound(incoming.scope_id)
                log.info(
                    "turn %s stored for message %s in conversation %s",
                    start.turn.id,
                    incoming.source_id,
                    start.conversation.id,
                )
                superseding = start.turn.id
                self._remember_merged(burst)
                if burst.withdrawn:
                    # A message of it was deleted while the turn was prepared.
                    await self._store.stop_turn(start.turn.id, MESSAGE_DELETED)
                    with contextlib.suppress(DeliveryError):
                        await delivery.stopped(start.turn, MESSAGE_DELETED)
                    return
                if burst.joined or len(burst.items) > taken:
                    continue  # a follow-up came while this one was prepared
                burst.turn_id = start.turn.id
                outcome = await self._answer(start, delivery, started, burst)
                burst.turn_id = None
                if outcome is not _MERGED_AWAY:
                    return
        finally:
            burst.closed = True
            if self._bursts.get(first.scope_id) is burst:
                del self._bursts[first.scope_id]
            burst.done.set()
            await delivery.close()

    async def _redo(self, redo: Redo, payer_id: str, notice: _WaitNotice) -> None:
        started = asyncio.get_running_loop().time()
        conversation = await self._store.conversation_for_scope(redo.scope_id)
        latest = await self._store.latest_turn(conversation.id) if conversation else None
        if conversation is None or latest is None:
            return
        if redo.turn_id is not None and latest.id != redo.turn_id:
            log.info("redo of turn %s skipped: turn %s is newer", redo.turn_id, latest.id)
            return
        delivery = self._deliveries.open(destination_of(latest))
        notice.delivery = delivery
        await delivery.start()
        try:
            if redo.edited is not None:
                # An edit: the turn is rebuilt from the edited message, as its next attempt.
                new = replace(
                    await self._new_turn(redo.edited),
                    scope_id=redo.scope_id,
                    source_id=latest.source_id,
                    author_id=latest.author_id,
                    author_name=latest.author_name,
                    reply_channel_id=latest.reply_channel_id,
                    attempt=latest.attempt + 1,
                )
            else:
                new = next_attempt(latest, redo.scope_id)
            start = await self._store.begin_turn(new, superseding=latest.id)
            log.info("turn %s answers turn %s again", start.turn.id, latest.id)
            with contextlib.suppress(DeliveryError):
                await delivery.supersede(latest)
        except DuplicateMessage:
            await delivery.close()
            return
        except SeedBotError as exc:
            # Before the new attempt was stored (its attachments, the database): say so.
            self.observer.turn_failed(exc)
            log.warning("answering turn %s again failed: %s", latest.id, exc)
            with contextlib.suppress(DeliveryError):
                await delivery.fail(None, exc)
            await delivery.close()
            return
        try:
            await self._answer(start, delivery, started, payer_id=payer_id)
        finally:
            await delivery.close()

    async def _resume(self, turn: Turn, notice: _WaitNotice) -> None:
        log.info("resuming turn %s (%s)", turn.id, turn.state)
        conversation = await self._store.get_conversation(turn.conversation_id)
        delivery = self._deliveries.open(destination_of(turn))
        notice.delivery = delivery
        try:
            await delivery.start()
        except DeliveryError as exc:
            if turn.state is not TurnState.COMPLETED:
                await self._undeliverable(turn, exc)
                await delivery.close()
                return
            # Answered already: the delivery may still keep what it posted before the stop.
        try:
            started = asyncio.get_running_loop().time()
            context = await self._store.turn_context(turn)
            await self._answer(TurnStart(conversation, turn, context), delivery, started)
        finally:
            await delivery.close()

    async def _undeliverable(self, turn: Turn, error: DeliveryError) -> None:
        """A resumed turn whose answer nothing can receive any more (the interaction it came
        through has expired): failed without a model call, and a request already at fal is
        cancelled, not waited for: its answer would be paid for and never seen."""
        log.warning("turn %s cannot be delivered (%s): failed without a model call", turn.id, error)
        # One fal had finished anyway is billed: the turn costs what its answer reports.
        billed = await self._cancel_quietly(turn.handle) if turn.handle is not None else None
        await self.costs.settle(turn.id, billed)
        self.observer.turn_failed(error)
        await self._finish_failed(turn, error)

    # -- steps -----------------------------------------------------------------------------

    async def is_bound(self, scope_id: str) -> bool:
        """Whether a thread or DM channel has a conversation."""
        if scope_id in self._bound:
            self._bound.move_to_end(scope_id)
            return True
        if await self._store.conversation_for_scope(scope_id) is None:
            return False
        self._remember_bound(scope_id)
        return True

    def _remember_bound(self, scope_id: str) -> None:
        self._bound[scope_id] = None
        self._bound.move_to_end(scope_id)
        while len(self._bound) > BOUND_CACHE_SIZE:
            self._bound.popitem(last=False)

    async def _new_turn(self, incoming: Incoming, reuse: PreparedFiles | None = None) -> NewTurn:
        """The turn one message (or burst) becomes: its attachments prepared once, here
        (those in ``reuse`` already were)."""
        media: PreparedMedia = await self.media.prepare(
            incoming.attachments, self.config.attachments, reuse
        )
        prompt = compose_prompt(
            incoming.text,
            quoted=incoming.reply_text,
            quoted_author=incoming.reply_author,
            inlined=media.inlined,
        )
        if not prompt.strip():
            prompt = NO_TEXT_PROMPT if media.image_urls or media.video_urls else EMPTY_PROMPT
        return NewTurn(
            scope_id=incoming.scope_id,
            source_id=incoming.source_id,
            author_id=incoming.author_id,
            author_name=incoming.author_name,
            reply_channel_id=incoming.channel_id or incoming.scope_id,
            prompt=prompt,
            image_urls=media.image_urls,
            video_urls=media.video_urls,
            warnings=media.warnings,
            image_names=media.image_names,
            video_names=media.video_names,
        )

    async def _answer(
        self,
        start: TurnStart,
        delivery: Delivery,
        started: float,
        burst: _Burst | None = None,
        *,
        payer_id: str | None = None,
    ) -> object:
        """Run a stored turn; when fal refuses some of its attachments (and only those), run
        the next attempt without them, naming each in the reply. Returns ``_MERGED_AWAY``
        when a follow-up of the burst stopped it (the caller starts over), else None."""
        while True:
            turn = start.turn
            if burst is not None:
                burst.turn_id = turn.id
            rejected = await self._run_turn(start, delivery, started, burst, payer_id=payer_id)
            if rejected is None or rejected is _MERGED_AWAY:
                return rejected
            assert isinstance(rejected, tuple)
            refused, error = rejected
            log.info("turn %s: fal refused %s; answering without them", turn.id, refused)
            try:
                start = await self._store.begin_turn(
                    next_attempt(turn, start.conversation.scope_id, refused, error.problems),
                    superseding=turn.id,
                )
            except SeedBotError as exc:
                log.warning(
                    "turn %s could not be retried without its attachments: %s", turn.id, exc
                )
                with contextlib.suppress(DeliveryError):
                    await delivery.fail(turn, error)
                await self._finish_failed(turn, error)
                return None

    async def _run_turn(
        self,
        start: TurnStart,
        delivery: Delivery,
        started: float,
        burst: _Burst | None = None,
        *,
        payer_id: str | None = None,
    ) -> tuple[dict[str, set[int]], ModelInputRejected] | object | None:
        """Submit (if not yet), wait, store and deliver one stored turn. Returns the refused
        attachments when fal refused only some of them (the caller tries again without),
        ``_MERGED_AWAY`` when a follow-up of ``burst`` stopped it."""
        conversation, turn = start.conversation, start.turn
        active = self._active.setdefault(turn.id, _Active(turn.source_id))
        self.observer.turn_started(conversation.id)
        try:
            await delivery.attach(turn)
            reply, sent_count, warnings = await self._obtain_reply(
                start, delivery, active, started, payer_id or turn.author_id
            )
            if reply is not None:
                new = new_history_messages(reply.messages, sent_count, reply.skipped)
                try:
                    cost = await self._store.complete_turn(
                        turn.id, reply, new, settlement=self.costs.settlement(reply)
                    )
                    self.costs.settled(turn.id, cost)
                    if burst is not None:
                        burst.closed = True  # stored: a follow-up is the next turn now
                except StorageUnavailable:
                    raise  # the database stayed away: nothing to ask it either
                except StorageError:
                    # complete_turn refuses a turn stopped meanwhile (maybe by another
                    # process): its answer is neither stored nor posted.
                    current = await self._store.get_turn(turn.id)
                    if current.state is TurnState.STOPPED:
                        raise TurnStopped(current.error or "", reply) from None
                    raise
            else:
                reply = ModelReply(
                    output=turn.output or "",
                    reasoning=turn.reasoning,
                    messages=(),
                    request_id=turn.handle.request_id if turn.handle else "",
                )
                # Stored before a restart: its cost may still be held.
                await self.costs.settle(turn.id, reply)
            answered = asyncio.get_running_loop().time()
            await delivery.deliver(turn, reply, warnings)
            log.info("turn %s delivered (request %s)", turn.id, reply.request_id)
            done = asyncio.get_running_loop().time()
            self.observer.turn_answered(seconds=done - started, delivery_seconds=done - answered)
            return None
        except TurnStopped as stop:
            await self.costs.settle(turn.id, stop.reply)
            if stop.by == MERGED:
                log.info("turn %s gives way to the burst it is part of", turn.id)
                return _MERGED_AWAY
            log.info("turn %s stopped", turn.id)
            self.observer.turn_stopped()
            with contextlib.suppress(DeliveryError):
                await delivery.stopped(turn, stop.by)
            return None
        except asyncio.CancelledError:
            log.info("turn %s interrupted; it stays unfinished for the next start", turn.id)
            raise
        except DeliveryError as exc:
            # Nowhere to tell the user: store the failure so no restart retries it forever
            # (and the answer nobody saw stays out of later history).
            log.warning("turn %s could not be delivered: %s", turn.id, exc)
            await self.costs.settle(turn.id, None)
            self.observer.turn_failed(exc)
            await self._finish_failed(turn, exc)
            return None
        except BudgetExceeded as exc:
            # Refused before reaching fal: not a failure of the model, and nothing to pay.
            log.info("turn %s refused by the %s %s budget", turn.id, exc.scope, exc.period)
            self.observer.turn_refused("budget")
            lasts = seconds_until(exc.resets_at, utcnow())
            if self.refusals.tell(payer_id or turn.author_id, NoticeReason.BUDGET, lasts):
                with contextlib.suppress(DeliveryError):
                    await delivery.fail(turn, exc)
            await self._store.finish_turn(turn.id, TurnState.STOPPED, BUDGET_REFUSAL)
            return None
        except ModelInputRejected as exc:
            await self.costs.settle(turn.id, exc)
            refused = rejected_media(turn, exc)
            if refused is not None:
                return refused, exc
            await self._report_failure(turn, delivery, exc)
            return None
        except SeedBotError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Raised by a store call the shutdown cut short: not the turn's failure. It
                # stays unfinished for the next start.
                log.info("turn %s interrupted (%s); it stays unfinished", turn.id, exc)
                raise asyncio.CancelledError from exc
            await self.costs.settle(turn.id, exc)
            await self._report_failure(turn, delivery, exc)
            return None
        finally:
            self._active.pop(turn.id, None)
            active.ended.set()
            self.observer.turn_ended()

    async def _report_failure(self, turn: Turn, delivery: Delivery, exc: SeedBotError) -> None:
        log.warning("turn %s failed: %s", turn.id, exc)
        self.observer.turn_failed(exc)
        # Notice first, then the state: a crash in between repeats the notice on the next
        # start rather than leaving the user with silence.
        try:
            await delivery.fail(turn, exc)
        except DeliveryError as posting:
            log.warning("failure notice for turn %s not posted: %s", turn.id, posting)
        await self._finish_failed(turn, exc)

    async def _finish_failed(self, turn: Turn, error: Exception) -> None:
        """Store the turn as failed; when the database does not take it (an outage past its
        tolerance), the turn stays unfinished and the next start resumes it."""
        try:
            await self._store.finish_turn(turn.id, TurnState.FAILED, str(error)[:500])
        except StorageError as exc:
            log.warning("turn %s stays unfinished for the next start: %s", turn.id, exc)

    async def _obtain_reply(
        self,
        start: TurnStart,
        delivery: Delivery,
        active: _Active,
        started: float,
        payer_id: str,
    ) -> tuple[ModelReply | None, int | None, tuple[str, ...]]:
        """The model's reply for a turn (None when it is already stored), how many history
        messages were sent with it (None when unknown), and the warnings to show. Its cost
        is held against ``payer_id``'s budgets."""
        conversation, turn = start.conversation, start.turn
        warnings = list(turn.warnings)
        if turn.state is TurnState.COMPLETED:
            return None, None, tuple(warnings)
        loop = asyncio.get_running_loop()
        deadline = delivery.deadline()
        # A turn shows work (typing, progress) only while it holds a slot: one waiting for
        # it says so once and spends nothing of Discord's request budget until it runs.
        async with self._in_flight.hold(delivery.waiting):
            active.check()
            await delivery.running()
            sent_count: int | None = None
            submitted_at: float | None = None
            handle = turn.handle
            if deadline is not None and utcnow() >= deadline:
                # Its answer could not be posted any more (it waited too long for a slot):
                # not submitted, or not waited for, so not paid for.
                if handle is not None:
                    await self._cancel_quietly(handle)
                raise DeliveryError(UNDELIVERABLE)
            if turn.state is TurnState.PENDING or handle is None:
                built = self._build(turn, start.context)
                trim_notified: int | None = None
                if built.dropped_turns and conversation.trim_notified_epoch != turn.epoch:
                    warnings.append(TRIM_NOTICE)
                    trim_notified = turn.epoch
                sent_count = len(built.request.messages)
                reservation = await self.costs.reserve(
                    turn.id,
                    Payer(payer_id, conversation.guild_id, conversation.scope_id),
                    input_tokens=built.input_tokens,
                    max_output_tokens=built.request.max_completion_tokens
                    or MODEL_DEFAULT_MAX_TOKENS,
                )
                submitted_at = loop.time()
                # Shielded: a shutdown arriving while the request travels to fal must not
                # lose its id, or the next start would submit it a second time.
                submitting = asyncio.ensure_future(
                    self._submitter.submit(
                        turn.id,
                        built.request,
                        trim_notified_epoch=trim_notified,
                        reservation=reservation,
                    )
                )
                self._critical.add(submitting)
                submitting.add_done_callback(self._critical.discard)
                handle = await asyncio.shield(submitting)
                try:
                    active.check()
                except TurnStopped as stop:
                    raise TurnStopped(stop.by, await self._cancel_quietly(handle)) from None
            # The deadline counts from the request reaching fal (or the turn's start when it
            # was submitted before a restart), not the time spent in the bot's own queue.
            begun = max(started, submitted_at) if submitted_at is not None else started
            remaining = self.config.turn_timeout - (loop.time() - begun)
            if deadline is not None:
                # An answer after the deadline would be paid for and never seen.
                remaining = min(remaining, (deadline - utcnow()).total_seconds())
            waiter = asyncio.ensure_future(
                self._model.wait(
                    handle,
                    on_progress=delivery.progress,
                    timeout=max(1.0, remaining),
                    sent=sent_count,
                )
            )
            active.waiter = waiter
            try:
                reply = await waiter
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not (task and task.cancelling()):
                    # Cancelled by stop(), not by a shutdown: the request goes too.
                    try:
                        active.check()
                    except TurnStopped as stop:
                        # An answer fal had finished anyway is billed: the stop pays it.
                        billed = await self._cancel_quietly(handle)
                        raise TurnStopped(stop.by, billed) from None
                raise
            finally:
                active.waiter = None
        return reply, sent_count, tuple(warnings)

    @property
    def resubmissions(self) -> int:
        """Unknown-fate resubmissions so far (each a possible double charge)."""
        return self._submitter.resubmissions

    async def settle(self, timeout: float = 15.0) -> None:
        """Let submissions under way finish storing their request ids (before the database
        closes at shutdown)."""
        pending = set(self._critical)
        if not pending:
            return
        done, _ = await asyncio.wait(pending, timeout=timeout)
        for task in done:
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.warning("a submission under way at shutdown failed: %s", exc)

    async def _cancel_quietly(self, handle: RequestHandle) -> ModelReply | None:
        """Cancel at fal; the answer of a request that had already completed, if any."""
        try:
            return await self._model.cancel(handle)
        except ModelError as exc:
            log.warning("cancelling request %s failed: %s", handle.request_id, exc)
            return None

    def _build(self, turn: Turn, context: TurnContext) -> BuiltRequest:
        return build_request(
            context.history,
            prompt=turn.prompt,
            image_urls=turn.image_urls,
            video_urls=turn.video_urls,
            settings=resolve_settings(context.layers, self.config.defaults).values,
            context_budget_tokens=self.config.context_budget_tokens,
            author_name=turn.author_name,
            speakers=context.speakers,
            omitted_turns=context.omitted_turns,
        )

    # -- controls --------------------------------------------------------------------------

    async def stop(self, turn_id: int, by: str) -> StopResult:
        """Stop a turn: it is marked stopped, its fal request cancelled, and an answer that
        arrives anyway is never stored or posted. Works on a turn running in another process
        or left over from before a restart too (through the stored state: then the request
        is cancelled here, within ``STOP_CANCEL_SECONDS``)."""
        try:
            turn = await self._store.get_turn(turn_id)
        except StorageError:
            return StopResult.UNKNOWN
        if not await self._store.stop_turn(turn_id, by):
            return StopResult.ALREADY_FINISHED
        log.info("turn %s stopped on request", turn_id)
        active = self._active.get(turn_id)
        if active is not None:
            # Running here: the turn's own task cancels its fal request, whichever step it
            # is at (its request id may be on its way to the store right now).
            active.stopped_by = by
            if active.waiter is not None:
                active.waiter.cancel()
        elif turn.handle is not None:
            # Bounded: the person pressing Stop is waiting for the answer to that.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_CANCEL_SECONDS):
                    await self._cancel_quietly(turn.handle)
        return StopResult.STOPPED

    async def withdraw(self, source_ids: Collection[str]) -> set[str]:
        """Discord messages were deleted: stop the turns they are part of that still run here
        (a burst of several messages goes as a whole, not started over without the deleted
        one) and wait for those to end. Returns the messages whose stored turns are to be
        removed: the deleted ones, and the other messages of a burst one of them was merged
        into (each of that burst's turns carries the deleted text)."""
        deleted = set(source_ids)
        sources = set(deleted)
        for source in deleted:
            sources.update(self._merged.get(source, ()))
        endings: list[asyncio.Event] = []
        bursts = [b for b in self._bursts.values() if any(i.source_id in deleted for i in b.items)]
        for burst in bursts:
            burst.withdrawn = True
            if burst.turn_id is not None:
                await self.stop(burst.turn_id, MESSAGE_DELETED)
            endings.append(burst.done)
        # Retry, an edit or a resumed turn runs outside a burst.
        for turn_id, active in list(self._active.items()):
            if active.source_id in sources:
                await self.stop(turn_id, MESSAGE_DELETED)
                endings.append(active.ended)
        for ended in endings:
            await ended.wait()
        for burst in bursts:
            sources.update(i.source_id for i in burst.items)
        if bursts or endings:
            log.info("stopped the turns of %d deleted messages", len(deleted))
        return sources

    def _remember_merged(self, burst: _Burst) -> None:
        if len(burst.items) < 2:
            return
        together = tuple(i.source_id for i in burst.items)
        for source in together:
            self._merged[source] = together
            self._merged.move_to_end(source)
        while len(self._merged) > MERGED_CACHE_SIZE:
            self._merged.popitem(last=False)

    async def latest_turn(self, scope_id: str) -> Turn | None:
        conversation = await self._store.conversation_for_scope(scope_id)
        return await self._store.latest_turn(conversation.id) if conversation else None

    async def get_turn(self, turn_id: int) -> Turn | None:
        try:
            return await self._store.get_turn(turn_id)
        except StorageError:
            return None

    async def conversation_of(self, turn: Turn) -> Conversation | None:
        try:
            return await self._store.get_conversation(turn.conversation_id)
        except StorageError:
            return None

    async def recent_conversations(self, since: datetime) -> list[tuple[Conversation, str | None]]:
        return await self._store.recent_conversations(since)

    # -- settings --------------------------------------------------------------------------

    async def effective_settings(
        self, *, thread_id: str | None, channel_id: str | None, guild_id: str | None
    ) -> EffectiveSettings:
        layers = await self._store.settings_layers(
            thread_id=thread_id, channel_id=channel_id, guild_id=guild_id
        )
        return resolve_settings(layers, self.config.defaults)

    async def update_settings(
        self,
        scope: SettingsScope,
        scope_id: str,
        changes: GenerationSettings,
        *,
        clear: Sequence[str] = (),
    ) -> GenerationSettings:
        """Validate and store overrides at one scope (raises ``InvalidSetting``)."""
        return await self._store.update_settings(
            scope, scope_id, validate_settings(changes), clear=clear
        )

    async def reset(self, scope_id: str) -> int | None:
        """Start the conversation of a thread afresh; None when the thread has none."""
        conversation = await self._store.conversation_for_scope(scope_id)
        if conversation is None:
            return None
        # A turn still running keeps the epoch it started in: its answer stays out of the
        # new one.
        return await self._store.reset(conversation.id)

    async def conversation_for_scope(self, scope_id: str) -> Conversation | None:
        return await self._store.conversation_for_scope(scope_id)
