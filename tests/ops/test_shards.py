"""Two ``seed-bot run`` processes splitting two shards over one PostgreSQL, against the fake
Discord with servers on both shards: each message is answered by exactly one process (the one
running its server's shard), quotas hold across both, settings stored through one process
apply in the process that takes its shard over, and each /readyz reflects its own shards."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.storage.migrate import upgrade
from tests.fakes.discord.events import GatewayIdentified, GatewayResumed
from tests.fakes.discord.models import FakeChannel, FakeGuild, FakeUser
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.fal import FakeFal
from tests.reliability.botproc import BotProcess, bot_env
from tests.storage.conftest import POSTGRES_ENV, fresh_postgres_database, postgres_base_url

pytestmark = pytest.mark.skipif(
    postgres_base_url() is None,
    reason=f"shards over processes share a PostgreSQL: set {POSTGRES_ENV}",
)

LISTENING = re.compile(r"health and metrics on http://127\.0\.0\.1:(\d+)")


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    base = postgres_base_url()
    assert base is not None
    async with fresh_postgres_database(base) as url:
        await upgrade(url)
        yield url


class Shard:
    """One bot process and the base URL of its HTTP endpoint."""

    def __init__(self, bot: BotProcess, base: str) -> None:
        self.bot = bot
        self.base = base

    async def readyz(self) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.base}/readyz") as r:
            return r.status, json.loads(await r.text())


async def start(fake: FakeDiscord, fal: FakeFal, tmp_path: Path, db: str, shard_ids: str) -> Shard:
    env = bot_env(
        fake,
        fal,
        tmp_path,
        SEED_BOT_DATABASE__URL=db,
        SEED_BOT_DISCORD__SHARD_COUNT="2",
        SEED_BOT_DISCORD__SHARD_IDS=shard_ids,
        SEED_BOT_HTTP__LISTEN="127.0.0.1:0",
        SEED_BOT_LIMITS__USER_REQUESTS="3",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        "--sync",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    bot = BotProcess(proc)
    try:
        match = LISTENING.search(await bot.wait_for_log("health and metrics on", timeout=20))
        assert match is not None
        await bot.wait_for_log("connected as", timeout=20)
        await fake.sync_gateway(timeout=10)
    except BaseException:
        await bot.kill()
        raise
    return Shard(bot, f"http://127.0.0.1:{match.group(1)}")


def guilds_on_both_shards(fake: FakeDiscord, users: list[FakeUser]) -> dict[int, FakeGuild]:
    """A server on each of the two shards (a guild's shard is ``(id >> 22) % 2``)."""
    by_shard: dict[int, FakeGuild] = {}
    while len(by_shard) < 2:
        guild = fake.create_guild(f"Server {len(fake.guilds)}")
        shard = (guild.id >> 22) % 2
        if shard in by_shard:
            continue
        by_shard[shard] = guild
        fake.create_text_channel(guild, "general")
        for user in users:
            fake.add_member(guild, user)
    return by_shard


def general(fake: FakeDiscord, guild: FakeGuild) -> FakeChannel:
    [channel] = [
        c for c in fake.channels.values() if c.guild_id == guild.id and c.name == "general"
    ]
    return channel


@pytest.mark.timeout(120)
async def test_two_processes_split_the_shards(
    fake_discord: FakeDiscord, fake_fal: FakeFal, tmp_path: Path, postgres_url: str
) -> None:
    fake = fake_discord
    alice = fake.create_user("alice", global_name="Alice")
    bob = fake.create_user("bob", global_name="Bob")
    guilds = guilds_on_both_shards(fake, [alice, bob])
    channels = {shard: general(fake, guild) for shard, guild in guilds.items()}
    me = fake.bot_user.id

    shards = [await start(fake, fake_fal, tmp_path, postgres_url, str(i)) for i in (0, 1)]
    try:
        for shard in shards:
            assert await shard.readyz() == (200, {"status": "ready"})
        sessions = sorted((s.shard_id, s.shard_count) for s in fake.connected_sessions())
        assert sessions == [(0, 2), (1, 2)]

        async def ask(user: FakeUser, shard: int, text: str) -> FakeChannel:
            since = fake.mark()
            message = await fake.send_message(user, channels[shard], f"<@{me}> {text}")
            thread = await fake.wait_for_thread(from_message=message, since=since, timeout=15)
            await fake.wait_for_message(thread, contains=f"echo: {text}", since=since, timeout=15)
            # Answered by the process running that shard, and by it alone.
            stored = f"stored for message {message.id}"
            await shards[shard].bot.wait_for_log(stored, timeout=10)
            assert stored not in shards[1 - shard].bot.log
            return thread

        # Each message is answered once, by its shard's process.
        thread_a = await ask(alice, 0, "on shard zero")
        thread_b = await ask(alice, 1, "on shard one")
        since = fake.mark()
        await fake.send_message(alice, thread_b, "again on shard one")
        await fake.wait_for_message(thread_b, contains="echo: again", since=since, timeout=15)
        for thread, count in ((thread_a, 1), (thread_b, 2)):
            answers = [m for m in fake.bot_messages(thread) if "echo:" in m.content]
            assert len(answers) == count, [m.content for m in fake.bot_messages(thread)]

        # Alice used her 3 requests on both processes: shard 0's process refuses the 4th.
        since = fake.mark()
        await fake.send_message(alice, channels[0], f"<@{me}> one too many")
        refusal = await fake.wait_for_message(
            channels[0], contains="request", since=since, timeout=15
        )
        assert "echo" not in refusal.content
        assert len(fake_fal.requests) == 3

        # Bob sets a system prompt in his thread through shard 0's process.
        bobs = await ask(bob, 0, "bob here")
        interaction = await fake.invoke_command(bob, bobs, "system", {"prompt": "Be a pirate."})
        response = await interaction.wait_response()
        assert response.message is not None and "System prompt set" in response.message.content

        # /readyz of each process reflects its own shards: shard 1 goes down.
        fake.refuse_gateway()
        assert fake.drop_gateway(shard_id=1) == 1
        await shards[1].bot.wait_for_log("Attempting a reconnect for shard ID 1", timeout=15)
        assert await shards[1].readyz() == (
            503,
            {"status": "not ready", "not_ready": {"shard 1": "not connected"}},
        )
        assert await shards[0].readyz() == (200, {"status": "ready"})
        since = fake.mark()
        fake.refuse_gateway(False)
        await fake.wait_for(
            lambda e: isinstance(e, GatewayResumed | GatewayIdentified),
            since=since,
            timeout=20,
            what="shard 1 reconnecting",
        )
        await fake.sync_gateway(timeout=10)
        assert await shards[1].readyz() == (200, {"status": "ready"})

        # Shard 0's process stops; shard 1's is restarted to run both: it applies the
        # setting the other stored.
        for shard in shards:
            shard.bot.send(signal.SIGTERM)
            assert await shard.bot.wait(30) == 0
        both = await start(fake, fake_fal, tmp_path, postgres_url, "0,1")
        shards.append(both)
        since = fake.mark()
        await fake.send_message(bob, bobs, "arr?")
        await fake.wait_for_message(bobs, contains="echo: arr?", since=since, timeout=15)
        last = list(fake_fal.requests.values())[-1]
        assert last.input.get("system_prompt") == "Be a pirate."
    finally:
        for shard in shards:
            await shard.bot.kill()
    for shard in shards:
        assert "Traceback" not in shard.bot.log
