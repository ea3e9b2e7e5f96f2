"""Delivery of one turn through the interaction that asked for it, where the bot cannot post
(a server that did not add it, a DM between people): the deferred response becomes the
answer's first part, follow-ups carry the rest (at most :data:`MAX_FOLLOWUPS` for a
user-installed app; a longer answer goes as ``answer.md``), the Reply button goes on the
last part. Also the one router of the domain's ``Deliveries`` port: a destination with an
interaction goes here, any other to the channel deliveries.

An interaction's token is its only way to answer, and Discord takes answers on it for 15
minutes after its creation. While its turn runs the token is held in memory and, sealed
(bot/chat/sealing.py), in the database (:class:`LiveInteractions`), so that a restart
within those 15 minutes still answers it through its webhook; it is dropped once the
answer (or the failure notice) is out. A turn whose interaction cannot be answered any
more (its 15 minutes are over, or nothing was kept) raises ``DeliveryError`` from
``start``: the service then fails it without a model call, and the unseen answer stays out
of the conversation's history.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

import discord

from bot.chat import texts
from bot.chat.delivery import ChannelDeliveries
from bot.chat.sealing import TokenSeal
from bot.chat.splitter import DISCORD_MESSAGE_LIMIT, split_message
from bot.domain.errors import DeliveryError, SeedBotError
from bot.domain.models import Destination, ModelReply, Progress, StoredInteraction, Turn
from bot.domain.ports import Delivery, DeliveryRecorder, InteractionStore

log = logging.getLogger(__name__)

#: Follow-up messages Discord accepts on one interaction of a user-installed app.
MAX_FOLLOWUPS = 5
ANSWER_FILENAME = "answer.md"
#: The scope of a conversation held through interactions (no channel the bot can use).
SCOPE_PREFIX = "interaction:"
#: Key in ``Interaction.extras`` for the visibility chosen when the interaction was deferred.
EPHEMERAL_EXTRA = "seed_ephemeral"

#: How long Discord takes answers on an interaction, from its creation.
INTERACTION_LIFETIME = timedelta(minutes=15)

_INVALID_WEBHOOK_TOKEN = 50027
_MAX_FOLLOWUPS_REACHED = 40094
# The webhook message that is an interaction's response (Discord's name for it in the path).
_ORIGINAL = cast(int, "@original")

EXPIRED = "the interaction expired (Discord keeps it 15 minutes) before the answer was ready"
GONE = "the interaction it answers is gone (the bot restarted and kept nothing to answer it)"

ViewFor = Callable[[int], discord.ui.View]


@dataclass(frozen=True, slots=True)
class InteractionViews:
    """The buttons of an answer through an interaction, by turn id: Stop on the status,
    Reply on the answer."""

    stop: ViewFor
    reply: ViewFor


def interaction_scope(interaction_id: int) -> str:
    """The scope of a conversation that starts with this interaction."""
    return f"{SCOPE_PREFIX}{interaction_id}"


def is_interaction_scope(scope_id: str) -> bool:
    return scope_id.startswith(SCOPE_PREFIX)


def why_refused(exc: discord.HTTPException) -> str:
    """What Discord's refusal to take an interaction's answer means."""
    if exc.code == _INVALID_WEBHOOK_TOKEN:
        return EXPIRED
    if exc.code == _MAX_FOLLOWUPS_REACHED:
        return "Discord refused another follow-up message (at most 5 for a user-installed app)"
    return f"Discord refused the interaction's answer (HTTP {exc.status}: {exc.text})"


def fit_parts(
    rendered: texts.RenderedReply, reply: ModelReply, warnings: Sequence[str]
) -> tuple[list[str], list[tuple[str, bytes]]]:
    """The messages to post (at most the response and :data:`MAX_FOLLOWUPS` follow-ups) and
    the files. A reply that needs more messages becomes the answer's start with a pointer
    to the whole of it in ``answer.md`` (and the reasoning in ``reasoning.md``)."""
    files = [(f.filename, f.data) for f in rendered.files]
    if len(rendered.messages) <= MAX_FOLLOWUPS + 1:
        return list(rendered.messages), files
    pointer = f"\n\n*The whole answer is in the attached `{ANSWER_FILENAME}`.*"
    start = split_message(reply.output, DISCORD_MESSAGE_LIMIT - len(pointer))
    messages = [((start[0] if start else "") + pointer).strip()]
    if (warning := texts.warning_line(warnings)) is not None:
        messages.append(warning)
    files = [(ANSWER_FILENAME, texts.file_bytes(reply.output + "\n"))]
    if reply.reasoning and reply.reasoning.strip():
        files.append((texts.REASONING_FILENAME, texts.file_bytes(reply.reasoning.strip() + "\n")))
    return messages, files


class AnswerTarget(Protocol):
    """Where an interaction's answer goes: the interaction itself while it is live, its
    webhook rebuilt from the kept token after a restart."""

    @property
    def interaction_id(self) -> str: ...

    @property
    def ephemeral(self) -> bool: ...

    @property
    def expires_at(self) -> datetime | None:
        """When Discord stops taking answers on it (None until ``ready``)."""
        ...

    async def ready(self) -> None:
        """Raise ``DeliveryError`` when the interaction cannot be answered any more."""
        ...

    async def edit_original(self, **kwargs: Any) -> discord.Message: ...

    async def followup(self, content: str, **kwargs: Any) -> discord.Message: ...

    async def release(self) -> None:
        """The answer (or its failure) is out: the token is needed no more."""
        ...


class LiveInteractions:
    """The interactions whose turns are running, by id: in memory, and (once ``keep_in`` gave
    a store) sealed in the database until their answers are out, so that a restart within
    Discord's 15 minutes can still answer them. Their tokens are never logged."""

    def __init__(self, client: discord.Client) -> None:
        self._client = client
        self._live: dict[str, discord.Interaction] = {}
        # Kept in the database by this process and not yet dropped.
        self._kept: set[str] = set()
        self._store: InteractionStore | None = None
        self._seal: TokenSeal | None = None

    def keep_in(self, store: InteractionStore, seal: TokenSeal) -> None:
        self._store, self._seal = store, seal

    @contextlib.asynccontextmanager
    async def holding(
        self, interaction: discord.Interaction, ephemeral: bool
    ) -> AsyncIterator[str]:
        """Hold ``interaction`` (already acknowledged as ``ephemeral``) while its turn runs.
        A turn cut short (a shutdown) leaves it kept for the next start."""
        key = str(interaction.id)
        self._live[key] = interaction
        await self._keep(interaction, ephemeral)
        try:
            yield key
        finally:
            self._live.pop(key, None)
        await self.release(key)

    def get(self, interaction_id: str) -> discord.Interaction | None:
        return self._live.get(interaction_id)

    async def _keep(self, interaction: discord.Interaction, ephemeral: bool) -> None:
        if self._store is None or self._seal is None:
            return
        key = str(interaction.id)
        stored = StoredInteraction(
            interaction_id=key,
            application_id=str(interaction.application_id),
            user_id=str(interaction.user.id),
            sealed_token=self._seal.seal(interaction.token, key),
            ephemeral=ephemeral,
            expires_at=interaction.created_at + INTERACTION_LIFETIME,
        )
        try:
            await self._store.keep_interaction(stored)
            self._kept.add(key)
        except SeedBotError as exc:
            # The turn still runs; only a restart before its answer could not deliver it.
            log.warning("interaction %s not kept for a restart: %s", key, exc)

    async def release(self, interaction_id: str) -> None:
        if self._store is None or interaction_id not in self._kept:
            return
        self._kept.discard(interaction_id)
        try:
            await self._store.drop_interaction(interaction_id)
        except SeedBotError as exc:
            log.warning("interaction %s stays kept until it expires: %s", interaction_id, exc)

    async def restore(self, interaction_id: str) -> tuple[StoredInteraction, discord.Webhook]:
        """What was kept for an interaction and the webhook answering it; raises
        ``DeliveryError`` when it cannot be answered any more (dropping what was kept)."""
        stored: StoredInteraction | None = None
        if self._store is not None:
            try:
                stored = await self._store.stored_interaction(interaction_id)
            except SeedBotError as exc:
                raise DeliveryError(f"the interaction's token could not be read: {exc}") from exc
        if stored is None:
            raise DeliveryError(GONE)
        self._kept.add(interaction_id)
        token = self._seal.open(stored.sealed_token, interaction_id) if self._seal else None
        if stored.expires_at <= datetime.now(UTC) or token is None:
            await self.release(interaction_id)
            raise DeliveryError(EXPIRED if token is not None else GONE)
        webhook = discord.Webhook.partial(int(stored.application_id), token, client=self._client)
        # partial() makes an incoming webhook; an interaction's is an application webhook
        # (its follow-ups may be ephemeral), as Interaction.followup builds it.
        webhook.type = discord.WebhookType.application
        return stored, webhook

    async def purge(self) -> None:
        """Drop what a previous run kept for interactions that have expired since."""
        if self._store is None:
            return
        try:
            dropped = await self._store.drop_expired_interactions(datetime.now(UTC))
        except SeedBotError as exc:
            log.warning("expired interactions not dropped: %s", exc)
            return
        if dropped:
            log.info("dropped %d expired interaction(s) kept by a previous run", dropped)


