"""discord.py's rate-limit buckets (bot/chat/ratelimits.py): a new one costs no scan of all
of them, and idle ones leave on the timed sweep, well before discord.py's own five minutes."""

from __future__ import annotations

import asyncio

import pytest
from discord.http import HTTPClient, Ratelimit

from bot.chat.bot import ChatOptions, SeedBot
from bot.chat.ratelimits import IDLE_BUCKET_SECONDS, sweep_buckets_on_time, sweep_idle_buckets


async def test_new_buckets_cost_no_scan_of_all_of_them(monkeypatch: pytest.MonkeyPatch) -> None:
    scans = 0
    inactive = Ratelimit.is_inactive

    def counted(self: Ratelimit) -> bool:
        nonlocal scans
        scans += 1
        return inactive(self)

    monkeypatch.setattr(Ratelimit, "is_inactive", counted)

    def buckets_made(http: HTTPClient, count: int) -> int:
        nonlocal scans
        scans = 0
        for n in range(count):
            http.get_ratelimit(f"POST /channels/{n}/messages")
        return scans

    loop = asyncio.get_running_loop()
    assert buckets_made(HTTPClient(loop), 2000) > 1_000_000  # discord.py alone: quadratic
    ours = HTTPClient(loop)
    assert sweep_buckets_on_time(ours)
    assert buckets_made(ours, 2000) == 0
    # The bot's own client is set up so.
    bot = SeedBot(ChatOptions())
    assert buckets_made(bot.http, 2000) == 0


async def test_idle_buckets_leave_on_the_timed_sweep() -> None:
    loop = asyncio.get_running_loop()
    http = HTTPClient(loop)
    sweep_buckets_on_time(http)
    for n in range(10):  # far below discord.py's 256: it would never sweep these
        http.get_ratelimit(f"old {n}")
    now = loop.time()
    for bucket in http._buckets.values():
        bucket._last_request = now - IDLE_BUCKET_SECONDS - 1
    busy = http.get_ratelimit("old 0")
    busy.outgoing = 1  # a request under way
    window = http.get_ratelimit("old 1")
    window.expires = now + 30  # rate limited: its window must be kept
    waited = http.get_ratelimit("old 2")
    waited._pending_requests.append(loop.create_future())  # someone waits on it
    http.get_ratelimit("fresh")  # used just now
    assert sweep_idle_buckets(http, now) == 7
    assert sorted(http._buckets) == ["fresh", "old 0", "old 1", "old 2"]
    busy.outgoing = 0
    window.expires = now - 1
    waited._pending_requests.clear()
    assert sweep_idle_buckets(http, now) == 3
    assert sorted(http._buckets) == ["fresh"]
