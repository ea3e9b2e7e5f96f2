"""The once-a-minute housekeeping (bot/chat/housekeeping.py): idle buckets leave, and the
heap is handed back to the system once per burst, never while turns run."""

from __future__ import annotations

import platform

import pytest

from bot.chat import housekeeping
from bot.chat.bot import ChatOptions, SeedBot
from bot.chat.housekeeping import Housekeeping
from bot.chat.ratelimits import IDLE_BUCKET_SECONDS
from bot.domain.slots import Slots
from bot.ops.heap import trim_heap


async def test_the_heap_is_trimmed_once_after_a_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[None] = []

    def counted() -> bool:
        trims.append(None)
        return True

    monkeypatch.setattr(housekeeping, "trim_heap", counted)
    slots = Slots(2)
    keeping = Housekeeping(SeedBot(ChatOptions()), slots)
    keeping.sweep()
    assert trims == []  # nothing ran yet
    async with slots.hold(), slots.hold():
        keeping.sweep()
        assert trims == []  # turns running
    keeping.sweep()
    assert len(trims) == 1
    keeping.sweep()
    assert len(trims) == 1  # no turn since


async def test_idle_buckets_leave_on_the_sweep() -> None:
    bot = SeedBot(ChatOptions())
    bucket = bot.http.get_ratelimit("POST /channels/1/typing")
    bucket._last_request -= IDLE_BUCKET_SECONDS + 1
    Housekeeping(bot, Slots(1)).sweep()
    assert bot.http._buckets == {}


def test_the_heap_is_trimmed_where_the_allocator_is_glibc() -> None:
    assert trim_heap() is (platform.libc_ver()[0] == "glibc")
