"""The conversation service: the one orchestrator of a turn.

A turn: take the conversation's lock (turns of one conversation run in arrival order), load
its history, fetch and store the attachments, build the request, store the user turn as
*pending*, submit under the global in-flight cap and store fal's request id, wait, store the
answer, hand it to the delivery, store the Discord message ids. Every step is stored before
the next one starts, so a restart can resume any turn from where it stopped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

from bot.domain.conversation import (
    AttachmentLimits,
    BuiltRequest,
    InlinedText,
    build_request,
    compose_prompt,
    merge_incoming,
    new_history_messages,
    plan_attachments,
)
from bot.domain.errors import (
    AttachmentError,
    DeliveryError,
    DuplicateMessage,
    ModelError,
    QuotaExceeded,
    SeedBotError,
    StorageError,
)
from bot.domain.inbox import Inboxes
from bot.domain.models import (
    Attachment,
    Conversation,
    GenerationSettings,
    Incoming,
    ModelReply,
    ModelRequest,
    NewConversation,
    NewTurn,
    RequestHandle,
    SettingsScope,
    Turn,
    TurnContext,
    TurnState,
)
from bot.domain.ports import Delivery, DeliveryFactory, MediaSource, ModelClient, Store
from bot.domain.settings import EffectiveSettings, resolve_settings, validate_settings

log = logging.getLogger(__name__)

AttachmentMode = Literal["fal_storage", "discord_url", "data_uri"]
STOP_CANCEL_SECONDS = 5.0
TRIM_NOTICE = "older messages of this thread no longer fit the model's context and are left out"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Quota:
    requests: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    defaults: GenerationSettings = field(default_factory=GenerationSettings)
    context_budget_tokens: int = 200_000
    attachment_limits: AttachmentLimits = field(default_factory=AttachmentLimits)
    attachment_mode: AttachmentMode = "fal_storage"
    max_data_uri_bytes: int = 256 * 1024
    turn_timeout: float = 300.0
    max_in_flight: int = 16
    user_quota: Quota | None = None
    guild_quota: Quota | None = None
    batch_window: float = 1.5


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a message becomes before it is stored as a turn (the fields of ``NewTurn``)."""

    prompt: str
    image_urls: tuple[str, ...]
    video_urls: tuple[str, ...]
    warnings: tuple[str, ...]
    image_names: tuple[str, ...]
    video_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """What became of one message: the turn (None if it never got one) and its end state."""

    turn: Turn | None
    state: TurnState | Literal["duplicate", "refused", "nothing"]


def _fixed_delivery(delivery: Delivery, _incoming: Incoming) -> Delivery:
    return delivery


class TurnStopped(Exception):
    """Internal: the turn was stopped while it ran (not an error to report)."""

    def __init__(self, by: str) -> None:
        super().__init__(by)
        self.by = by


class StopResult(enum.Enum):
    STOPPED = "stopped"
    ALREADY_FINISHED = "finished"
    UNKNOWN = "unknown"


@dataclass(eq=False)
class _Active:
    """A turn running in this process: how to stop it."""

    stopped_by: str | None = None
    waiter: asyncio.Future[ModelReply] | None = None

    def check(self) -> None:
        """Raise ``TurnStopped`` if a stop was requested (read afresh after every await)."""
        if self.stopped_by is not None:
            raise TurnStopped(self.stopped_by)


@dataclass(frozen=True, slots=True)
class _Work:
    """One inbox entry: a new message, or a request to answer the latest turn again (Retry,
    or an edit of its message when ``incoming`` is given)."""

    make_delivery: DeliveryFactory
    incoming: Incoming
    redo_turn_id: int | None = None
    redo: bool = False
    edited: bool = False
    resume_turn: Turn | None = None


