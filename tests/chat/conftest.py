"""End-to-end harness: the bot built by the real entry-point code, connected to the fake
Discord, talking to the fake fal, storing in a real SQLite file and, for the tests that store
conversations, in a fresh PostgreSQL database as well (when ``SEED_BOT_TEST_POSTGRES_URL`` is
set; see tests/storage/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url
from yarl import URL

from bot.app import App, build_app
from bot.config import Config, load_config
from bot.storage.migrate import upgrade
from bot.web.pages import Network
from tests.fakes.discord import run_client
from tests.fakes.discord.models import FakeChannel, FakeMessage, FakeUser, UserFile
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.discord.standard import StandardWorld
from tests.fakes.fal import DEFAULT_KEY, FakeFal
from tests.fakes.pages import fake_network
from tests.storage.conftest import (
    BACKENDS,
    create_postgres_database,
    drop_postgres_database,
    fresh_postgres_database,
    postgres_base_url,
)

# The end-to-end tests that store conversations run on PostgreSQL too: SQLite ignores
# declared column lengths and takes NUL bytes, PostgreSQL refuses both, so a path tested on
# SQLite alone can fail on PostgreSQL unseen. Every test of these modules: each interaction
# path (/ask in and out of servers, Ask Seed, Reply, Stop, with the invoker's rights, across
# restarts), the controls (Stop, Retry, the burst merge), the conversations and turns,
# deleted messages, settings, costs, exports, forgetting. (A test may ask for both itself:
# ``pytest.mark.parametrize("chat_backend", BACKENDS, indirect=True)``.)
BOTH_DATABASES_MODULES = frozenset(
    {
        "test_e2e_access_edges",
        "test_e2e_commands",
        "test_e2e_controls",
        "test_e2e_conversation",
        "test_e2e_costs",
        "test_e2e_deletions",
        "test_e2e_everywhere",
        "test_e2e_guards",
        "test_e2e_interaction_restart",
        "test_e2e_links",
        "test_e2e_privacy",
        "test_e2e_stored_text",
        "test_e2e_turns",
    }
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "chat_backend" not in metafunc.fixturenames:
        return
    if metafunc.module.__name__.rpartition(".")[2] in BOTH_DATABASES_MODULES:
        metafunc.parametrize("chat_backend", BACKENDS, indirect=True)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/bot.db"


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
        "SEED_BOT_DATABASE__URL": sqlite_url(tmp_path),
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
    # The environment-style config it was started with (its database included).
    values: dict[str, str]

    async def stop(self) -> None:
        """Stop this bot (as a shutdown would: turns in flight stay stored)."""
        await self.stack.aclose()

    def config(self, **env: str) -> Config:
        """This bot's config with ``env`` changed (for a reload)."""
        return load_config(None, {**self.values, **env}, required_secrets=("discord", "fal"))

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


@pytest.fixture
def chat_backend(request: pytest.FixtureRequest) -> str:
    """The database the harness stores in: SQLite, and PostgreSQL as well for the tests
    ``pytest_generate_tests`` gives both."""
    name: str = getattr(request, "param", "sqlite")
    if name == "postgresql" and postgres_base_url() is None:
        pytest.skip("PostgreSQL end-to-end tests need SEED_BOT_TEST_POSTGRES_URL")
    return name


@pytest.fixture(scope="session")
def migrated_postgres_template() -> Iterator[str | None]:
    """A PostgreSQL database with the schema, made once per session, that each end-to-end
    test's database is copied from (a copy is several times quicker than migrating); None
    without PostgreSQL."""
    base = postgres_base_url()
    if base is None:
        yield None
        return

    async def make() -> str:
        url = await create_postgres_database(base)
        await upgrade(url)
        return url

    url = asyncio.run(make())
    try:
        yield make_url(url).database
    finally:
        asyncio.run(drop_postgres_database(base, url))


@pytest_asyncio.fixture
async def chat_database_url(
    chat_backend: str, tmp_path: Path, migrated_postgres_template: str | None
) -> AsyncIterator[str]:
    """The harness's database: a SQLite file in the test's directory, or a fresh PostgreSQL
    database with the schema (the bot migrates only SQLite by itself)."""
    if chat_backend == "sqlite":
        yield sqlite_url(tmp_path)
        return
    base = postgres_base_url()
    assert base is not None and migrated_postgres_template is not None
    async with fresh_postgres_database(base, template=migrated_postgres_template) as url:
        yield url


@pytest_asyncio.fixture
async def make_harness(
    fake_discord: FakeDiscord,
    discord_world: StandardWorld,
    fake_fal: FakeFal,
    tmp_path: Path,
    chat_database_url: str,
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
        env.setdefault("SEED_BOT_DATABASE__URL", chat_database_url)
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
        harness = Harness(fake_discord, discord_world, fake_fal, app, tmp_path, stack, values)
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
