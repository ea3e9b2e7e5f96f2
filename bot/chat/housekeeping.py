"""Once a minute, what keeps an idle conversation costing next to nothing: discord.py's idle
rate-limit buckets and idle threads leave its caches (``ratelimits``, ``threadcache``), and
after a burst of turns the heap freed is handed back to the system (``bot/ops/heap.py``)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import discord

from bot.chat.ratelimits import sweep_idle_buckets
from bot.chat.threadcache import evict_idle_threads
from bot.domain.slots import Slots
from bot.ops.heap import trim_heap

log = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 60.0


class Housekeeping:
    """The sweeps of one client; ``slots`` tells when a burst of turns has ended."""

    def __init__(self, client: discord.Client, slots: Slots) -> None:
        self._client = client
        self._slots = slots
        self._trimmed_at = 0  # slots granted when the heap was last trimmed

    def sweep(self) -> None:
        """One round: buckets, threads, and the heap when a burst has ended since the last."""
        now = asyncio.get_running_loop().time()
        buckets = sweep_idle_buckets(self._client.http, now)
        threads = evict_idle_threads(self._client.guilds, datetime.now(UTC))
        slots = self._slots
        trimmed = False
        if slots.held == 0 and slots.waiting == 0 and slots.granted != self._trimmed_at:
            self._trimmed_at = slots.granted
            trimmed = trim_heap()
        if buckets or threads or trimmed:
            log.debug(
                "housekeeping: %d idle rate-limit buckets, %d idle threads dropped; heap %s",
                buckets,
                threads,
                "trimmed" if trimmed else "left",
            )

    async def run(self, every: float = HOUSEKEEPING_SECONDS) -> None:
        while True:
            await asyncio.sleep(every)
            self.sweep()
