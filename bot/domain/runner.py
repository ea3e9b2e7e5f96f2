"""The turn runner: one stored turn, from submit to delivered (DESIGN §3), with an explicit
outcome. Read top to bottom, :meth:`TurnRunner.run` and what it calls are the step list:
attach the status message, take an in-flight slot, build the request from the stored
history, reserve its worst case against the budgets, submit (shielded) and store fal's
request id, wait, store the answer and settle its cost, deliver. Stop (``Stops``) and the
"waiting for the database" notice (the flow's ``WaitNotice``, reached through the store) are
its collaborators; intake (new message, redo, resume, bursts) is the service's."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from bot.domain.attempts import next_attempt, rejected_media
from bot.domain.conversation import BuiltRequest, build_request, new_history_messages
from bot.domain.costs import NO_COSTS, TurnCosts
from bot.domain.errors import (
    BudgetExceeded,
    DeliveryError,
    ModelInputRejected,
    SeedBotError,
    StorageError,
    StorageUnavailable,
)
from bot.domain.models import (
    ModelReply,
    Payer,
    RequestHandle,
    Turn,
    TurnContext,
    TurnStart,
    TurnState,
)
from bot.domain.notices import NoticeReason, RefusalNotices, seconds_until
from bot.domain.observer import NO_OBSERVER, TurnObserver
from bot.domain.params import MODEL_DEFAULT_MAX_TOKENS
from bot.domain.ports import ConversationStore, Delivery, ModelClient, SubmittedWith, TurnStore
from bot.domain.settings import SettingsResolver
from bot.domain.slots import Slots, Withdrawn
from bot.domain.stopping import MERGED, Active, Stops, TurnStopped
from bot.domain.submission import Submitter

log = logging.getLogger(__name__)

TRIM_NOTICE = "older messages of this thread no longer fit the model's context and are left out"
# The stored "stopped by" of a turn a budget refused before it reached fal.
BUDGET_REFUSAL = "budget"
# The stored error of a turn whose answer could no longer be posted when its turn came.
UNDELIVERABLE = "its answer could no longer be posted (the interaction expired first)"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Outcome(enum.Enum):
    """How a turn ended for its caller."""

    DELIVERED = "delivered"
    STOPPED = "stopped"  # by a person, or by the deletion of its message
    REFUSED = "refused"  # a budget refused it before it reached fal
    FAILED = "failed"  # told to the person (where possible) and stored as failed
    GAVE_WAY = "gave way"  # a follow-up of its burst stopped it: the burst starts over


@dataclass(frozen=True, slots=True)
class _Refused:
    """fal refused some of the attempt's attachments, and only those: the next attempt goes
    without them."""

    media: dict[str, set[int]]
    error: ModelInputRejected


class TurnWatch(Protocol):
    """Who follows a turn's attempts (a burst that a follow-up may still join)."""

    def attempting(self, turn_id: int) -> None:
        """The attempt ``turn_id`` is about to run."""

    def stored(self) -> None:
        """Its answer is stored: from now on a follow-up is the next turn."""


@dataclass(frozen=True, slots=True)
class TurnRules:
    """What the runner reads from the service's configuration (replaced on reload)."""

    settings: SettingsResolver
    context_budget_tokens: int
    turn_timeout: float


