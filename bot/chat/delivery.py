"""Delivery of one turn into a Discord channel (the channel surface of
bot/chat/delivery_core.py): typing, the status message with its Stop button, the answer
with its Retry button. :class:`ChannelDeliveries` is the one builder
(the domain's ``Deliveries`` port); the buttons themselves are handed in by the entry point,
so this module knows nothing of what they do."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import discord

from bot.chat import texts
from bot.chat.delivery_core import (
    STATUS_DELAY,
    DeliveryCore,
    Outgoing,
    Part,
    Refusal,
    ViewFor,
    record,
)
from bot.domain.models import Destination, ModelReply, Progress, Turn
from bot.domain.ports import DeliveryRecorder

log = logging.getLogger(__name__)

# discord.py retries 500/502/504 itself; 503 and a 5xx after its retries get a few more.
SEND_ATTEMPTS = 3
# Typing starts once a turn has held an in-flight slot this long: a fast answer is then one
# request (its post), and a turn waiting for a slot spends none of the token's ~50 requests/s.
TYPING_DELAY = 1.0
T = TypeVar("T")

# Discord's JSON error codes for why a post in a thread is refused, and what each means.
_THREAD_ARCHIVED = 50083
_MISSING_PERMISSION = (
    "I am missing a permission there (Send Messages in Threads, Attach Files or "
    "Read Message History)"
)
_REFUSED_BECAUSE = {
    10003: "the thread no longer exists",  # unknown channel
    50001: "I no longer have access to the thread",  # missing access
    50013: _MISSING_PERMISSION,  # missing permissions
}


@dataclass(frozen=True, slots=True)
class Views:
    """The buttons a delivery puts on its messages, by turn id."""

    stop: ViewFor
    retry: ViewFor


def part_nonce(turn: Turn, index: int) -> str:
    """The nonce of part ``index`` of a turn's reply (the status message is part 0)."""
    return f"{turn.id}.{turn.attempt}.{index}"


def why_refused(exc: discord.HTTPException, thread: discord.Thread | None) -> str:
    """What Discord's refusal to post means, in words an operator (and a user) can act on."""
    code = exc.code
    if code == _THREAD_ARCHIVED or (thread is not None and (thread.locked or thread.archived)):
        if thread is not None and thread.locked:
            return "the thread is locked"
        return "the thread is archived"
    if code in _REFUSED_BECAUSE:
        return _REFUSED_BECAUSE[code]
    if isinstance(exc, discord.Forbidden):
        return _MISSING_PERMISSION
    return f"Discord refused the message (HTTP {exc.status})"


@dataclass(frozen=True, slots=True)
class Where:
    """Where a channel delivery posts, as Discord objects: the channel (a thread or a DM);
    the thread, when discord.py has it cached (its state explains a refusal); and the
    thread's parent channel, told when the thread refuses the answer."""

    channel: discord.PartialMessageable
    thread: discord.Thread | None = None
    notice: discord.PartialMessageable | None = None

    @classmethod
    def of(cls, client: discord.Client, channel_id: int) -> Where:
        """Channel ``channel_id`` as a delivery posts to it, through the client's REST API."""
        cached = client.get_channel(channel_id)
        thread = cached if isinstance(cached, discord.Thread) else None
        notice = (
            client.get_partial_messageable(thread.parent_id)
            if thread is not None and thread.parent_id
            else None
        )
        return cls(client.get_partial_messageable(channel_id), thread, notice)