class _LiveTarget:
    def __init__(self, interaction: discord.Interaction, live: LiveInteractions) -> None:
        self._interaction = interaction
        self._live = live

    @property
    def interaction_id(self) -> str:
        return str(self._interaction.id)

    @property
    def ephemeral(self) -> bool:
        return bool(self._interaction.extras.get(EPHEMERAL_EXTRA, True))

    @property
    def expires_at(self) -> datetime | None:
        return self._interaction.created_at + INTERACTION_LIFETIME

    async def ready(self) -> None:
        return None

    async def edit_original(self, **kwargs: Any) -> discord.Message:
        return await self._interaction.edit_original_response(**kwargs)

    async def followup(self, content: str, **kwargs: Any) -> discord.Message:
        return await self._interaction.followup.send(content, wait=True, **kwargs)

    async def release(self) -> None:
        await self._live.release(self.interaction_id)


class _KeptTarget:
    """An interaction answered after a restart, through its webhook rebuilt from what was
    kept (:meth:`LiveInteractions.restore`), loaded when the delivery starts."""

    def __init__(self, interaction_id: str, live: LiveInteractions) -> None:
        self._interaction_id = interaction_id
        self._live = live
        self._webhook: discord.Webhook | None = None
        self._ephemeral = True
        self._expires_at: datetime | None = None
        self._unusable: DeliveryError | None = None

    @property
    def interaction_id(self) -> str:
        return self._interaction_id

    @property
    def ephemeral(self) -> bool:
        return self._ephemeral

    @property
    def expires_at(self) -> datetime | None:
        return self._expires_at

    async def ready(self) -> None:
        if self._unusable is not None:
            raise self._unusable
        if self._webhook is None:
            try:
                stored, self._webhook = await self._live.restore(self._interaction_id)
                self._ephemeral, self._expires_at = stored.ephemeral, stored.expires_at
            except DeliveryError as exc:
                self._unusable = exc
                raise

    async def edit_original(self, **kwargs: Any) -> discord.Message:
        await self.ready()
        assert self._webhook is not None
        return await self._webhook.edit_message(_ORIGINAL, **kwargs)

    async def followup(self, content: str, **kwargs: Any) -> discord.Message:
        await self.ready()
        assert self._webhook is not None
        return await self._webhook.send(content, wait=True, **kwargs)

    async def release(self) -> None:
        await self._live.release(self._interaction_id)


