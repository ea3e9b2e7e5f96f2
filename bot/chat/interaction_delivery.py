"""Delivery of one turn through the interaction that asked for it, where the bot cannot post
(a server that did not add it, a DM between people): the interaction surface of
bot/chat/delivery_core.py. The deferred response becomes the answer's first part,
follow-ups carry the rest (at most :data:`MAX_FOLLOWUPS` for a user-installed app; a
longer answer goes as ``answer.md``), the Reply button goes on the last part. Also the one
router of the domain's ``Deliveries`` port: a destination with an interaction goes here,
any other to the channel deliveries.

The interaction's token is held while its turn runs (bot/chat/live_interactions.py) and
dropped once the answer (or the failure notice) is out. A turn whose interaction cannot be
answered any more (its 15 minutes are over, or nothing was kept) raises ``DeliveryError``
from ``start``: the service then fails it without a model call, and the unseen answer stays
out of the conversation's history.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import discord

from bot.chat import texts
from bot.chat.delivery import ChannelDeliveries
from bot.chat.delivery_core import STATUS_DELAY, DeliveryCore, Outgoing, Part, Refusal, ViewFor
from bot.chat.live_interactions import (
    EXPIRED,
    AnswerTarget,
    KeptTarget,
    LiveInteractions,
    LiveTarget,
)
from bot.chat.splitter import DISCORD_MESSAGE_LIMIT, split_message
from bot.domain.errors import DeliveryError
from bot.domain.models import Destination, ModelReply, Progress, Turn
from bot.domain.ports import Delivery, DeliveryRecorder

log = logging.getLogger(__name__)

#: Follow-up messages Discord accepts on one interaction of a user-installed app.
MAX_FOLLOWUPS = 5
ANSWER_FILENAME = "answer.md"
#: The scope of a conversation held through interactions (no channel the bot can use).
SCOPE_PREFIX = "interaction:"
_INVALID_WEBHOOK_TOKEN = 50027
_MAX_FOLLOWUPS_REACHED = 40094
RUNNING = Progress(state="running")


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


class InteractionDelivery(DeliveryCore):
    """``Delivery`` for one turn through ``target`` (an interaction already deferred, with
    the visibility the follow-ups take too): the interaction surface of
    bot/chat/delivery_core.py. While the model works, the deferred response turns into a
    status with a Stop button once the request waits in fal's queue or has run for
    ``status_delay`` seconds (edits of the response count against no limit, so each
    progress shows at once). ``start`` raises ``DeliveryError`` when the interaction cannot
    be answered any more; an answer posted (in part) before a restart is then kept: the
    person saw it."""

    def __init__(
        self,
        target: AnswerTarget,
        *,
        recorder: DeliveryRecorder,
        views: InteractionViews,
        status_delay: float = STATUS_DELAY,
    ) -> None:
        super().__init__(recorder=recorder, answer_view=views.reply, status_delay=status_delay)
        self._target = target
        self._views = views
        self._status_shown = False
        self._unusable: DeliveryError | None = None

    async def start(self) -> None:
        try:
            await self._target.ready()
        except DeliveryError as exc:
            self._unusable = exc  # the service says so, naming the turn
            raise
        self._start_status_timer()

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
        # Waiting for the database reads as running here: the deferred response already
        # says the bot is thinking.
        self._note_progress(progress if progress.state != "database" else RUNNING)
        if progress.state == "queued" or self._status_shown:
            await self._show_status()

    async def supersede(self, old: Turn) -> None:
        return None  # an answer through an interaction is never redone

    async def _show_status(self) -> None:
        async with self._lock:
            turn = self._turn
            if self._done.is_set() or turn is None or self._unusable is not None:
                return
            try:
                await self._target.edit_original(
                    content=self._current_text(),
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
        return await self._post(turn, messages, files, answer=True, done=turn.reply_message_ids)

    def _check_usable(self) -> None:
        if self._unusable is not None:
            raise self._unusable

    # -- the answer's parts ------------------------------------------------------------------

    def _take_status(self) -> bool:
        return True  # the deferred response (or the status it became) is the first part

    async def _send_part(self, part: Outgoing) -> Part:
        """The first part replaces the deferred response, the others are follow-ups."""
        content, kwargs = part.content, part.kwargs
        if part.index == 0:
            attach = [discord.File(io.BytesIO(d), n) for n, d in part.files]
            return await self._target.edit_original(content=content, attachments=attach, **kwargs)
        return await self._target.followup(content, ephemeral=self._target.ephemeral, **kwargs)

    def _why_refused(self, exc: discord.HTTPException) -> str:
        return why_refused(exc)

    async def _explain(self, refusal: Refusal) -> None:
        """Log it; with part of the answer out, a last word where it stopped, if Discord
        still takes one."""
        turn = refusal.turn
        log.warning(
            "%s: cannot answer through interaction %s: %s (%d of %d parts posted)",
            f"turn {turn.id}" if turn is not None else "a turn",
            self._target.interaction_id,
            refusal.why,
            refusal.posted,
            refusal.total,
        )
        if not refusal.posted:
            return
        try:
            await self._target.followup(
                texts.undelivered_rest(refusal.why),
                ephemeral=True,
                allowed_mentions=texts.NO_MENTIONS,
            )
        except discord.HTTPException as tell_exc:
            log.info("could not tell the user either: %s", tell_exc)

    async def _posted(self) -> None:
        # Nothing more goes through the interaction: its kept token is dropped.
        await self._target.release()


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
            LiveTarget(interaction, self._live)
            if interaction is not None
            else KeptTarget(interaction_id, self._live)
        )
        return InteractionDelivery(
            target,
            recorder=self._recorder,
            views=self._views,
            status_delay=self.channels.status_delay,
        )
