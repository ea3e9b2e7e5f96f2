"""Delivery of one turn into a Discord channel: typing, the status message with its Stop
button, the answer with its Retry button."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import discord

from bot.chat import render
from bot.chat.buttons import retry_view, stop_view
from bot.chat.texts import error_text, escape_name
from bot.domain.errors import DeliveryError, SeedBotError
from bot.domain.models import ModelReply, Progress, Turn

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
SUPERSEDED_NOTE = "\n-# ↩️ replaced by a newer answer below"
# discord.py retries 500/502/504 itself; 503 and a 5xx after its retries get a few more.
SEND_ATTEMPTS = 3

# Permission names by the REST route that needs them, for log lines operators can act on.
PERMISSION_HINT = "Send Messages / Send Messages in Threads / Attach Files / Read Message History"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DeliveryHooks:
    """Where a delivery records what it posted, so a restart continues instead of repeating:
    the status message of a turn, and the reply's parts posted so far."""

    on_status: Callable[[int, str], Awaitable[None]] | None = None
    on_parts: Callable[[int, Sequence[str]], Awaitable[None]] | None = None


class ChannelDelivery:
    """``Delivery`` for one turn in one channel (a thread or a DM).

    Shows typing while the model works; a status message (with a Stop button once the turn
    is stored) when the request waits in fal's queue or has run for ``status_delay``
    seconds; edits that status message into the first part of the answer. ``reply_to`` is
    the user's message the answer replies to. A resumed turn adopts its stored status
    message and skips the reply parts already posted.
    """

    def __init__(
        self,
        channel: discord.abc.Messageable,
        *,
        reply_to: int | None = None,
        status_delay: float = 2.0,
        attachment_names: Mapping[str, Sequence[str]] | None = None,
        hooks: DeliveryHooks | None = None,
    ) -> None:
        self._channel = channel
        self._reply_to = reply_to
        self._status_delay = status_delay
        self._names = attachment_names or {}
        self._hooks = hooks or DeliveryHooks()
        self._turn: Turn | None = None
        self._status: discord.Message | discord.PartialMessage | None = None
        self._status_text = render.status_running()
        self._status_lock = asyncio.Lock()
        self._done = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start typing and the status timer."""
        if not self._tasks:
            self._tasks.append(asyncio.create_task(self._typing(), name="typing"))
            self._tasks.append(asyncio.create_task(self._status_after_delay(), name="status"))

    async def attach(self, turn: Turn) -> None:
        async with self._status_lock:
            self._turn = turn
            if self._status is None and turn.status_message_id and self._can_fetch():
                if turn.reply_message_ids:
                    # Parts of the answer are out: the status message already became the
                    # first of them, and must not turn back into a status.
                    self._done.set()
                    return
                # A resumed turn: its progress message from before the restart.
                self._status = self._partial(int(turn.status_message_id))
            if self._status is not None and not self._done.is_set():
                await self._edit_status(self._status_text)

    async def close(self) -> None:
        self._done.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, discord.HTTPException):
                await task
        self._tasks.clear()

    async def _typing(self) -> None:
        try:
            async with self._channel.typing():
                await self._done.wait()
        except discord.HTTPException as exc:
            log.debug("typing indicator failed: %s", exc)

    async def _status_after_delay(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._status_delay):
                await self._done.wait()
            return
        await self._show_status(self._status_text)

    # -- Delivery port -----------------------------------------------------------------------

    async def progress(self, progress: Progress) -> None:
        if progress.state == "queued":
            self._status_text = render.status_queued(progress.queue_position)
            await self._show_status(self._status_text)
        else:
            self._status_text = render.status_running()
            if self._status is not None:
                await self._show_status(self._status_text)

    async def deliver(self, turn: Turn, reply: ModelReply, warnings: Sequence[str]) -> list[str]:
        rendered = render.compose_reply(reply.output, reply.reasoning, warnings)
        files = [(f.filename, f.data) for f in rendered.files]
        return await self._post(
            turn, rendered.messages, files, retry=True, done=list(turn.reply_message_ids)
        )

    async def fail(self, turn: Turn | None, error: Exception) -> list[str]:
        text = error_text(error, attachment_names=self._sent_names(turn))
        return await self._post(turn, [text], [], retry=turn is not None, done=[], answer=False)

    async def stopped(self, turn: Turn, by: str) -> None:
        text = f"⏹️ Stopped by {render_name(by)}." if by else "⏹️ Stopped."
        await self._post(turn, [text], [], retry=False, done=[], answer=False)

    async def supersede(self, old: Turn) -> None:
        """Mark the old answer's last message as replaced (and drop its Retry button)."""
        if not old.reply_message_ids or not self._can_fetch():
            return
        try:
            message = await self._channel.fetch_message(int(old.reply_message_ids[-1]))
            if SUPERSEDED_NOTE not in message.content:
                # Cut the end, not the start: an opening spoiler or fence must stay.
                content = message.content[: 2000 - len(SUPERSEDED_NOTE)] + SUPERSEDED_NOTE
                await message.edit(content=content, view=None, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as exc:
            log.info("could not mark the superseded answer of turn %s: %s", old.id, exc)

    def _sent_names(self, turn: Turn | None) -> dict[str, Sequence[str]]:
        """The names of the attachments as sent, by field. They come from the plan; an
        attachment that could not be downloaded was left out of the request, so the plan's
        names no longer line up with fal's indexes: then no name at all rather than the
        wrong one (the reply says "image 2" instead)."""
        names = dict(self._names)
        if turn is not None:
            for field, sent in (("image_urls", turn.image_urls), ("video_urls", turn.video_urls)):
                if len(names.get(field, ())) != len(sent):
                    names.pop(field, None)
        return names

    # -- sending -----------------------------------------------------------------------------

    def _can_fetch(self) -> bool:
        return hasattr(self._channel, "get_partial_message")

    def _partial(self, message_id: int) -> discord.PartialMessage:
        return self._channel.get_partial_message(message_id)  # type: ignore[attr-defined,no-any-return]

    def _status_view(self) -> discord.ui.View | None:
        return stop_view(self._turn.id) if self._turn is not None else None

    async def _show_status(self, text: str) -> None:
        async with self._status_lock:
            if self._done.is_set():
                return
            if self._status is None:
                try:
                    kwargs: dict[str, Any] = {"allowed_mentions": NO_MENTIONS, **self._reference()}
                    if (view := self._status_view()) is not None:
                        kwargs["view"] = view
                    if self._turn is not None:
                        # The status becomes the answer's first part: same nonce, so a
                        # restart that lost its id gets it back instead of a second message.
                        kwargs["nonce"] = part_nonce(self._turn, 0)
                    self._status = await self._channel.send(text, **kwargs)
                except discord.HTTPException as exc:
                    log.warning("status message failed: %s", exc)
                    return
                if self._turn is not None:
                    await self._record(self._hooks.on_status, self._turn.id, str(self._status.id))
            elif getattr(self._status, "content", None) != text:
                await self._edit_status(text)

    async def _edit_status(self, text: str) -> None:
        assert self._status is not None
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
        turn = self._turn
        if turn is not None and turn.status_message_id != str(edited.id):
            await self._record(self._hooks.on_status, turn.id, str(edited.id))

    def _reference(self) -> dict[str, Any]:
        if self._reply_to is None or not self._can_fetch():
            return {}
        message = self._partial(self._reply_to)
        return {"reference": message.to_reference(fail_if_not_exists=False)}

    async def _post(
        self,
        turn: Turn | None,
        contents: Sequence[str],
        files: Sequence[tuple[str, bytes]],
        *,
        retry: bool,
        done: list[str],
        answer: bool = True,
    ) -> list[str]:
        """Post the parts in order, editing the status message into the first; the files go
        with the first part, the Retry button with the last. ``done`` holds the ids of parts
        already posted (by an earlier, interrupted run): those are skipped. Each part carries
        a nonce Discord enforces, so a part re-sent after a crash is not posted twice.
        Returns the message ids."""
        async with self._status_lock:
            self._done.set()
            status, self._status = self._status, None
        await self.close()
        ids = list(done[: len(contents)])
        try:
            for index in range(len(ids), len(contents)):
                content = contents[index]
                first, last = index == 0, index == len(contents) - 1
                kwargs: dict[str, Any] = {"allowed_mentions": NO_MENTIONS}
                if last and retry and turn is not None:
                    kwargs["view"] = retry_view(turn.id)
                elif first and status is not None:
                    kwargs["view"] = None  # the Stop button goes with the status
                if first and status is None:
                    kwargs.update(self._reference())
                if answer and turn is not None and not (first and status is not None):
                    kwargs["nonce"] = part_nonce(turn, index)
                message = await self._with_retries(
                    partial(
                        self._send_part,
                        status if first else None,
                        content,
                        kwargs,
                        files if first else (),
                    )
                )
                ids.append(str(message.id))
                more = index < len(contents) - 1  # the last part is stored as delivered
                if turn is not None and more:
                    await self._record(self._hooks.on_parts, turn.id, list(ids))
        except discord.Forbidden as exc:
            log.warning(
                "cannot post in channel %s: missing permission (%s): %s",
                getattr(self._channel, "id", "?"),
                PERMISSION_HINT,
                exc.text,
            )
            raise DeliveryError(f"missing permission to post: {exc.text}") from exc
        except discord.HTTPException as exc:
            log.warning("posting failed with HTTP %s: %s", exc.status, exc.text)
            raise DeliveryError(f"Discord refused the message (HTTP {exc.status})") from exc
        return ids

    @staticmethod
    async def _record(hook: Callable[[int, Any], Awaitable[None]] | None, *args: Any) -> None:
        """Store what was posted, best effort: the post stands even if the database does not
        take it now (a restart then leans on the message nonces)."""
        if hook is None:
            return
        try:
            await hook(*args)
        except SeedBotError as exc:
            log.warning("could not record a posted message: %s", exc)

    async def _send_part(
        self,
        status: discord.Message | discord.PartialMessage | None,
        content: str,
        kwargs: dict[str, Any],
        files: Sequence[tuple[str, bytes]],
    ) -> discord.Message | discord.PartialMessage:
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


def part_nonce(turn: Turn, index: int) -> str:
    """The nonce of part ``index`` of a turn's reply (the status message is part 0)."""
    return f"{turn.id}.{turn.attempt}.{index}"


def render_name(name: str) -> str:
    return f"**{escape_name(name)}**"