class ConversationService:
    """Answers people's messages with the model, one stored step at a time."""

    def __init__(
        self,
        store: Store,
        model: ModelClient,
        media: MediaSource,
        config: ServiceConfig,
        *,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._model = model
        self._media = media
        self.config = config
        self._now = now
        self._in_flight = asyncio.Semaphore(config.max_in_flight)
        self._inboxes: Inboxes[_Work, TurnOutcome] = Inboxes(
            self._handle_batch, window=config.batch_window
        )
        self._active: dict[int, _Active] = {}
        self._critical: set[asyncio.Future[RequestHandle]] = set()
        # Scopes known to have a conversation. A conversation is never unbound, so a hit
        # needs no query: most messages in busy threads cost one database read fewer.
        self._bound: set[str] = set()

    def reconfigure(self, config: ServiceConfig) -> None:
        """Apply a reloaded config to the turns that start from now on."""
        if config.max_in_flight != self.config.max_in_flight:
            self._in_flight = asyncio.Semaphore(config.max_in_flight)
        self._inboxes.window = config.batch_window
        self.config = config

    # -- admission -------------------------------------------------------------------------

    async def admit(self, author_id: str, guild_id: str | None) -> None:
        """Count one request against the user's and the server's quotas; raise
        ``QuotaExceeded`` (with when to try again) and count nothing when one is used up."""
        quotas = [("user", f"user:{author_id}", self.config.user_quota)]
        if guild_id is not None:
            quotas.append(("server", f"guild:{guild_id}", self.config.guild_quota))
        active = [(scope, key, q) for scope, key, q in quotas if q is not None and q.requests > 0]
        if not active:
            return
        # One atomic check of both quotas: a refusal by either counts against neither. The
        # window is part of the key, since a key keeps one window (a reload may change it).
        keys = [(f"{key}:{q.window_seconds}", q.requests, q.window_seconds) for _, key, q in active]
        refusal = await self._store.try_consume(keys, now=self._now())
        if refusal is not None:
            # Name the quota that is used up (the server's when both are).
            scope = "user"
            for (name, _, _), (key, _, _) in zip(active, keys, strict=True):
                if name == "server" and key in refusal.keys:
                    scope = "server"
            raise QuotaExceeded(scope, refusal.retry_at)

    # -- turns -----------------------------------------------------------------------------

    async def respond(
        self, incoming: Incoming, make_delivery: DeliveryFactory, *, batchable: bool = True
    ) -> TurnOutcome:
        """Answer one message. Messages of one conversation are answered in arrival order;
        with ``batchable``, a person's messages sent in quick succession (or waiting while
        an answer is produced) are answered as one turn. Failures are reported through the
        delivery and stored on the turn; only cancellation (shutdown) propagates."""
        key = incoming.author_id if batchable else None
        return await self._inboxes.submit(incoming.scope_id, _Work(make_delivery, incoming), key)

    async def redo(
        self,
        scope_id: str,
        make_delivery: DeliveryFactory,
        requester: Incoming,
        *,
        turn_id: int | None = None,
        edited: bool = False,
    ) -> TurnOutcome:
        """Answer the conversation's latest turn again (Retry; with ``edited``, from the
        text and attachments of ``requester``, the edited message). ``turn_id`` names the
        turn the person meant: when it is no longer the latest, nothing happens. The old
        answer leaves the history and its messages are marked superseded."""
        work = _Work(make_delivery, requester, redo_turn_id=turn_id, redo=True, edited=edited)
        return await self._inboxes.submit(scope_id, work, None)

    async def _handle_batch(self, batch: Sequence[_Work]) -> TurnOutcome:
        first = batch[0]
        if first.resume_turn is not None:
            return await self._resume(first)
        if first.redo:
            return await self._redo(first)
        incoming = merge_incoming([w.incoming for w in batch])
        delivery = batch[-1].make_delivery(incoming)
        await delivery.start()
        try:
            return await self._respond_now(incoming, delivery)
        finally:
            await delivery.close()

    async def _respond_now(self, incoming: Incoming, delivery: Delivery) -> TurnOutcome:
        started = asyncio.get_running_loop().time()
        try:
            # A message handled twice is refused by begin_turn (unique source id).
            prepared = await self._prepare(incoming)
            start = await self._store.begin_turn(
                NewTurn(
                    scope_id=incoming.scope_id,
                    source_id=incoming.source_id,
                    author_id=incoming.author_id,
                    author_name=incoming.author_name,
                    reply_channel_id=incoming.scope_id,
                    **asdict(prepared),
                ),
                conversation=NewConversation(
                    scope_id=incoming.scope_id,
                    owner_id=incoming.author_id,
                    guild_id=incoming.guild_id,
                    parent_channel_id=incoming.parent_channel_id,
                ),
            )
            self._bound.add(incoming.scope_id)
            conversation, turn = start.conversation, start.turn
        except DuplicateMessage:
            log.info("message %s already answered; ignoring", incoming.source_id)
            return TurnOutcome(None, "duplicate")
        except SeedBotError as exc:
            # Failures before the turn was stored: nothing to mark, only to tell.
            log.warning("turn for message %s refused: %s", incoming.source_id, exc)
            with contextlib.suppress(DeliveryError):
                await delivery.fail(None, exc)
            return TurnOutcome(None, "refused")
        log.info(
            "turn %s stored for message %s in conversation %s",
            turn.id,
            incoming.source_id,
            conversation.id,
        )
        return await self._run_turn(conversation, turn, delivery, started, start.context)

    async def _redo(self, work: _Work) -> TurnOutcome:
        started = asyncio.get_running_loop().time()
        scope_id = work.incoming.scope_id
        conversation = await self._store.conversation_for_scope(scope_id)
        latest = await self._store.latest_turn(conversation.id) if conversation else None
        if conversation is None or latest is None:
            return TurnOutcome(None, "nothing")
        if work.redo_turn_id is not None and latest.id != work.redo_turn_id:
            log.info("redo of turn %s skipped: turn %s is newer", work.redo_turn_id, latest.id)
            return TurnOutcome(latest, "nothing")
        incoming = work.incoming
        delivery = work.make_delivery(incoming)
        await delivery.start()
        try:
            if work.edited:
                # An edit: the turn is rebuilt from the edited message.
                prepared = await self._prepare(incoming)
            else:
                prepared = Prepared(
                    latest.prompt,
                    latest.image_urls,
                    latest.video_urls,
                    latest.warnings,
                    latest.image_names,
                    latest.video_names,
                )
            start = await self._store.begin_turn(
                NewTurn(
                    scope_id=scope_id,
                    source_id=latest.source_id,
                    author_id=latest.author_id,
                    author_name=latest.author_name,
                    reply_channel_id=latest.reply_channel_id,
                    attempt=latest.attempt + 1,
                    **asdict(prepared),
                ),
                superseding=latest.id,
            )
            conversation, turn = start.conversation, start.turn
            log.info("turn %s answers turn %s again", turn.id, latest.id)
            with contextlib.suppress(DeliveryError):
                await delivery.supersede(latest)
            return await self._run_turn(conversation, turn, delivery, started, start.context)
        except DuplicateMessage:
            return TurnOutcome(None, "duplicate")
        except SeedBotError as exc:
            # Before the new attempt was stored (its attachments, the database): say so.
            log.warning("answering turn %s again failed: %s", latest.id, exc)
            with contextlib.suppress(DeliveryError):
                await delivery.fail(None, exc)
            return TurnOutcome(None, "refused")
        finally:
            await delivery.close()

    async def is_bound(self, scope_id: str) -> bool:
        """Whether a thread or DM channel has a conversation."""
        if scope_id in self._bound:
            return True
        if await self._store.conversation_for_scope(scope_id) is None:
            return False
        self._bound.add(scope_id)
        return True

    async def _prepare(self, incoming: Incoming) -> Prepared:
        """The prompt, the media URLs and the warnings for one incoming message."""
        plan = plan_attachments(incoming.attachments, self.config.attachment_limits)
        warnings = list(plan.dropped)
        limits = self.config.attachment_limits
        image_jobs = [self._media_url(a, limits.max_image_bytes, image=True) for a in plan.images]
        video_jobs = [self._media_url(a, limits.max_video_bytes, image=False) for a in plan.videos]
        text_jobs = [self._media.fetch(a, limits.max_text_bytes) for a in plan.texts]
        results = await asyncio.gather(*image_jobs, *video_jobs, *text_jobs, return_exceptions=True)
        image_urls: list[str] = []
        video_urls: list[str] = []
        image_names: list[str] = []
        video_names: list[str] = []
        inlined: list[InlinedText] = []
        ordered: list[tuple[Attachment, str]] = (
            [(a, "image") for a in plan.images]
            + [(a, "video") for a in plan.videos]
            + [(a, "text") for a in plan.texts]
        )
        for (att, kind), result in zip(ordered, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, AttachmentError | ModelError):
                    raise result
                log.warning("attachment %s left out: %s", att.id, result)
                reason = result.reason if isinstance(result, AttachmentError) else result.message
                warnings.append(f"`{att.filename[:60]}` could not be used: {reason}")
            elif kind == "text":
                assert isinstance(result, bytes)
                try:
                    inlined.append(InlinedText(att.filename, result.decode("utf-8")))
                except UnicodeDecodeError:
                    warnings.append(f"`{att.filename[:60]}` is not UTF-8 text")
            else:
                assert isinstance(result, str)
                (image_urls if kind == "image" else video_urls).append(result)
                (image_names if kind == "image" else video_names).append(att.filename)
        # Unlabelled: who wrote it is added when the request is built (see _build).
        prompt = compose_prompt(
            incoming.text,
            quoted=incoming.reply_text,
            quoted_author=incoming.reply_author,
            inlined=inlined,
        )
        if not prompt.strip():
            # The API requires a prompt; an image alone still deserves an answer.
            prompt = "(no text; see the attachments)" if image_urls or video_urls else "Hello!"
        return Prepared(
            prompt,
            tuple(image_urls),
            tuple(video_urls),
            tuple(warnings),
            tuple(image_names),
            tuple(video_names),
        )

    async def _media_url(self, att: Attachment, max_bytes: int, *, image: bool) -> str:
        mode = self.config.attachment_mode
        if mode == "discord_url":
            return att.url
        data = await self._media.fetch(att, max_bytes)
        content_type = (att.content_type or "application/octet-stream").split(";")[0].strip()
        if mode == "data_uri" and image and len(data) <= self.config.max_data_uri_bytes:
            return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
        return await self._model.upload(data, content_type=content_type, file_name=att.filename)

    async def _run_turn(
        self,
        conversation: Conversation,
        turn: Turn,
        delivery: Delivery,
        started: float,
        context: TurnContext | None = None,
    ) -> TurnOutcome:
        """Submit (if not yet), wait, store and deliver one stored turn (``context``: what
        its request is built from, when begin_turn just read it)."""
        active = self._active.setdefault(turn.id, _Active())
        try:
            await delivery.attach(turn)
            reply, sent_count, warnings = await self._obtain_reply(
                conversation, turn, delivery, active, started, context
            )
            if reply is not None:
                new = new_history_messages(reply.messages, sent_count)
                try:
                    await self._store.complete_turn(turn.id, reply, new)
                except StorageError:
                    # complete_turn refuses a turn stopped meanwhile (maybe by another
                    # process): its answer is neither stored nor posted.
                    current = await self._store.get_turn(turn.id)
                    if current.state is TurnState.STOPPED:
                        raise TurnStopped(current.error or "") from None
                    raise
            else:
                reply = ModelReply(
                    output=turn.output or "",
                    reasoning=turn.reasoning,
                    messages=(),
                    request_id=turn.handle.request_id if turn.handle else "",
                )
            ids = await delivery.deliver(turn, reply, warnings)
            try:
                await self._store.record_delivery(turn.id, ids)
            except StorageError as exc:
                # The answer is out: do not turn it into a failure notice. The turn stays
                # completed; a restart re-delivers it idempotently (stored parts, nonces).
                log.warning("turn %s delivered but not recorded: %s", turn.id, exc)
            log.info("turn %s delivered (request %s)", turn.id, reply.request_id)
            return TurnOutcome(turn, TurnState.DELIVERED)
        except TurnStopped as stop:
            log.info("turn %s stopped", turn.id)
            with contextlib.suppress(DeliveryError):
                await delivery.stopped(turn, stop.by)
            return TurnOutcome(turn, TurnState.STOPPED)
        except asyncio.CancelledError:
            log.info("turn %s interrupted; it stays unfinished for the next start", turn.id)
            raise
        except DeliveryError as exc:
            # Nowhere to tell the user: store the failure so no restart retries it forever.
            log.warning("turn %s could not be delivered: %s", turn.id, exc)
            await self._store.finish_turn(turn.id, TurnState.FAILED, str(exc)[:500])
            return TurnOutcome(turn, TurnState.FAILED)
        except SeedBotError as exc:
            log.warning("turn %s failed: %s", turn.id, exc)
            # Notice first, then the state: a crash in between repeats the notice on the
            # next start rather than leaving the user with silence.
            try:
                await delivery.fail(turn, exc)
            except DeliveryError as posting:
                log.warning("failure notice for turn %s not posted: %s", turn.id, posting)
            await self._store.finish_turn(turn.id, TurnState.FAILED, str(exc)[:500])
            return TurnOutcome(turn, TurnState.FAILED)
        finally:
            self._active.pop(turn.id, None)

    async def _obtain_reply(
        self,
        conversation: Conversation,
        turn: Turn,
        delivery: Delivery,
        active: _Active,
        started: float,
        context: TurnContext | None,
    ) -> tuple[ModelReply | None, int | None, tuple[str, ...]]:
        """The model's reply for a turn (None when it is already stored), how many history
        messages were sent with it (None when unknown), and the warnings to show."""
        warnings = list(turn.warnings)
        if turn.state is TurnState.COMPLETED:
            return None, None, tuple(warnings)
        loop = asyncio.get_running_loop()
        async with self._in_flight:
            active.check()
            sent_count: int | None = None
            submitted_at: float | None = None
            handle = turn.handle
            if turn.state is TurnState.PENDING or handle is None:
                if context is None:
                    context = await self._store.turn_context(turn)
                built = self._build(turn, context)
                trim_notified: int | None = None
                if built.dropped_turns and conversation.trim_notified_epoch != conversation.epoch:
                    warnings.append(TRIM_NOTICE)
                    trim_notified = conversation.epoch
                sent_count = len(built.request.messages)
                submitted_at = loop.time()
                # Shielded: a shutdown arriving while the request travels to fal must not
                # lose its id, or the next start would submit it a second time.
                submitting = asyncio.ensure_future(
                    self._submit_and_record(turn.id, built.request, trim_notified)
                )
                self._critical.add(submitting)
                submitting.add_done_callback(self._critical.discard)
                handle = await asyncio.shield(submitting)
                try:
                    active.check()
                except TurnStopped:
                    await self._cancel_quietly(handle)
                    raise
            # The deadline counts from the request reaching fal (or the turn's start when it
            # was submitted before a restart), not the time spent in the bot's own queue.
            begun = max(started, submitted_at) if submitted_at is not None else started
            remaining = self.config.turn_timeout - (loop.time() - begun)
            waiter = asyncio.ensure_future(
                self._model.wait(handle, on_progress=delivery.progress, timeout=max(1.0, remaining))
            )
            active.waiter = waiter
            try:
                reply = await waiter
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not (task and task.cancelling()):
                    active.check()  # cancelled by stop(), not by a shutdown
                raise
            finally:
                active.waiter = None
        return reply, sent_count, tuple(warnings)

    async def _submit_and_record(
        self, turn_id: int, request: ModelRequest, trim_notified_epoch: int | None
    ) -> RequestHandle:
        handle = await self._model.submit(request)
        await self._store.record_submission(
            turn_id, handle, trim_notified_epoch=trim_notified_epoch
        )
        log.info("turn %s submitted as request %s", turn_id, handle.request_id)
        return handle

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

    async def _cancel_quietly(self, handle: RequestHandle) -> None:
        try:
            await self._model.cancel(handle)
        except ModelError as exc:
            log.warning("cancelling request %s failed: %s", handle.request_id, exc)

    def _build(self, turn: Turn, context: TurnContext) -> BuiltRequest:
        # Once several people talk in the conversation, each prompt names its author, so
        # the model can tell who said what.
        several = any(s.author_id != turn.author_id for s in context.speakers)
        prompt = (
            compose_prompt(turn.prompt, author_name=turn.author_name) if several else turn.prompt
        )
        return build_request(
            context.history,
            prompt=prompt,
            image_urls=turn.image_urls,
            video_urls=turn.video_urls,
            settings=resolve_settings(context.layers, self.config.defaults).values,
            context_budget_tokens=self.config.context_budget_tokens,
        )

    # -- controls --------------------------------------------------------------------------

    async def stop(self, turn_id: int, by: str) -> StopResult:
        """Stop a turn: it is marked stopped, its fal request cancelled, and an answer that
        arrives anyway is never stored or posted. Works on a turn running in another process
        or left over from before a restart too (through the stored state)."""
        try:
            turn = await self._store.get_turn(turn_id)
        except StorageError:
            return StopResult.UNKNOWN
        if not await self._store.stop_turn(turn_id, by):
            return StopResult.ALREADY_FINISHED
        log.info("turn %s stopped on request", turn_id)
        active = self._active.get(turn_id)
        if active is not None:
            active.stopped_by = by
            if active.waiter is not None:
                active.waiter.cancel()
        if turn.handle is not None:
            # Bounded: the person pressing Stop is waiting for the answer to that.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_CANCEL_SECONDS):
                    await self._cancel_quietly(turn.handle)
        return StopResult.STOPPED

    async def latest_turn(self, scope_id: str) -> Turn | None:
        conversation = await self._store.conversation_for_scope(scope_id)
        return await self._store.latest_turn(conversation.id) if conversation else None

    async def get_turn(self, turn_id: int) -> Turn | None:
        try:
            return await self._store.get_turn(turn_id)
        except StorageError:
            return None

    async def recent_conversations(self, since: datetime) -> list[tuple[Conversation, str | None]]:
        return await self._store.recent_conversations(since)

    async def record_status_message(self, turn_id: int, message_id: str) -> None:
        await self._store.record_status_message(turn_id, message_id)

    async def record_reply_parts(self, turn_id: int, message_ids: Sequence[str]) -> None:
        await self._store.record_reply_parts(turn_id, message_ids)

    # -- restarts --------------------------------------------------------------------------

    async def resume_unfinished(
        self,
        delivery_for: Callable[[Turn], Delivery],
        spawn: Callable[[Coroutine[Any, Any, TurnOutcome]], object],
    ) -> int:
        """Queue every turn a previous run left unfinished: each waits for its submitted
        request by fal id, submits a pending one, or delivers a completed one. Turns of one
        conversation run in order, ahead of new messages; conversations concurrently; each in
        its own task (``spawn``), so one failing cannot take the others down. Returns how
        many turns were queued."""
        turns = await self._store.unfinished_turns()
        scopes: dict[int, str] = {}
        for turn in turns:
            if turn.conversation_id not in scopes:
                conversation = await self._store.get_conversation(turn.conversation_id)
                scopes[turn.conversation_id] = conversation.scope_id
        # Oldest first: tasks start in creation order and queue before their first await,
        # so each turn waits behind the previous one of its conversation.
        for turn in turns:
            incoming = Incoming(
                source_id=turn.source_id,
                scope_id=scopes[turn.conversation_id],
                author_id=turn.author_id,
                author_name=turn.author_name,
                text=turn.prompt,
            )
            work = _Work(partial(_fixed_delivery, delivery_for(turn)), incoming, resume_turn=turn)
            spawn(self._inboxes.submit(incoming.scope_id, work, None))
        return len(turns)

    async def _resume(self, work: _Work) -> TurnOutcome:
        turn = work.resume_turn
        assert turn is not None
        log.info("resuming turn %s (%s)", turn.id, turn.state)
        conversation = await self._store.get_conversation(turn.conversation_id)
        delivery = work.make_delivery(work.incoming)
        await delivery.start()
        try:
            started = asyncio.get_running_loop().time()
            return await self._run_turn(conversation, turn, delivery, started)
        finally:
            await delivery.close()

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
