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
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from bot.domain.conversation import (
    AttachmentLimits,
    BuiltRequest,
    InlinedText,
    build_request,
    compose_prompt,
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
)
from bot.domain.models import (
    Attachment,
    Conversation,
    GenerationSettings,
    Incoming,
    ModelReply,
    NewConversation,
    NewTurn,
    RequestHandle,
    SettingsScope,
    Turn,
    TurnState,
)
from bot.domain.ports import Delivery, MediaSource, ModelClient, Store
from bot.domain.settings import EffectiveSettings, resolve_settings, validate_settings

log = logging.getLogger(__name__)

AttachmentMode = Literal["fal_storage", "discord_url", "data_uri"]
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


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """What became of one message: the turn (None if it never got one) and its end state."""

    turn: Turn | None
    state: TurnState | Literal["duplicate", "refused"]


class _Locks:
    """One lock per conversation scope, dropped when nobody holds or waits for it, so idle
    conversations cost no memory."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def hold(self, key: str) -> _Held:
        return _Held(self, key)

    def _enter(self, key: str) -> asyncio.Lock:
        lock, users = self._locks.get(key, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        return lock

    def _leave(self, key: str) -> None:
        lock, users = self._locks[key]
        if users <= 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class _Held:
    def __init__(self, locks: _Locks, key: str) -> None:
        self._locks = locks
        self._key = key
        self._lock: asyncio.Lock | None = None

    async def __aenter__(self) -> None:
        self._lock = self._locks._enter(self._key)
        try:
            await self._lock.acquire()
        except BaseException:
            self._locks._leave(self._key)
            raise

    async def __aexit__(self, *exc: object) -> None:
        assert self._lock is not None
        self._lock.release()
        self._locks._leave(self._key)


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
        self._locks = _Locks()
        self._in_flight = asyncio.Semaphore(config.max_in_flight)

    def reconfigure(self, config: ServiceConfig) -> None:
        """Apply a reloaded config to the turns that start from now on."""
        if config.max_in_flight != self.config.max_in_flight:
            self._in_flight = asyncio.Semaphore(config.max_in_flight)
        self.config = config

    # -- admission -------------------------------------------------------------------------

    async def admit(self, author_id: str, guild_id: str | None) -> None:
        """Count one request against the user's and the server's quotas; raise
        ``QuotaExceeded`` (with when to try again) and count nothing when one is used up."""
        quotas = [("user", f"user:{author_id}", self.config.user_quota)]
        if guild_id is not None:
            quotas.append(("server", f"guild:{guild_id}", self.config.guild_quota))
        # The user's quota is checked first; a refusal by the server's then leaves the
        # user's counted, which errs on the strict side and keeps each check atomic.
        for scope, key, quota in quotas:
            if quota is None or quota.requests <= 0:
                continue
            retry_at = await self._store.try_consume(
                [(key, quota.requests)], window_seconds=quota.window_seconds, now=self._now()
            )
            if retry_at is not None:
                raise QuotaExceeded(scope, retry_at)

    # -- turns -----------------------------------------------------------------------------

    async def respond(self, incoming: Incoming, delivery: Delivery) -> TurnOutcome:
        """Answer one message. Failures are reported through ``delivery`` and stored on the
        turn; only cancellation (shutdown) propagates, leaving the turn to be resumed."""
        async with self._locks.hold(incoming.scope_id):
            try:
                return await self._respond_locked(incoming, delivery)
            except DuplicateMessage:
                log.info("message %s already answered; ignoring", incoming.source_id)
                return TurnOutcome(None, "duplicate")
            except SeedBotError as exc:
                # Failures before the turn was stored: nothing to mark, only to tell.
                log.warning("turn for message %s refused: %s", incoming.source_id, exc)
                with contextlib.suppress(DeliveryError):
                    await delivery.fail(None, exc)
                return TurnOutcome(None, "refused")

    async def _respond_locked(self, incoming: Incoming, delivery: Delivery) -> TurnOutcome:
        started = asyncio.get_running_loop().time()
        if await self._store.turn_for_source(incoming.source_id) is not None:
            raise DuplicateMessage(incoming.source_id)
        conversation = await self._conversation_for(incoming)
        prompt, image_urls, video_urls, warnings = await self._prepare(conversation, incoming)
        turn = await self._store.begin_turn(
            NewTurn(
                conversation_id=conversation.id,
                epoch=conversation.epoch,
                source_id=incoming.source_id,
                author_id=incoming.author_id,
                author_name=incoming.author_name,
                reply_channel_id=incoming.scope_id,
                prompt=prompt,
                image_urls=image_urls,
                video_urls=video_urls,
                warnings=warnings,
            )
        )
        log.info(
            "turn %s stored for message %s in conversation %s",
            turn.id,
            incoming.source_id,
            conversation.id,
        )
        return await self._run_turn(conversation, turn, delivery, started)

    async def _conversation_for(self, incoming: Incoming) -> Conversation:
        existing = await self._store.conversation_for_scope(incoming.scope_id)
        if existing is not None:
            return existing
        return await self._store.create_conversation(
            NewConversation(
                scope_id=incoming.scope_id,
                owner_id=incoming.author_id,
                guild_id=incoming.guild_id,
                parent_channel_id=incoming.parent_channel_id,
            )
        )

    async def _prepare(
        self, conversation: Conversation, incoming: Incoming
    ) -> tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
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
        several = await self._store.has_other_speakers(conversation.id, incoming.author_id)
        prompt = compose_prompt(
            incoming.text,
            author_name=incoming.author_name if several else None,
            quoted=incoming.reply_text,
            quoted_author=incoming.reply_author,
            inlined=inlined,
        )
        if not prompt.strip():
            # The API requires a prompt; an image alone still deserves an answer.
            prompt = "(no text; see the attachments)" if image_urls or video_urls else "Hello!"
        return prompt, tuple(image_urls), tuple(video_urls), tuple(warnings)

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
        self, conversation: Conversation, turn: Turn, delivery: Delivery, started: float
    ) -> TurnOutcome:
        """Submit (if not yet), wait, store and deliver one stored turn."""
        try:
            reply, sent_count, warnings = await self._obtain_reply(
                conversation, turn, delivery, started
            )
            if reply is not None:
                new = new_history_messages(reply.messages, sent_count)
                await self._store.complete_turn(turn.id, reply, new)
            else:
                reply = ModelReply(
                    output=turn.output or "",
                    reasoning=turn.reasoning,
                    messages=(),
                    request_id=turn.handle.request_id if turn.handle else "",
                )
            ids = await delivery.deliver(turn, reply, warnings)
            await self._store.record_delivery(turn.id, ids)
            log.info("turn %s delivered (request %s)", turn.id, reply.request_id)
            return TurnOutcome(turn, TurnState.DELIVERED)
        except asyncio.CancelledError:
            log.info("turn %s interrupted; it stays %s for the next start", turn.id, turn.state)
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

    async def _obtain_reply(
        self, conversation: Conversation, turn: Turn, delivery: Delivery, started: float
    ) -> tuple[ModelReply | None, int | None, tuple[str, ...]]:
        """The model's reply for a turn (None when it is already stored), how many history
        messages were sent with it (None when unknown), and the warnings to show."""
        warnings = list(turn.warnings)
        if turn.state is TurnState.COMPLETED:
            return None, None, tuple(warnings)
        remaining = self.config.turn_timeout - (asyncio.get_running_loop().time() - started)
        async with self._in_flight:
            sent_count: int | None = None
            handle = turn.handle
            if turn.state is TurnState.PENDING or handle is None:
                conversation = await self._store.get_conversation(conversation.id)
                built = await self._build(conversation, turn)
                if built.dropped_turns and conversation.trim_notified_epoch != conversation.epoch:
                    warnings.append(TRIM_NOTICE)
                    await self._store.mark_trim_notified(conversation.id, conversation.epoch)
                sent_count = len(built.request.messages)
                handle = await self._model.submit(built.request)
                await self._store.record_submission(turn.id, handle)
                log.info("turn %s submitted as request %s", turn.id, handle.request_id)
            reply = await self._model.wait(
                handle, on_progress=delivery.progress, timeout=max(1.0, remaining)
            )
        return reply, sent_count, tuple(warnings)

    async def _build(self, conversation: Conversation, turn: Turn) -> BuiltRequest:
        history = await self._store.history(conversation.id, conversation.epoch)
        effective = await self.effective_settings(
            thread_id=conversation.scope_id,
            channel_id=conversation.parent_channel_id,
            guild_id=conversation.guild_id,
        )
        return build_request(
            history,
            prompt=turn.prompt,
            image_urls=turn.image_urls,
            video_urls=turn.video_urls,
            settings=effective.values,
            context_budget_tokens=self.config.context_budget_tokens,
        )

    # -- restarts --------------------------------------------------------------------------

    async def resume_unfinished(self, delivery_for: Callable[[Turn], Delivery]) -> int:
        """Resume every turn a previous run left unfinished: wait for submitted requests by
        their fal id, submit pending ones, deliver completed ones. Turns of one conversation
        run in order; conversations concurrently. Returns how many turns were resumed."""
        turns = await self._store.unfinished_turns()
        by_conversation: dict[int, list[Turn]] = {}
        for turn in turns:
            by_conversation.setdefault(turn.conversation_id, []).append(turn)

        async def resume(conversation_turns: Sequence[Turn]) -> None:
            for turn in conversation_turns:
                conversation = await self._store.get_conversation(turn.conversation_id)
                async with self._locks.hold(conversation.scope_id):
                    log.info("resuming turn %s (%s)", turn.id, turn.state)
                    started = asyncio.get_running_loop().time()
                    await self._run_turn(conversation, turn, delivery_for(turn), started)

        async with asyncio.TaskGroup() as group:
            for conversation_turns in by_conversation.values():
                group.create_task(resume(conversation_turns))
        return len(turns)

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
        async with self._locks.hold(scope_id):
            return await self._store.reset(conversation.id)

    async def conversation_for_scope(self, scope_id: str) -> Conversation | None:
        return await self._store.conversation_for_scope(scope_id)

    async def bind(self, new: NewConversation) -> Conversation:
        """Bind a new conversation to a thread (or return the one already bound)."""
        return await self._store.create_conversation(new)

    def handle_for(self, request_id: str) -> RequestHandle:
        return self._model.handle_for(request_id)
