"""The conversation service: the intake of turns.

A turn: take the conversation's line (bot/domain/bursts.py: turns of one conversation run
in arrival order, a burst of one person's messages is one turn), prepare the attachments,
store the user turn as *pending*; from there the turn runner (bot/domain/runner.py) takes it
to delivered. Every step is stored before the next one starts, so a restart can resume any
turn from where it stopped.

Three flows reach it, each an explicit value: :class:`Incoming` messages (a burst of one
person's messages becomes one turn), :class:`Redo` (Retry, or an edit of the latest message)
and :class:`Resume` (a turn a previous run left unfinished).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any

from bot.domain.admission import Admission
from bot.domain.attachments import AttachmentPolicy, PreparedMedia, Readers
from bot.domain.attempts import destination_of, edited_attempt, first_attempt, next_attempt
from bot.domain.bursts import Burst, Bursts, Work
from bot.domain.conversation import (
    merge_incoming,
)
from bot.domain.costs import NO_COSTS, TurnCosts
from bot.domain.errors import (
    DeliveryError,
    DuplicateMessage,
    SeedBotError,
)
from bot.domain.flows import Redo, Redone, Resume, flow_key
from bot.domain.models import (
    Conversation,
    Destination,
    GenerationSettings,
    Incoming,
    NewConversation,
    Turn,
    TurnStart,
    TurnState,
)
from bot.domain.notices import RefusalNotices
from bot.domain.observer import NO_OBSERVER, TurnObserver
from bot.domain.outage import Outage, waiting_as
from bot.domain.personas import Personas
from bot.domain.ports import (
    ConversationStore,
    Deliveries,
    Delivery,
    MediaSource,
    ModelClient,
    SettingsStore,
    TurnStore,
)
from bot.domain.preparation import MediaPreparer, PreparedFiles
from bot.domain.runner import Outcome, TurnRules, TurnRunner
from bot.domain.settings import Overrides, SettingsResolver
from bot.domain.slots import Slots
from bot.domain.stopping import MESSAGE_DELETED, StopResult, Stops
from bot.domain.submission import SubmissionJournal, Submitter
from bot.domain.wait_notice import WaitNotice

log = logging.getLogger(__name__)

# Scopes remembered as bound to a conversation (bounded: an evicted one costs one read).
BOUND_CACHE_SIZE = 4096


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
    personas: Personas = field(default_factory=dict)


def _turn_rules(config: ServiceConfig) -> TurnRules:
    settings = SettingsResolver(config.defaults, config.personas)
    return TurnRules(settings, config.context_budget_tokens, config.turn_timeout)


class ConversationService:
    """Answers people's messages with the model, one stored step at a time."""

    def __init__(
        self,
        conversations: ConversationStore,
        turns: TurnStore,
        settings: SettingsStore,
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
        self._conversations = conversations
        self._turns = turns
        self._model = model
        self.stops = Stops(turns, model)
        self.runner = TurnRunner(
            conversations,
            turns,
            model,
            Submitter(model, turns, journal),
            self.stops,
            _turn_rules(config),
            Slots(config.max_in_flight),
            observer=observer,
            costs=costs,
            refusals=refusals,
        )
        # The database's outages as the store meets them: a turn whose store call waits on
        # one says so on its status message (see WaitNotice).
        self._outage = outage or Outage()
        self._notices: set[asyncio.Task[None]] = set()
        # One preparation for all turns: its bounds on files and bytes are over all of them.
        self.media = MediaPreparer(media, model, config.attachments, readers)
        self._deliveries = deliveries
        self.config = config
        # The overrides as the settings commands read and change them.
        self.settings = Overrides(settings, self.runner.rules.settings)
        # No fixed wait: a message is taken up at once; a burst is merged speculatively
        # (see respond), and messages waiting behind an answer go in together.
        self._bursts = Bursts(self._handle, self.stops.stop)
        # Scopes known to have a conversation. A conversation is never unbound, so a hit
        # needs no query: most messages in busy threads cost one database read fewer.
        self._bound: OrderedDict[str, None] = OrderedDict()

    @property
    def slots(self) -> Slots:
        """The in-flight cap's line (read-only use: how busy the service is)."""
        return self.runner.slots

    def reconfigure(self, config: ServiceConfig) -> None:
        """Apply a reloaded config to the turns that start from now on."""
        if config.max_in_flight != self.config.max_in_flight:
            self.runner.slots.resize(config.max_in_flight)
        if not self.media.bounded_as(config.attachments):
            # Files already being prepared finish under the old bounds.
            self.media = MediaPreparer(
                self.media.source, self._model, config.attachments, self.media.readers
            )
        self.runner.rules = _turn_rules(config)
        self.settings.resolve = self.runner.rules.settings
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
        waiting behind an answer being produced become one turn too (both:
        :class:`~bot.domain.bursts.Bursts`). Failures are reported through the delivery and
        stored on the turn; only cancellation (shutdown) propagates."""
        await self._bursts.take(incoming, self.config.batch_window if batchable else 0.0)

    async def redo(self, redo: Redo, admission: Admission) -> None:
        """Answer the conversation's latest turn again (see :class:`Redo`), paid by whom
        ``admission`` admitted. The old answer leaves the history and its messages are marked
        superseded."""
        redone = Redone(redo, admission.payer.user_id)
        await self._bursts.queue(redo.scope_id, redone)

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
        await self.runner.submitter.recover()
        turns = await self._turns.unfinished_turns()
        scopes: dict[int, str | None] = {}
        for turn in turns:
            if turn.conversation_id not in scopes:
                conversation = await self._conversations.get_conversation(turn.conversation_id)
                mine = owns is None or owns(conversation)
                scopes[turn.conversation_id] = conversation.scope_id if mine else None
        # Oldest first: tasks start in creation order and queue before their first await,
        # so each turn waits behind the previous one of its conversation.
        queued = 0
        for turn in turns:
            scope_id = scopes[turn.conversation_id]
            if scope_id is not None:
                spawn(self._bursts.queue(scope_id, Resume(turn)))
                queued += 1
        return queued

    async def _handle(self, work: Work) -> None:
        notice = WaitNotice(self._outage, self._notices)
        with waiting_as(flow_key(work.first if isinstance(work, Burst) else work), notice.on_wait):
            if isinstance(work, Resume):
                await self._resume(work.turn, notice)
            elif isinstance(work, Redone):
                await self._redo(work.redo, work.payer_id, notice)
            else:
                await self._new(work, notice)

    # -- flows -----------------------------------------------------------------------------

    async def _new(self, burst: Burst, notice: WaitNotice) -> None:
        started = asyncio.get_running_loop().time()
        first = burst.first
        # The answer replies to the burst's first message: a status message may already
        # stand under it by the time a follow-up joins.
        delivery = self._deliveries.open(
            Destination(first.channel_id or first.scope_id, first.reply_to, first.interaction_id)
        )
        notice.delivery = delivery
        await delivery.start()
        try:
            supersedes: int | None = None
            while True:
                taken = len(burst.items)
                burst.joined = False
                incoming = merge_incoming(burst.items[:taken])
                try:
                    # A message handled twice is refused by begin_turn (unique source id).
                    media = await self._prepared(incoming, burst.files)
                    new = first_attempt(incoming, media, supersedes)
                    start = await self._conversations.begin_turn(
                        new,
                        conversation=NewConversation(
                            scope_id=incoming.scope_id,
                            owner_id=incoming.author_id,
                            guild_id=incoming.guild_id,
                            parent_channel_id=incoming.parent_channel_id,
                        ),
                    )
                except DuplicateMessage:
                    log.info("message %s already answered; ignoring", incoming.source_id)
                    return
                except SeedBotError as exc:
                    await self._unstored(
                        delivery, exc, "turn for message %s refused: %s", incoming.source_id
                    )
                    return
                self._remember_bound(incoming.scope_id)
                log.info(
                    "turn %s stored for message %s in conversation %s",
                    start.turn.id,
                    incoming.source_id,
                    start.conversation.id,
                )
                supersedes = start.turn.id
                self._bursts.remember_merged(burst)
                if burst.withdrawn:
                    # A message of it was deleted while the turn was prepared.
                    await self._turns.stop_turn(start.turn.id, MESSAGE_DELETED)
                    with contextlib.suppress(DeliveryError):
                        await delivery.stopped(start.turn, MESSAGE_DELETED)
                    return
                if burst.joined or len(burst.items) > taken:
                    continue  # a follow-up came while this one was prepared
                outcome = await self.runner.run(start, delivery, started, watch=burst)
                # The attempt that gave way: a try without attachments fal refused is a later
                # attempt than the one stored here (the runner names each to the burst).
                supersedes, burst.turn_id = burst.turn_id, None
                if outcome is not Outcome.GAVE_WAY:
                    return
        finally:
            self._bursts.end(burst)  # before the delivery closes: a follow-up is the next turn
            await delivery.close()

    async def _redo(self, redo: Redo, payer_id: str, notice: WaitNotice) -> None:
        started = asyncio.get_running_loop().time()
        latest = await self._turns.latest_turn(redo.scope_id)
        if latest is None:
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
                media = await self._prepared(redo.edited)
                new = edited_attempt(latest, redo.scope_id, redo.edited, media)
            else:
                new = next_attempt(latest, redo.scope_id)
            start = await self._conversations.begin_turn(new)
            log.info("turn %s answers turn %s again", start.turn.id, latest.id)
            with contextlib.suppress(DeliveryError):
                await delivery.supersede(latest)
        except DuplicateMessage:
            await delivery.close()
            return
        except SeedBotError as exc:
            await self._unstored(delivery, exc, "answering turn %s again failed: %s", latest.id)
            await delivery.close()
            return
        try:
            await self.runner.run(start, delivery, started, payer_id=payer_id)
        finally:
            await delivery.close()

    async def _resume(self, turn: Turn, notice: WaitNotice) -> None:
        log.info("resuming turn %s (%s)", turn.id, turn.state)
        conversation = await self._conversations.get_conversation(turn.conversation_id)
        delivery = self._deliveries.open(destination_of(turn))
        notice.delivery = delivery
        try:
            await delivery.start()
        except DeliveryError as exc:
            if turn.state is not TurnState.COMPLETED:
                await self.runner.undeliverable(turn, exc)
                await delivery.close()
                return
            # Answered already: the delivery may still keep what it posted before the stop.
        try:
            started = asyncio.get_running_loop().time()
            context = await self._conversations.turn_context(turn)
            await self.runner.run(TurnStart(conversation, turn, context), delivery, started)
        finally:
            await delivery.close()

    # -- steps -----------------------------------------------------------------------------

    async def is_bound(self, scope_id: str) -> bool:
        """Whether a thread or DM channel has a conversation."""
        if scope_id in self._bound:
            self._bound.move_to_end(scope_id)
            return True
        if await self._conversations.conversation_for_scope(scope_id) is None:
            return False
        self._remember_bound(scope_id)
        return True

    def _remember_bound(self, scope_id: str) -> None:
        self._bound[scope_id] = None
        self._bound.move_to_end(scope_id)
        while len(self._bound) > BOUND_CACHE_SIZE:
            self._bound.popitem(last=False)

    async def _prepared(
        self, incoming: Incoming, reuse: PreparedFiles | None = None
    ) -> PreparedMedia:
        """A message's attachments, prepared once, here (those in ``reuse`` already were)."""
        return await self.media.prepare(incoming.attachments, self.config.attachments, reuse)

    async def _unstored(
        self, delivery: Delivery, exc: SeedBotError, logged: str, about: object
    ) -> None:
        """A turn failed before it was stored (its attachments, the database): nothing to
        mark, only to tell (and log ``logged`` with ``about`` and the error)."""
        self.runner.observer.turn_failed(exc)
        log.warning(logged, about, exc)
        with contextlib.suppress(DeliveryError):
            await delivery.fail(None, exc)

    @property
    def resubmissions(self) -> int:
        """Unknown-fate resubmissions so far (each a possible double charge)."""
        return self.runner.submitter.resubmissions

    async def settle(self, timeout: float = 15.0) -> None:
        """Let submissions under way finish storing their request ids (before the database
        closes at shutdown)."""
        await self.runner.settle(timeout)

    # -- controls --------------------------------------------------------------------------

    async def stop(self, turn_id: int, by: str) -> StopResult:
        """Stop a turn, wherever it runs (see :meth:`Stops.stop`)."""
        return await self.stops.stop(turn_id, by)

    async def withdraw(self, source_ids: Collection[str]) -> set[str]:
        """Discord messages were deleted: stop the turns they are part of that still run here
        (a burst of several messages goes as a whole, not started over without the deleted
        one) and wait for those to end. Returns the messages whose stored turns are to be
        removed: the deleted ones, and the other messages of a burst one of them was merged
        into (each of that burst's turns carries the deleted text)."""
        deleted = set(source_ids)
        sources = set(deleted)
        for source in deleted:
            sources.update(self._bursts.merged_with(source))
        endings: list[asyncio.Event] = []
        bursts = self._bursts.containing(deleted)
        for burst in bursts:
            burst.withdrawn = True
            if burst.turn_id is not None:
                await self.stop(burst.turn_id, MESSAGE_DELETED)
            endings.append(burst.done)
        # Retry, an edit or a resumed turn runs outside a burst.
        for turn_id, active in self.stops.running_from(sources):
            await self.stop(turn_id, MESSAGE_DELETED)
            endings.append(active.ended)
        for ended in endings:
            await ended.wait()
        for burst in bursts:
            sources.update(i.source_id for i in burst.items)
        if bursts or endings:
            log.info("stopped the turns of %d deleted messages", len(deleted))
        return sources