class ChannelDelivery(DeliveryCore):
    """``Delivery`` for one turn in one channel (a thread or a DM).

    Shows typing once the turn has held an in-flight slot for ``typing_delay`` seconds,
    until a status message or the answer shows the work. Only when the answer takes longer
    than ``status_delay`` seconds does a status message appear (with a Stop button once the
    turn is stored); while the turn waits for a slot it says so, with its place in line,
    and nothing else is sent until it runs; once it runs, fal's progress edits it, at most
    once per ``STATUS_EDIT_INTERVAL``, and it becomes the first part of the answer. A fast
    answer is one message, one request. ``reply_to`` is the user's message the answer
    replies to. A resumed turn adopts its stored status
    message and skips the reply parts already posted. What is posted is recorded through
    ``recorder`` as it goes. When the thread refuses the answer (locked, archived, access
    lost), ``where``'s ``notice`` (the thread's parent channel, when known) is told.
    """

    # Each part carries a nonce Discord enforces: a part re-sent after a crash shows once.
    parts_idempotent = True

    def __init__(
        self,
        where: Where,
        *,
        recorder: DeliveryRecorder,
        views: Views,
        reply_to: int | None = None,
        status_delay: float = STATUS_DELAY,
        typing_delay: float = TYPING_DELAY,
    ) -> None:
        super().__init__(recorder=recorder, answer_view=views.retry, status_delay=status_delay)
        self._where = where
        self._channel = where.channel
        self._views = views
        self._reply_to = reply_to
        self._typing_delay = typing_delay
        self._status: Part | None = None
        self._replacing: Part | None = None  # the status the answer's first part becomes
        self._recorded_status: int | None = None  # the status message id stored last
        self._running = False
        self._shown = asyncio.Event()  # a status message stands: typing is not needed

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the status timer (typing waits for ``running``)."""
        self._start_status_timer()

    async def waiting(self, place: Callable[[], int | None]) -> None:
        """No slot is free: a status shown from now says the turn waits (once: no edit
        follows until it runs)."""
        self._place = place
        if self._status is not None and not self._done.is_set():
            self._edit_soon()

    async def running(self) -> None:
        """The turn holds a slot: typing after ``typing_delay``; a status that said it
        waits is brought up to date."""
        was_waiting, self._place = self._place is not None, None
        if self._running or self._done.is_set():
            return
        self._running = True
        self._tasks.append(asyncio.create_task(self._typing(), name="typing"))
        if was_waiting and self._status is not None:
            self._edit_soon()

    def deadline(self) -> datetime | None:
        return None  # a channel takes the answer whenever it comes

    async def attach(self, turn: Turn) -> None:
        async with self._lock:
            self._turn = turn
            if self._status is None and turn.status_message_id:
                if turn.reply_message_ids:
                    # Parts of the answer are out: the status message already became the
                    # first of them, and must not turn back into a status.
                    self._done.set()
                    return
                # A resumed turn: its progress message from before the restart.
                self._status = self._channel.get_partial_message(int(turn.status_message_id))
                self._shown.set()
            if self._status is not None and not self._done.is_set():
                await self._edit_status(self._current_text())
        await self._record_status()

    async def _typing(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._typing_delay):
                await self._done.wait()
            return  # answered before typing was worth a request
        if self._shown.is_set():
            return  # the status message shows the work: typing would only repeat it
        try:
            async with self._channel.typing():
                # discord.py repeats it every 5 s: stopped once the status shows (or by
                # close, at the answer), so a long turn costs one typing request, not one
                # every 5 s.
                await self._shown.wait()
        except discord.HTTPException as exc:
            log.debug("typing indicator failed: %s", exc)

    # -- Delivery port -----------------------------------------------------------------------

    async def progress(self, progress: Progress) -> None:
        """Note fal's progress; shown only once a status message is (see the class)."""
        self._note_progress(progress)
        if progress.state == "database" and self._status is None:
            # Shown at once, status delay or not: an outage may last minutes.
            await self._show_status()
            return
        if self._status is not None and self._place is None and not self._done.is_set():
            self._edit_soon()

    async def deliver(self, turn: Turn, reply: ModelReply, warnings: Sequence[str]) -> list[str]:
        rendered = texts.compose_reply(reply.output, reply.reasoning, warnings)
        files = [(f.filename, f.data) for f in rendered.files]
        return await self._post(
            turn, rendered.messages, files, answer=True, done=turn.reply_message_ids
        )

    async def supersede(self, old: Turn) -> None:
        """Mark the old answer's last message as replaced (and drop its Retry button)."""
        if not old.reply_message_ids:
            return
        note = texts.SUPERSEDED_NOTE
        try:
            message = await self._channel.fetch_message(int(old.reply_message_ids[-1]))
            if note not in message.content:
                # Cut the end, not the start: an opening spoiler or fence must stay.
                content = message.content[: 2000 - len(note)] + note
                await message.edit(content=content, view=None, allowed_mentions=texts.NO_MENTIONS)
        except discord.HTTPException as exc:
            log.info("could not mark the superseded answer of turn %s: %s", old.id, exc)

    # -- the status message ------------------------------------------------------------------

    def _status_view(self) -> discord.ui.View | None:
        return self._views.stop(self._turn.id) if self._turn is not None else None

    async def _show_status(self) -> None:
        """Post the status message, or edit it to the current text."""
        await self._update_status()
        await self._record_status()

    async def _record_status(self) -> None:
        """Store the status message's id once it is new to the turn; outside the status lock,
        so a database that is away holds up no status update (waiting for it is one)."""
        turn, status = self._turn, self._status
        if turn is None or status is None or self._recorded_status == status.id:
            return
        self._recorded_status = status.id
        if turn.status_message_id != str(status.id):
            await record(self._recorder.record_status_message, turn.id, str(status.id))

    async def _update_status(self) -> None:
        async with self._lock:
            if self._done.is_set():
                return
            text = self._current_text()
            if self._status is None:
                try:
                    kwargs: dict[str, Any] = {
                        "allowed_mentions": texts.NO_MENTIONS,
                        **self._reference(),
                    }
                    if (view := self._status_view()) is not None:
                        kwargs["view"] = view
                    if self._turn is not None:
                        # The status becomes the answer's first part: same nonce, so a
                        # restart that lost its id gets it back instead of a second message.
                        kwargs["nonce"] = part_nonce(self._turn, 0)
                    self._status = await self._channel.send(text, **kwargs)
                    self._shown.set()
                    self._edited()
                except discord.HTTPException as exc:
                    log.warning("status message failed: %s", exc)
                    return
            elif getattr(self._status, "content", None) != text:
                await self._edit_status(text)

    async def _edit_status(self, text: str) -> None:
        assert self._status is not None
        self._edited()
        kwargs: dict[str, Any] = {"content": text}
        if (view := self._status_view()) is not None:
            kwargs["view"] = view
        try:
            edited = await self._status.edit(**kwargs)
        except discord.NotFound:
            self._status = None  # deleted by someone: the next update posts a new one
            return
        except discord.HTTPException as exc:
            log.warning("status message edit failed: %s", exc)
            return
        self._status = edited

    def _reference(self) -> dict[str, Any]:
        if self._reply_to is None:
            return {}
        message = self._channel.get_partial_message(self._reply_to)
        return {"reference": message.to_reference(fail_if_not_exists=False)}

    # -- the answer's parts ------------------------------------------------------------------

    def _take_status(self) -> bool:
        self._replacing, self._status = self._status, None
        return self._replacing is not None

    async def _send_part(self, part: Outgoing) -> Part:
        """Edit the status message into the first part, or post the part (each, where the
        answer is posted beside the message it answers, as a reply to it: a person replying to
        any part of an inline answer continues its conversation), retrying Discord's passing
        server errors."""
        status = self._replacing if part.index == 0 else None
        kwargs = dict(part.kwargs)
        if status is None:
            kwargs.update(self._reference())
        if part.answer and part.turn is not None and status is None:
            kwargs["nonce"] = part_nonce(part.turn, part.index)
        return await self._with_retries(
            partial(self._send_once, status, part.content, kwargs, part.files)
        )

    async def _send_once(
        self,
        status: Part | None,
        content: str,
        kwargs: dict[str, Any],
        files: Sequence[tuple[str, bytes]],
    ) -> Part:
        """Post one part (or edit the status message into it). Files are built afresh for
        every attempt: a sent ``discord.File`` is spent."""
        attach = [discord.File(io.BytesIO(data), name) for name, data in files]
        if status is not None:
            edited = await status.edit(content=content, attachments=attach, **kwargs)
            return edited if edited is not None else status
        sent = await self._channel.send(
            content, **({**kwargs, "files": attach} if attach else kwargs)
        )
        if getattr(sent, "content", content) != content:
            # Discord answered the nonce with the message posted before a restart under
            # it: the status message, whose id was lost. Make it this part.
            edit = {k: v for k, v in kwargs.items() if k in ("allowed_mentions", "view")}
            edit.setdefault("view", None)
            attach = [discord.File(io.BytesIO(data), name) for name, data in files]
            return await sent.edit(content=content, attachments=attach, **edit)
        return sent

    async def _with_retries(self, send: Callable[[], Coroutine[Any, Any, T]]) -> T:
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                return await send()
            except discord.DiscordServerError as exc:
                if attempt == SEND_ATTEMPTS:
                    raise
                log.warning("Discord answered HTTP %s; retrying the post", exc.status)
                await asyncio.sleep(0.5 * attempt)
        raise AssertionError("unreachable")

    def _why_refused(self, exc: discord.HTTPException) -> str:
        return why_refused(exc, self._where.thread)

    async def _explain(self, refusal: Refusal) -> None:
        """Log it; and tell the user in the parent channel, where there is one."""
        exc, why, channel_id = refusal.exc, refusal.why, self._channel.id
        log.warning(
            "cannot post in channel %s: %s (HTTP %s: %s)", channel_id, why, exc.status, exc.text
        )
        notice = self._where.notice
        if notice is not None and exc.status in (400, 403):
            try:
                await notice.send(
                    texts.undeliverable(str(channel_id), why), allowed_mentions=texts.NO_MENTIONS
                )
            except discord.HTTPException as notice_exc:
                log.info("could not tell channel %s either: %s", notice.id, notice_exc)


@dataclass(frozen=True, slots=True)
class ChannelDeliveries:
    """The domain's ``Deliveries``: one :class:`ChannelDelivery` per turn, at its
    destination, through the client's REST connection."""

    client: discord.Client
    recorder: DeliveryRecorder
    views: Views
    _: KW_ONLY
    status_delay: float = STATUS_DELAY
    typing_delay: float = TYPING_DELAY

    def open(self, destination: Destination) -> ChannelDelivery:
        return ChannelDelivery(
            Where.of(self.client, int(destination.channel_id)),
            recorder=self.recorder,
            views=self.views,
            reply_to=int(destination.reply_to) if destination.reply_to else None,
            status_delay=self.status_delay,
            typing_delay=self.typing_delay,
        )