class TurnRunner:
    def __init__(
        self,
        conversations: ConversationStore,
        turns: TurnStore,
        model: ModelClient,
        submitter: Submitter,
        stops: Stops,
        rules: TurnRules,
        slots: Slots,
        *,
        observer: TurnObserver = NO_OBSERVER,
        costs: TurnCosts = NO_COSTS,
        refusals: RefusalNotices | None = None,
    ) -> None:
        self._conversations = conversations
        self._turns = turns
        self._model = model
        self.submitter = submitter
        self._stops = stops
        self.rules = rules
        self.slots = slots
        self.observer = observer
        self.costs = costs
        # Who was told about a budget refusal (shared with the gate: told once a window).
        self.refusals = refusals if refusals is not None else RefusalNotices()
        self._critical: set[asyncio.Future[RequestHandle]] = set()

    async def run(
        self,
        start: TurnStart,
        delivery: Delivery,
        started: float,
        *,
        payer_id: str | None = None,
        watch: TurnWatch | None = None,
    ) -> Outcome:
        """Run a stored turn to its end; when fal refuses some of its attachments (and only
        those), run the next attempt without them, naming each in the reply. ``payer_id``:
        who pays (None: the turn's author)."""
        while True:
            turn = start.turn
            if watch is not None:
                watch.attempting(turn.id)
            payer = payer_id or turn.author_id
            outcome = await self._attempt(start, delivery, started, payer, watch)
            if isinstance(outcome, Outcome):
                return outcome
            log.info("turn %s: fal refused %s; answering without them", turn.id, outcome.media)
            try:
                start = await self._conversations.begin_turn(
                    next_attempt(
                        turn, start.conversation.scope_id, outcome.media, outcome.error.problems
                    )
                )
            except SeedBotError as exc:
                log.warning(
                    "turn %s could not be retried without its attachments: %s", turn.id, exc
                )
                with contextlib.suppress(DeliveryError):
                    await delivery.fail(turn, outcome.error)
                await self.finish_failed(turn, outcome.error)
                return Outcome.FAILED

    async def _attempt(
        self,
        start: TurnStart,
        delivery: Delivery,
        started: float,
        payer_id: str,
        watch: TurnWatch | None,
    ) -> Outcome | _Refused:
        """Submit (if not yet), wait, store and deliver one attempt, mapping each way it can
        end to its outcome and stored state."""
        conversation, turn = start.conversation, start.turn
        active = self._stops.running(turn)
        self.observer.turn_started(conversation.id)
        try:
            await delivery.attach(turn)
            reply, sent_count, warnings = await self._obtain_reply(
                start, delivery, active, started, payer_id
            )
            if reply is not None:
                await self._store_answer(turn, reply, sent_count, watch)
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
            return Outcome.DELIVERED
        except TurnStopped as stop:
            await self.costs.settle(turn.id, stop.reply)
            if stop.by == MERGED:
                log.info("turn %s gives way to the burst it is part of", turn.id)
                return Outcome.GAVE_WAY
            log.info("turn %s stopped", turn.id)
            self.observer.turn_stopped()
            with contextlib.suppress(DeliveryError):
                await delivery.stopped(turn, stop.by)
            return Outcome.STOPPED
        except asyncio.CancelledError:
            log.info("turn %s interrupted; it stays unfinished for the next start", turn.id)
            raise
        except DeliveryError as exc:
            # Nowhere to tell the user: store the failure so no restart retries it forever
            # (and the answer nobody saw stays out of later history).
            log.warning("turn %s could not be delivered: %s", turn.id, exc)
            await self.costs.settle(turn.id, None)
            self.observer.turn_failed(exc)
            await self.finish_failed(turn, exc)
            return Outcome.FAILED
        except BudgetExceeded as exc:
            # Refused before reaching fal: not a failure of the model, and nothing to pay.
            log.info("turn %s refused by the %s %s budget", turn.id, exc.scope, exc.period)
            self.observer.turn_refused("budget")
            lasts = seconds_until(exc.resets_at, utcnow())
            if self.refusals.tell(payer_id, NoticeReason.BUDGET, lasts):
                with contextlib.suppress(DeliveryError):
                    await delivery.fail(turn, exc)
            await self._turns.finish_turn(turn.id, TurnState.STOPPED, BUDGET_REFUSAL)
            return Outcome.REFUSED
        except ModelInputRejected as exc:
            await self.costs.settle(turn.id, exc)
            refused = rejected_media(turn, exc)
            if refused is not None:
                return _Refused(refused, exc)
            await self._report_failure(turn, delivery, exc)
            return Outcome.FAILED
        except SeedBotError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Raised by a store call the shutdown cut short: not the turn's failure. It
                # stays unfinished for the next start.
                log.info("turn %s interrupted (%s); it stays unfinished", turn.id, exc)
                raise asyncio.CancelledError from exc
            await self.costs.settle(turn.id, exc)
            await self._report_failure(turn, delivery, exc)
            return Outcome.FAILED
        finally:
            self._stops.ended(turn.id, active)
            self.observer.turn_ended()

    async def _obtain_reply(
        self,
        start: TurnStart,
        delivery: Delivery,
        active: Active,
        started: float,
        payer_id: str,
    ) -> tuple[ModelReply | None, int | None, tuple[str, ...]]:
        """The model's reply for a turn (None when it is already stored), how many history
        messages were sent with it (None when unknown), and the warnings to show. Its cost
        is held against ``payer_id``'s budgets."""
        turn = start.turn
        warnings = list(turn.warnings)
        if turn.state is TurnState.COMPLETED:
            return None, None, tuple(warnings)
        loop = asyncio.get_running_loop()
        deadline = delivery.deadline()
        # A turn shows work (typing, progress) only while it holds a slot: one waiting for
        # it says so once and spends nothing of Discord's request budget until it runs.
        try:
            async with self.slots.hold(delivery.waiting, in_line=active.in_line):
                active.check()
                await delivery.running()
                sent_count: int | None = None
                submitted_at: float | None = None
                handle = turn.handle
                if deadline is not None and utcnow() >= deadline:
                    # Its answer could not be posted any more (it waited too long for a slot):
                    # not submitted, or not waited for, so not paid for.
                    if handle is not None:
                        await self._stops.cancel_quietly(handle)
                    raise DeliveryError(UNDELIVERABLE)
                if turn.state is TurnState.PENDING or handle is None:
                    handle, sent_count, submitted_at = await self._submit(start, payer_id, warnings)
                    try:
                        active.check()
                    except TurnStopped as stop:
                        billed = await self._stops.cancel_quietly(handle)
                        raise TurnStopped(stop.by, billed) from None
                # The deadline counts from the request reaching fal (or the turn's start when it
                # was submitted before a restart), not the time spent in the bot's own queue.
                begun = max(started, submitted_at) if submitted_at is not None else started
                remaining = self.rules.turn_timeout - (loop.time() - begun)
                if deadline is not None:
                    # An answer after the deadline would be paid for and never seen.
                    remaining = min(remaining, (deadline - utcnow()).total_seconds())
                reply = await self._wait(handle, delivery, active, max(1.0, remaining), sent_count)
        except Withdrawn:
            active.check()  # a stop took it out of the line before it ran
            raise
        return reply, sent_count, tuple(warnings)

    async def _submit(
        self, start: TurnStart, payer_id: str, warnings: list[str]
    ) -> tuple[RequestHandle, int, float]:
        """Build the request from the stored history, reserve its worst case against
        ``payer_id``'s budgets and submit it; fal's handle, how many history messages it
        carries and when it was sent. A trim notice joins ``warnings`` once per epoch."""
        conversation, turn = start.conversation, start.turn
        built = self._build(turn, start.context)
        trim_notified: int | None = None
        if built.dropped_turns and conversation.trim_notified_epoch != turn.epoch:
            warnings.append(TRIM_NOTICE)
            trim_notified = turn.epoch
        reservation = await self.costs.reserve(
            turn.id,
            Payer(payer_id, conversation.guild_id, conversation.scope_id),
            input_tokens=built.input_tokens,
            max_output_tokens=built.request.max_completion_tokens or MODEL_DEFAULT_MAX_TOKENS,
        )
        submitted_at = asyncio.get_running_loop().time()
        # Shielded: a shutdown arriving while the request travels to fal must not lose its
        # id, or the next start would submit it a second time.
        submitting = asyncio.ensure_future(
            self.submitter.submit(turn.id, built.request, SubmittedWith(trim_notified, reservation))
        )
        self._critical.add(submitting)
        submitting.add_done_callback(self._critical.discard)
        handle = await asyncio.shield(submitting)
        return handle, len(built.request.messages), submitted_at

    async def _wait(
        self,
        handle: RequestHandle,
        delivery: Delivery,
        active: Active,
        timeout: float,
        sent_count: int | None,
    ) -> ModelReply:
        """fal's answer; a Stop meanwhile cancels the wait and the request."""
        waiter = asyncio.ensure_future(
            self._model.wait(
                handle, on_progress=delivery.progress, timeout=timeout, sent=sent_count
            )
        )
        active.waiter = waiter
        try:
            return await waiter
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not (task and task.cancelling()):
                # Cancelled by stop(), not by a shutdown: the request goes too.
                try:
                    active.check()
                except TurnStopped as stop:
                    # An answer fal had finished anyway is billed: the stop pays it.
                    billed = await self._stops.cancel_quietly(handle)
                    raise TurnStopped(stop.by, billed) from None
            raise
        finally:
            active.waiter = None

    async def _store_answer(
        self, turn: Turn, reply: ModelReply, sent_count: int | None, watch: TurnWatch | None
    ) -> None:
        """Store the answer and settle its cost; a turn stopped meanwhile (maybe by another
        process) raises ``TurnStopped``: its answer is neither stored nor posted."""
        new = new_history_messages(reply.messages, sent_count, reply.skipped)
        try:
            cost = await self._turns.complete_turn(
                turn.id, reply, new, settlement=self.costs.settlement(reply)
            )
        except StorageUnavailable:
            raise  # the database stayed away: nothing to ask it either
        except StorageError:
            current = await self._turns.get_turn(turn.id)
            if current.state is TurnState.STOPPED:
                raise TurnStopped(current.error or "", reply) from None
            raise
        self.costs.settled(turn.id, cost)
        if watch is not None:
            watch.stored()

    def _build(self, turn: Turn, context: TurnContext) -> BuiltRequest:
        return build_request(
            context.history,
            prompt=turn.prompt,
            image_urls=turn.image_urls,
            video_urls=turn.video_urls,
            settings=self.rules.settings(context.layers).values,
            context_budget_tokens=self.rules.context_budget_tokens,
            author_name=turn.author_name,
            speakers=context.speakers,
            omitted_turns=context.omitted_turns,
        )

    # -- endings without an answer ---------------------------------------------------------

    async def undeliverable(self, turn: Turn, error: DeliveryError) -> None:
        """A resumed turn whose answer nothing can receive any more (the interaction it came
        through has expired): failed without a model call, and a request already at fal is
        cancelled, not waited for: its answer would be paid for and never seen."""
        log.warning("turn %s cannot be delivered (%s): failed without a model call", turn.id, error)
        # One fal had finished anyway is billed: the turn costs what its answer reports.
        handle = turn.handle
        billed = await self._stops.cancel_quietly(handle) if handle is not None else None
        await self.costs.settle(turn.id, billed)
        self.observer.turn_failed(error)
        await self.finish_failed(turn, error)

    async def _report_failure(self, turn: Turn, delivery: Delivery, exc: SeedBotError) -> None:
        log.warning("turn %s failed: %s", turn.id, exc)
        self.observer.turn_failed(exc)
        # Notice first, then the state: a crash in between repeats the notice on the next
        # start rather than leaving the user with silence.
        try:
            await delivery.fail(turn, exc)
        except DeliveryError as posting:
            log.warning("failure notice for turn %s not posted: %s", turn.id, posting)
        await self.finish_failed(turn, exc)

    async def finish_failed(self, turn: Turn, error: Exception) -> None:
        """Store the turn as failed; when the database does not take it (an outage past its
        tolerance), the turn stays unfinished and the next start resumes it."""
        try:
            await self._turns.finish_turn(turn.id, TurnState.FAILED, str(error)[:500])
        except StorageError as exc:
            log.warning("turn %s stays unfinished for the next start: %s", turn.id, exc)

    # -- shutdown --------------------------------------------------------------------------

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
