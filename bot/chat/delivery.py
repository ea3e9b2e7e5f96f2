"""Delivery of one turn into a Discord channel: typing, the status message, the answer."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import discord

from bot.chat import render
from bot.chat.texts import error_text
from bot.domain.errors import DeliveryError
from bot.domain.models import ModelReply, Progress, Turn

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()

# Permission names by the REST route that needs them, for log lines operators can act on.
PERMISSION_HINT = "Send Messages / Send Messages in Threads / Attach Files / Read Message History"


class ChannelDelivery:
    """``Delivery`` for one turn in one channel (a thread or a DM).

    Shows typing while the model works; a status message once the request waits in fal's
    queue or has run for ``status_delay`` seconds; edits that status message into the first
    part of the answer. ``reply_to`` is the user's message the answer replies to.
    """

    def __init__(
        self,
        channel: discord.abc.Messageable,
        *,
        reply_to: int | None = None,
        status_delay: float = 2.0,
        attachment_names: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._channel = channel
        self._reply_to = reply_to
        self._status_delay = status_delay
        self._names = attachment_names or {}
        self._status: discord.Message | None = None
        self._status_text = render.status_running()
        self._status_lock = asyncio.Lock()
        self._done = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start typing and the status timer; call once, before the turn runs."""
        self._tasks.append(asyncio.create_task(self._typing(), name="typing"))
        self._tasks.append(asyncio.create_task(self._status_after_delay(), name="status-timer"))

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
            await asyncio.wait_for(self._done.wait(), self._status_delay)
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
        return await self._post(rendered.messages, files)

    async def fail(self, turn: Turn | None, error: Exception) -> list[str]:
        return await self._post([error_text(error, attachment_names=self._sent_names(turn))], [])

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

    async def _show_status(self, text: str) -> None:
        async with self._status_lock:
            if self._done.is_set():
                return
            try:
                if self._status is None:
                    self._status = await self._channel.send(
                        text, allowed_mentions=NO_MENTIONS, **self._reference()
                    )
                elif self._status.content != text:
                    self._status = await self._status.edit(content=text)
            except discord.HTTPException as exc:
                log.warning("status message failed: %s", exc)

    def _reference(self) -> dict[str, Any]:
        if self._reply_to is None or not hasattr(self._channel, "get_partial_message"):
            return {}
        message = self._channel.get_partial_message(self._reply_to)
        return {"reference": message.to_reference(fail_if_not_exists=False)}

    async def _post(self, contents: Sequence[str], files: Sequence[tuple[str, bytes]]) -> list[str]:
        """Post the parts in order (editing the status message into the first); the files go
        with the first part. Returns the message ids."""
        async with self._status_lock:
            self._done.set()
            status, self._status = self._status, None
        await self.close()
        ids: list[str] = []
        try:
            for index, content in enumerate(contents):
                first = index == 0
                attach = (
                    [discord.File(io.BytesIO(data), filename=name) for name, data in files]
                    if first
                    else []
                )
                if first and status is not None:
                    edited = await status.edit(
                        content=content, attachments=attach, allowed_mentions=NO_MENTIONS
                    )
                    ids.append(str(edited.id))
                    continue
                kwargs: dict[str, Any] = self._reference() if first else {}
                if first and attach:
                    kwargs["files"] = attach
                sent = await self._channel.send(content, allowed_mentions=NO_MENTIONS, **kwargs)
                ids.append(str(sent.id))
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