class _NothingToShow:
    """No typing or superseded marks through an interaction (its "thinking" message shows
    the work, and its answers are never redone)."""

    async def start(self) -> None:
        return None

    async def attach(self, turn: Turn) -> None:
        return None

    async def waiting(self, place: Callable[[], int | None]) -> None:
        return None

    async def running(self) -> None:
        return None

    async def progress(self, progress: Progress) -> None:
        return None

    async def close(self) -> None:
        return None

    async def supersede(self, old: Turn) -> None:
        return None


class InteractionDelivery(_NothingToShow):
    """``Delivery`` for one turn through ``target`` (an interaction already deferred, with
    the visibility the follow-ups take too). While the model works, the deferred response
    turns into a status with a Stop button once the request waits in fal's queue or has
    run for ``status_delay`` seconds (edits of the response count against no limit).
    ``start`` raises ``DeliveryError`` when the interaction cannot be answered any more;
    an answer posted (in part) before a restart is then kept: the person saw it."""

    def __init__(
        self,
        target: AnswerTarget,
        *,
        recorder: DeliveryRecorder,
        views: InteractionViews,
        status_delay: float = 2.0,
    ) -> None:
        self._target = target
        self._recorder = recorder
        self._views = views
        self._status_delay = status_delay
        self._turn: Turn | None = None
        self._status_text = texts.status_running()
        self._status_shown = False
        self._place: Callable[[], int | None] | None = None  # while waiting for a slot
        self._lock = asyncio.Lock()
        self._done = False
        self._timer: asyncio.Task[None] | None = None
        self._unusable: DeliveryError | None = None

    async def start(self) -> None:
        try:
            await self._target.ready()
        except DeliveryError as exc:
            self._unusable = exc  # the service says so, naming the turn
            raise
        if self._timer is None:
            self._timer = asyncio.create_task(self._status_after_delay(), name="status")

    def deadline(self) -> datetime | None:
        return self._target.expires_at

    async def attach(self, turn: Turn) -> None:
        self._turn = turn

    async def waiting(self, place: Callable[[], int | None]) -> None:
        # Edits of the response count against no limit of the bot's, but a turn that waits
        # for a slot should say so (and where it stands when shown) rather than "Thinking…".
        self._place = place

    async def running(self) -> None:
        waited, self._place = self._place is not None, None
        if waited and self._status_shown:
            await self._show_status()

    async def progress(self, progress: Progress) -> None:
        if progress.state == "queued":
            self._status_text = texts.status_queued(progress.queue_position)
            await self._show_status()
        else:
            self._status_text = texts.status_running()
            if self._status_shown:
                await self._show_status()

    async def close(self) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None

    async def _status_after_delay(self) -> None:
        await asyncio.sleep(self._status_delay)
        await self._show_status()

    async def _show_status(self) -> None:
        async with self._lock:
            turn = self._turn
            if self._done or turn is None or self._unusable is not None:
                return
            try:
                await self._target.edit_original(
                    content=(
                        texts.status_waiting(self._place())
                        if self._place is not None
                        else self._status_text
                    ),
                    view=self._views.stop(turn.id),
                    allowed_mentions=texts.NO_MENTIONS,
                )
                self._status_shown = True
            except discord.HTTPException as exc:
                log.info("turn %s: status through the interaction failed: %s", turn.id, exc)

    async def deliver(self, turn: Turn, reply: ModelReply, warnings: Sequence[str]) -> list[str]:
        if self._unusable is not None:
            if turn.reply_message_ids:
                log.info("turn %s was answered before the restart; keeping it", turn.id)
                await self._recorder.record_delivery(turn.id, turn.reply_message_ids)
                return list(turn.reply_message_ids)
            raise self._unusable
        rendered = texts.compose_reply(reply.output, reply.reasoning, warnings)
        messages, files = fit_parts(rendered, reply, warnings)
        ids = await self._post(turn, messages, files, reply=True, posted=turn.reply_message_ids)
        await self._record(self._recorder.record_delivery, turn, ids)
        return ids

    async def fail(self, turn: Turn | None, error: Exception) -> list[str]:
        if self._unusable is not None:
            raise self._unusable
        return await self._post(turn, [texts.turn_error_text(turn, error)], [], reply=False)

    async def stopped(self, turn: Turn, by: str) -> None:
        if self._unusable is not None:
            raise self._unusable
        await self._post(turn, [texts.stopped_by(by)], [], reply=False)

    async def _post(
        self,
        turn: Turn | None,
        contents: Sequence[str],
        files: Sequence[tuple[str, bytes]],
        *,
        reply: bool,
        posted: Sequence[str] = (),
    ) -> list[str]:
        """The first part replaces the deferred response (or the status, dropping its Stop
        button), the others are follow-ups; the files go with the first, the Reply button
        with the last. The ``posted`` parts (before a restart) are not posted again. Once
        this ends, the interaction's kept token is dropped: nothing more goes through it."""
        async with self._lock:
            self._done = True
        await self.close()
        ids: list[str] = list(posted[: len(contents)])
        what = f"turn {turn.id}" if turn is not None else "a turn"
        try:
            for index, content in enumerate(contents):
                if index < len(ids):
                    continue
                last = index == len(contents) - 1
                kwargs: dict[str, Any] = {"allowed_mentions": texts.NO_MENTIONS}
                if last and reply and turn is not None:
                    kwargs["view"] = self._views.reply(turn.id)
                elif index == 0:
                    kwargs["view"] = None
                attach = [discord.File(io.BytesIO(d), n) for n, d in files] if index == 0 else []
                if index == 0:
                    message = await self._target.edit_original(
                        content=content, attachments=attach, **kwargs
                    )
                else:
                    message = await self._target.followup(
                        content, ephemeral=self._target.ephemeral, **kwargs
                    )
                ids.append(str(message.id))
                if reply and turn is not None:
                    # A restart from here on continues after what was seen.
                    await self._record(self._recorder.record_reply_parts, turn, ids)
        except discord.HTTPException as exc:
            why = why_refused(exc)
            log.warning(
                "%s: cannot answer through interaction %s: %s (%d of %d parts posted)",
                what,
                self._target.interaction_id,
                why,
                len(ids),
                len(contents),
            )
            if ids:
                await self._tell(texts.undelivered_rest(why))
            raise DeliveryError(why) from exc
        finally:
            await self._target.release()
        return ids

    async def _tell(self, text: str) -> None:
        """A last word where the answer stopped, if Discord still takes one."""
        try:
            await self._target.followup(text, ephemeral=True, allowed_mentions=texts.NO_MENTIONS)
        except discord.HTTPException as exc:
            log.info("could not tell the user either: %s", exc)

    @staticmethod
    async def _record(
        hook: Callable[[int, Sequence[str]], Coroutine[Any, Any, None]], turn: Turn, ids: list[str]
    ) -> None:
        try:
            await hook(turn.id, list(ids))
        except SeedBotError as exc:
            log.warning("could not record the answer of turn %s: %s", turn.id, exc)


class Deliveries:
    """The domain's ``Deliveries``: through the interaction a destination names (live, or
    kept across a restart), else into its channel (:class:`ChannelDeliveries`, whose status
    delay applies to both)."""

    def __init__(
        self,
        channels: ChannelDeliveries,
        live: LiveInteractions,
        recorder: DeliveryRecorder,
        views: InteractionViews,
    ) -> None:
        self.channels = channels
        self._live = live
        self._recorder = recorder
        self._views = views

    def open(self, destination: Destination) -> Delivery:
        if destination.interaction_id is None and not is_interaction_scope(destination.channel_id):
            return self.channels.open(destination)
        # A resumed turn names no interaction, but its source is the interaction it came
        # through (see convert.incoming_from_interaction), which its answer "replies to".
        interaction_id = destination.interaction_id or destination.reply_to or ""
        interaction = self._live.get(interaction_id)
        target: AnswerTarget = (
            _LiveTarget(interaction, self._live)
            if interaction is not None
            else _KeptTarget(interaction_id, self._live)
        )
        return InteractionDelivery(
            target,
            recorder=self._recorder,
            views=self._views,
            status_delay=self.channels.status_delay,
        )
