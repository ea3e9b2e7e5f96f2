"""Waiting for Discord to unfurl a message's links: it adds the embeds a moment after the
message (MESSAGE_UPDATE). A message with a link and no embed yet waits for them, briefly,
in its own task: other messages and conversations go on meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict

import discord

from bot.chat import convert

# Messages whose embeds arrived, remembered in case the update overtakes the wait for it
# (the message may have left discord.py's cache, which would have updated it in place).
RECENT_LIMIT = 512


class Unfurls:
    """The embeds Discord adds to messages, as they arrive."""

    def __init__(self) -> None:
        self._waiting: dict[int, asyncio.Event] = {}
        self._recent: OrderedDict[int, discord.Message] = OrderedDict()
        self.arrived = asyncio.Event()  # set on each message's embeds arriving (tests wait on it)

    def updated(self, payload: discord.RawMessageUpdateEvent) -> None:
        """A message was updated: if it now has embeds, whoever waits for them goes on."""
        if not payload.data.get("embeds"):
            return
        self._recent[payload.message_id] = payload.message
        if len(self._recent) > RECENT_LIMIT:
            self._recent.popitem(last=False)
        waiter = self._waiting.get(payload.message_id)
        if waiter is not None:
            waiter.set()
        self.arrived.set()

    def unfurled(self, message_id: int) -> bool:
        """Whether the message's embeds arrived lately (and were not waited for)."""
        return message_id in self._recent

    async def settled(self, message: discord.Message, timeout: float) -> discord.Message:
        """``message`` with its embeds, once Discord has unfurled its links or ``timeout``
        seconds have passed (then as it is: its links are read as pages)."""
        if timeout <= 0 or not convert.awaits_unfurl(message):
            return message
        waiter = self._waiting.setdefault(message.id, asyncio.Event())
        try:
            if message.id not in self._recent:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await waiter.wait()
        finally:
            self._waiting.pop(message.id, None)
        updated = self._recent.pop(message.id, None)
        return updated if updated is not None and not message.embeds else message
