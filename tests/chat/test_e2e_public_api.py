"""The bot with every library's probe failed (bot/internals.py): each falls back to the
public API, and a conversation works end to end as it does on the private parts: its turns
stored through SQLAlchemy's public API, discord.py's caches left as discord.py keeps them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import discord
import pytest

from bot.chat import discord_internals
from bot.chat.ratelimits import IDLE_BUCKET_SECONDS, sweep_idle_buckets
from bot.chat.threadcache import IDLE_THREAD_SECONDS, evict_idle_threads
from bot.internals import FORCE_PUBLIC_API_ENV
from bot.storage import aiosqlite_internals, sqlalchemy_internals
from tests.chat.conftest import HarnessFactory
from tests.storage.conftest import BACKENDS

PROBED = (aiosqlite_internals, sqlalchemy_internals, discord_internals)


@pytest.fixture
def public_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every probe fails (as on a library release it was not checked against)."""
    monkeypatch.setenv(FORCE_PUBLIC_API_ENV, "1")
    for module in PROBED:
        module.usable.cache_clear()
    yield
    for module in PROBED:
        module.usable.cache_clear()


@pytest.mark.usefixtures("public_api")
@pytest.mark.parametrize("chat_backend", BACKENDS, indirect=True)
async def test_a_conversation_works_with_every_library_on_its_public_api(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness()
    bot = h.app.bot
    assert not h.app.store.db.driver_path
    thread, _ = await h.converse(h.world.alice, "opening")
    await h.say(h.world.alice, thread, "and again")
    # discord.py keeps its caches as it does: its own bucket sweep, threads until archived.
    assert "_try_clear_expired_ratelimits" not in vars(bot.http)
    later = bot.loop.time() + IDLE_BUCKET_SECONDS + 1
    assert sweep_idle_buckets(bot.http, later) == 0
    an_hour_on = datetime.now(UTC) + timedelta(seconds=IDLE_THREAD_SECONDS + 1)
    assert evict_idle_threads(bot.guilds, an_hour_on) == 0
    assert isinstance(bot.get_channel(thread.id), discord.Thread)
    await h.say(h.world.alice, thread, "still here?")
    assert len(h.fake.threads(h.world.channel)) == 1
