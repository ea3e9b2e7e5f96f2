"""End-to-end harness: the bot built by the real entry-point code, connected to the fake
Discord, talking to the fake fal, storing in a real SQLite file."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from yarl import URL

from bot.app import App, build_app
from bot.config import Config, load_config
from bot.web.pages import Network
from tests.fakes.discord import run_client
from tests.fakes.discord.models import FakeChannel, FakeMessage, FakeUser, UserFile
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.discord.standard import StandardWorld
from tests.fakes.fal import DEFAULT_KEY, FakeFal
from tests.fakes.pages import fake_network


def harness_env(fake: FakeDiscord, fal: FakeFal, tmp_path: Path, **env: str) -> dict[str, str]:
    cdn = URL(fake.api_base)
    config_file = tmp_path / "config.toml"
    if not config_file.exists():
        config_file.write_text("")
    return {
        "DISCORD_TOKEN": fake.token,
        "FAL_KEY": DEFAULT_KEY,
        "SEED_BOT_DISCORD__API_BASE": fake.api_base,
        "SEED_BOT_DISCORD__GATEWAY_URL": fake.gateway_url,
        "SEED_BOT_DISCORD__CDN_HOSTS": f"{cdn.host}:{cdn.port}",
        "SEED_BOT_FAL__QUEUE_BASE": fal.base_url,
        "SEED_BOT_FAL__REST_BASE": fal.base_url,
        "SEED_BOT_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/bot.db",
        "SEED_BOT_CONFIG": str(config_file),
        # Each message its own turn unless a test asks for batching.
        "SEED_BOT_DISCORD__BATCH_WINDOW_SECONDS": "0",
        **env,
    }


def harness_config(fake: FakeDiscord, fal: FakeFal, tmp_path: Path, **env: str) -> Config:
    values = harness_env(fake, fal, tmp_path, **env)
    return load_config(None, values, required_secrets=("discord", "fal"))


@dataclass
class Harness:
    fake: FakeDiscord
    world: StandardWorld
    fal: FakeFal
    app: App
    tmp_path: Path
    stack: contextlib.AsyncExitStack

    async def stop(self) -> None:
        """Stop this bot (as a shutdown would: turns in flight stay stored)."""
        await self.stack.aclose()

    @property
    def bot_user(self) -> FakeUser:
        return self.fake.bot_user

    async def mention(
        self,
        author: FakeUser,
        text: str,
        *,
        channel: FakeChannel | None = None,
        files: Sequence[UserFile] = (),
        reply_to: FakeMessage | None = None,
    ) -> FakeMessage:
        """``author`` mentions the bot in a channel (default ``#general``)."""
        return await self.fake.send_message(
            author,
            channel or self.world.channel,
            f"<@{self.bot_user.id}> {text}",
            files=files,
            reply_to=reply_to,
        )

    async def answer_in(
        self, thread: FakeChannel | int, *, since: int, contains: str | None = None
    ) -> FakeMessage:
        """The first message the bot posts (or edits its status message into) in ``thread``
        after ``since``."""
        return await self.fake.wait_for_post(thread, contains=contains, since=since, timeout=10)

    async def start_thread(
        self, author: FakeUser, text: str, **kwargs: Any
    ) -> tuple[FakeMessage, FakeChannel]:
        since = self.fake.mark()
        message = await self.mention(author, text, **kwargs)
        thread = await self.fake.wait_for_thread(
            self.world.channel, from_message=message, since=since
        )
        return message, thread


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest_asyncio.fixture
async def make_harness(
    fake_discord: FakeDiscord,
    discord_world: StandardWorld,
    fake_fal: FakeFal,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[HarnessFactory]:
    """Start the bot with extra config (environment-style keys) and, when given, its own
    status and typing delays; stopped after the test. A
    test may stop one bot and start another on the same database (a restart). The bot runs
    in the test's directory (on PostgreSQL its submission journal goes in the working
    directory)."""
    monkeypatch.chdir(tmp_path)
    started: list[Harness] = []

    async def make(
        *,
        status_delay: float = 0.5,
        typing_delay: float | None = None,
        network: Network | None = None,
        **env: str,
    ) -> Harness:
        values = harness_env(fake_discord, fake_fal, tmp_path, **env)
        config = load_config(None, values, required_secrets=("discord", "fal"))
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            app = await stack.enter_async_context(
                build_app(
                    config,
                    sync_commands=True,
                    reload=lambda: load_config(None, values, required_secrets=("discord", "fal")),
                    guild_ready_timeout=0.0,
                    status_delay=status_delay,
                    network=network or fake_network(),
                    **({} if typing_delay is None else {"typing_delay": typing_delay}),
                )
            )
            await stack.enter_async_context(run_client(app.bot, fake_discord))
            await app.bot.resumed.wait()
        except BaseException:
            await stack.aclose()
            raise
        harness = Harness(fake_discord, discord_world, fake_fal, app, tmp_path, stack)
        started.append(harness)
        return harness

    try:
        yield make
    finally:
        for harness in reversed(started):
            await harness.stack.aclose()


@pytest_asyncio.fixture
async def harness(make_harness: HarnessFactory) -> Harness:
    return await make_harness()
