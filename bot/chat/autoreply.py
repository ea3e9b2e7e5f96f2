"""Each channel's autoreply mode (``/autoreply``), as the message router asks for it: for
every message of every channel the bot sees that does not mention it. A flood must not
become a database query per message, so the modes are kept for a short while, one lookup
per channel at a time; a change made here (a settings command) applies at once, one made by
another process (a shard) or a config reload within ``ttl`` seconds."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from bot.domain.cache import Lru
from bot.domain.errors import StorageError
from bot.domain.models import Autoreply
from bot.domain.service import ConversationService

log = logging.getLogger(__name__)

MODES_KEPT = 4096  # channels whose mode is remembered
DEFAULT_TTL = 30.0
OFF: Autoreply = "off"


class AutoreplyModes:
    def __init__(
        self,
        service: Callable[[], ConversationService],
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._service = service
        self._ttl = ttl
        self._clock = clock
        # channel id -> (read at, mode); a stale entry still answers while the database is away.
        self._modes: Lru[str, tuple[float, Autoreply]] = Lru(MODES_KEPT)
        self._reading: dict[str, asyncio.Future[Autoreply]] = {}

    async def mode(self, channel_id: str, guild_id: str) -> Autoreply:
        """The mode of ``channel_id`` (its own, else its server's, else the config's)."""
        kept = self._modes.get(channel_id)
        if kept is not None and self._clock() - kept[0] < self._ttl:
            return kept[1]
        reading = self._reading.get(channel_id)
        if reading is not None:  # a burst of messages: one lookup answers them all
            return await asyncio.shield(reading)
        future: asyncio.Future[Autoreply] = asyncio.get_running_loop().create_future()
        self._reading[channel_id] = future
        try:
            mode = await self._read(channel_id, guild_id, kept)
            future.set_result(mode)
            return mode
        finally:
            del self._reading[channel_id]
            if not future.done():  # cancelled: the waiters read again
                future.cancel()

    async def _read(
        self, channel_id: str, guild_id: str, kept: tuple[float, Autoreply] | None
    ) -> Autoreply:
        try:
            effective = await self._service().settings.effective(
                thread_id=None, channel_id=channel_id, guild_id=guild_id
            )
        except StorageError as exc:
            # Messages nobody addressed to the bot: no error reply, the last known mode.
            log.warning("autoreply mode of channel %s unknown: %s", channel_id, exc)
            return kept[1] if kept is not None else OFF
        mode: Autoreply = effective.values.autoreply or OFF
        self._modes.put(channel_id, (self._clock(), mode))
        return mode

    def forget(self) -> None:
        """A setting changed: read every mode afresh (a server's change reaches its channels)."""
        self._modes.clear()
