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
from tests.fakes.discord import FakeInteraction, run_client
from tests.fakes.discord.events import MessageCreated, MessageEdited
from tests.fakes.discord.models import FakeChannel, FakeGuild, FakeMessage, FakeUser, UserFile
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
        "test_e2e_autoreply",
        "test_e2e_personas",
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

    def prompts(self) -> list[str]:
        """The prompts the bot sent to fal, in order."""
        return [r.input["prompt"] for r in self.fal.requests.values()]

    async def converse(
        self, author: FakeUser, text: str, *, settle: bool = False, **kwargs: Any
    ) -> tuple[FakeChannel, FakeMessage]:
        """``author`` opens a conversation with ``text`` (``kwargs`` as for ``mention``); its
        thread and the bot's answer. ``settle``: also wait until the bot is idle (the turn
        is recorded as delivered in the store too)."""
        since = self.fake.mark()
        _, thread = await self.start_thread(author, text, **kwargs)
        answer = await self.answer_in(thread, since=since, contains="echo:")
        if settle:
            await self.app.bot.idle()
        return thread, answer

    async def say(
        self, author: FakeUser, thread: FakeChannel, text: str, *, settle: bool = False
    ) -> FakeMessage:
        """``author`` writes ``text`` in a bound thread; the bot's answer (speakers are named
        once a thread has two; a long answer is split, so its start is looked for).
        ``settle`` as for ``converse``."""
        since = self.fake.mark()
        await self.fake.send_message(author, thread, text)
        answer = await self.fake.wait_for_post(
            thread, lambda m: "echo:" in m.content, contains=text[:40], since=since, timeout=10
        )
        if settle:
            await self.app.bot.idle()
        return answer


async def ephemeral_answer(
    h: Harness, user: FakeUser, channel: FakeChannel, name: str, options: dict[str, Any]
) -> str:
    """``user`` runs ``/name`` with ``options``; the text of its private answer."""
    interaction = await h.fake.invoke_command(user, channel, name, options)
    response = await interaction.wait_response()
    assert response.ephemeral and response.message is not None, response
    return response.message.content


async def status_with_stop(h: Harness, thread: FakeChannel, since: int) -> FakeMessage:
    """The bot's status message once it carries a Stop button."""

    def has_stop(m: FakeMessage) -> bool:
        return m.channel_id == thread.id and any(i.startswith("seed:stop:") for i in m.custom_ids())

    event = await h.fake.wait_for(
        lambda e: (
            (isinstance(e, MessageCreated) and e.by_bot and has_stop(e.message))
            or (isinstance(e, MessageEdited) and has_stop(e.after))
        ),
        since=since,
        timeout=10,
        what="a status message with a Stop button",
    )
    return event.message if isinstance(event, MessageCreated) else event.after  # type: ignore[attr-defined]


@dataclass
class Away:
    """A server that did not add the bot, with carol (who installed the app) in it."""

    guild: FakeGuild
    channel: FakeChannel
    carol: FakeUser


def away(h: Harness) -> Away:
    guild = h.fake.create_guild("Elsewhere", bot_member=False)
    channel = h.fake.create_text_channel(guild, "chat")
    carol = h.fake.create_user("carol", global_name="Carol")
    h.fake.add_member(guild, carol)
    h.fake.install_for_user(carol)
    return Away(guild, channel, carol)


def reply_button(message: FakeMessage) -> str:
    (custom_id,) = [c for c in message.custom_ids() if c.startswith("seed:reply:")]
    return custom_id


async def answered(interaction: FakeInteraction, contains: str) -> FakeMessage:
    """The interaction's last answer message (the original or a follow-up) once the answer
    containing ``contains`` is out; the Reply button is on it."""

    def done(message: FakeMessage) -> bool:
        return any(contains in m.content for m in [message, *interaction.followups])

    original = await interaction.wait_original(done, timeout=10)
    return ([original, *interaction.followups])[-1]


async def reply_through(
    h: Harness, user: FakeUser, answer: FakeMessage, text: str
) -> FakeInteraction:
    """``user`` presses Reply under ``answer`` and submits ``text`` in the modal."""
    press = await h.fake.press_button(user, answer, reply_button(answer))
    assert (await press.wait_response()).type == 9
    assert press.modal is not None
    (field,) = [
        c["custom_id"]
        for row in press.modal["components"]
        for c in row.get("components", [row.get("component", {})])
    ]
    return await h.fake.submit_modal(user, press, {field: text})


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
