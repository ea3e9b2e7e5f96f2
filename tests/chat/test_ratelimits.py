"""discord.py's rate-limit buckets are swept without a scan per new one (bot/chat/ratelimits.py),
and inactive ones still leave."""

from __future__ import annotations

import asyncio

import pytest
from discord.http import HTTPClient, Ratelimit

from bot.chat.bot import ChatOptions, SeedBot
from bot.chat.ratelimits import amortise_bucket_sweeps

INACTIVE_AFTER = 300  # seconds: discord.py's Ratelimit.is_inactive


def test_discord_py_still_has_the_sweep_it_replaces() -> None:
    # When this (or the library-alone count below) fails, discord.py changed how it
    # sweeps: see bot/chat/ratelimits.py.
    assert callable(getattr(HTTPClient, "_try_clear_expired_ratelimits", None))


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
    assert amortise_bucket_sweeps(ours)
    assert buckets_made(ours, 2000) < 4 * 2000
    # The bot's own client is set up so.
    bot = SeedBot(ChatOptions())
    assert buckets_made(bot.http, 2000) < 4 * 2000


async def test_inactive_buckets_still_leave() -> None:
    http = HTTPClient(asyncio.get_running_loop())
    amortise_bucket_sweeps(http)
    for n in range(300):  # swept at 256, nothing inactive yet: the next sweep comes at 512
        http.get_ratelimit(f"old {n}")
    for bucket in http._buckets.values():
        bucket._last_request -= INACTIVE_AFTER + 1  # unused for over five minutes
    for n in range(211):
        http.get_ratelimit(f"new {n}")
    assert len(http._buckets) == 511  # not swept yet
    http.get_ratelimit("new 211")
    assert sorted(http._buckets) == sorted(f"new {n}" for n in range(212))
