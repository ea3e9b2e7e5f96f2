"""Delivery of one turn through the interaction that asked for it, where the bot cannot post
(a server that did not add it, a DM between people): the deferred response becomes the
answer's first part, follow-ups carry the rest (at most :data:`MAX_FOLLOWUPS` for a
user-installed app; a longer answer goes as ``answer.md``), the Reply button goes on the
last part. Also the one router of the domain's ``Deliveries`` port: a destination with an
interaction goes here, any other to the channel deliveries.

The interaction's token is kept in memory only while its turn runs (:class:`LiveInteractions`);
it lives 15 minutes at Discord. A turn whose interaction is gone (a restart) or expired
cannot be posted: that is logged and raised as ``DeliveryError``, and the service stores the
turn as failed, so its unseen answer stays out of the conversation's history.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import discord

from bot.chat import texts
from bot.chat.delivery import ChannelDeliveries
from bot.chat.splitter import DISCORD_MESSAGE_LIMIT, split_message
from bot.domain.errors import DeliveryError, SeedBotError
from bot.domain.models import Destination, ModelReply, Progress, Turn
from bot.domain.ports import Delivery, DeliveryRecorder

log = logging.getLogger(__name__)

#: Follow-up messages Discord accepts on one interaction of a user-installed app.
MAX_FOLLOWUPS = 5
ANSWER_FILENAME = "answer.md"
#: The scope of a conversation held through interactions (no channel the bot can use).
SCOPE_PREFIX = "interaction:"
#: Key in ``Interaction.extras`` for the visibility chosen when the interaction was deferred.
EPHEMERAL_EXTRA = "seed_ephemeral"

_INVALID_WEBHOOK_TOKEN = 50027
_MAX_FOLLOWUPS_REACHED = 40094

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
        return "the interaction expired (Discord keeps it 15 minutes) before the answer was ready"
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


class LiveInteractions:
    """The interactions whose turns are running, by id: their tokens never leave memory."""

    def __init__(self) -> None:
        self._live: dict[str, discord.Interaction] = {}

    @contextlib.contextmanager
    def holding(self, interaction: discord.Interaction) -> Iterator[str]:
        key = str(interaction.id)
        self._live[key] = interaction
        try:
            yield key
        finally:
            self._live.pop(key, None)

    def get(self, interaction_id: str) -> discord.Interaction | None:
        return self._live.get(interaction_id)


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
    """``Delivery`` for one turn through ``interaction``, already deferred. ``ephemeral`` is
    the visibility chosen when deferring: the follow-ups take the same. While the model
    works, the deferred response turns into a status with a Stop button once the request
    waits in fal's queue or has run for ``status_delay`` seconds (edits of the response
    count against no limit)."""

    def __init__(
        self,
        interaction: discord.Interaction,
        *,
        recorder: DeliveryRecorder,
        views: InteractionViews,
        ephemeral: bool,
        status_delay: float = 2.0,
    ) -> None:
        self._interaction = interaction
        self._recorder = recorder
        self._views = views
        self._ephemeral = ephemeral
        self._status_delay = status_delay
        self._turn: Turn | None = None
        self._status_text = texts.status_running()
        self._status_shown = False
        self._place: Callable[[], int | None] | None = None  # while waiting for a slot
        self._lock = asyncio.Lock()
        self._done = False
        self._timer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._timer is None:
            self._timer = asyncio.create_task(self._status_after_delay(), name="status")

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
            if self._done or turn is None:
                return
            try:
                await self._interaction.edit_original_response(
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
        rendered = texts.compose_reply(reply.output, reply.reasoning, warnings)
        messages, files = fit_parts(rendered, reply, warnings)
        ids = await self._post(turn, messages, files, reply=True)
        await self._record(self._recorder.record_delivery, turn, ids)
        return ids

    async def fail(self, turn: Turn | None, error: Exception) -> list[str]:
        return await self._post(turn, [texts.turn_error_text(turn, error)], [], reply=False)

    async def stopped(self, turn: Turn, by: str) -> None:
        await self._post(turn, [texts.stopped_by(by)], [], reply=False)

    async def _post(
        self,
        turn: Turn | None,
        contents: Sequence[str],
        files: Sequence[tuple[str, bytes]],
        *,
        reply: bool,
    ) -> list[str]:
        """The first part replaces the deferred response (or the status, dropping its Stop
        button), the others are follow-ups; the files go with the first, the Reply button
        with the last."""
        async with self._lock:
            self._done = True
        await self.close()
        ids: list[str] = []
        what = f"turn {turn.id}" if turn is not None else "a turn"
        try:
            for index, content in enumerate(contents):
                last = index == len(contents) - 1
                kwargs: dict[str, Any] = {"allowed_mentions": texts.NO_MENTIONS}
                if last and reply and turn is not None:
                    kwargs["view"] = self._views.reply(turn.id)
                elif index == 0:
                    kwargs["view"] = None
                attach = [discord.File(io.BytesIO(d), n) for n, d in files] if index == 0 else []
                if index == 0:
                    message: discord.Message = await self._interaction.edit_original_response(
                        content=content, attachments=attach, **kwargs
                    )
                else:
                    message = await self._interaction.followup.send(
                        content, ephemeral=self._ephemeral, wait=True, **kwargs
                    )
                ids.append(str(message.id))
                if reply and turn is not None:
                    # A restart from here on keeps what was seen (see UnreachableDelivery).
                    await self._record(self._recorder.record_reply_parts, turn, ids)
        except discord.HTTPException as exc:
            why = why_refused(exc)
            log.warning(
                "%s: cannot answer through interaction %s: %s (%d of %d parts posted)",
                what,
                self._interaction.id,
                why,
                len(ids),
                len(contents),
            )
            if ids:
                await self._tell(texts.undelivered_rest(why))
            raise DeliveryError(why) from exc
        return ids

    async def _tell(self, text: str) -> None:
        """A last word where the answer stopped, if Discord still takes one."""
        try:
            await self._interaction.followup.send(
                text, ephemeral=True, allowed_mentions=texts.NO_MENTIONS
            )
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


class UnreachableDelivery(_NothingToShow):
    """``Delivery`` for a turn held through an interaction that is gone (the bot restarted
    since): nothing can be posted; saying so is logged and raised. An answer posted (in
    part) before the restart stays the turn's: the person saw it."""

    def __init__(self, scope_id: str, recorder: DeliveryRecorder) -> None:
        self._scope_id = scope_id
        self._recorder = recorder

    def _refuse(self, turn: Turn | None) -> DeliveryError:
        why = "the interaction it answers is gone (the bot restarted since)"
        log.warning(
            "turn %s in %s cannot be posted: %s",
            turn.id if turn is not None else "?",
            self._scope_id,
            why,
        )
        return DeliveryError(why)

    async def deliver(self, turn: Turn, reply: ModelReply, warnings: Sequence[str]) -> list[str]:
        if turn.reply_message_ids:
            log.info("turn %s was answered before the restart; keeping it", turn.id)
            await self._recorder.record_delivery(turn.id, turn.reply_message_ids)
            return list(turn.reply_message_ids)
        raise self._refuse(turn)

    async def fail(self, turn: Turn | None, error: Exception) -> list[str]:
        raise self._refuse(turn)

    async def stopped(self, turn: Turn, by: str) -> None:
        raise self._refuse(turn)


class Deliveries:
    """The domain's ``Deliveries``: through the live interaction a destination names, else
    into its channel (:class:`ChannelDeliveries`, whose status delay applies to both)."""

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
        interaction = (
            self._live.get(destination.interaction_id) if destination.interaction_id else None
        )
        if interaction is None:
            return UnreachableDelivery(destination.channel_id, self._recorder)
        return InteractionDelivery(
            interaction,
            recorder=self._recorder,
            views=self._views,
            ephemeral=bool(interaction.extras.get(EPHEMERAL_EXTRA, True)),
            status_delay=self.channels.status_delay,
        )
