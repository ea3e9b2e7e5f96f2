"""/healthz, /readyz and /metrics over real HTTP, from the bot built by the entry-point code
against the fake Discord and the fake fal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import App, build_app
from bot.ops.health import HealthServer, database_check
from bot.ops.metrics import Metrics
from bot.storage.engine import create_engine
from tests.chat.conftest import harness_config
from tests.fakes.discord import run_client
from tests.fakes.discord.events import GatewayIdentified, GatewayResumed
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.discord.standard import StandardWorld
from tests.fakes.fal import FakeFal


@asynccontextmanager
async def bot_with_http(
    fake: FakeDiscord, fal: FakeFal, tmp_path: Path, **env: str
) -> AsyncIterator[tuple[App, str]]:
    config = harness_config(fake, fal, tmp_path, SEED_BOT_HTTP__LISTEN="127.0.0.1:0", **env)
    async with build_app(config, guild_ready_timeout=0.0, status_delay=0.5) as app:
        assert app.health is not None
        yield app, f"http://127.0.0.1:{app.health.port}"


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        body = await response.text()
        kind = response.content_type
    return response.status, json.loads(body) if kind == "application/json" else body


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.timeout(30)
async def test_readiness_follows_the_gateway(
    fake_discord: FakeDiscord, discord_world: StandardWorld, fake_fal: FakeFal, tmp_path: Path
) -> None:
    async with bot_with_http(fake_discord, fake_fal, tmp_path) as (app, base):
        assert await get(f"{base}/healthz") == (200, {"status": "alive"})
        status, body = await get(f"{base}/readyz")
        assert status == 503
        assert body == {"status": "not ready", "not_ready": {"discord": "not connected yet"}}

        # discord.py logs each failed reconnection as an error: expected here.
        async with run_client(app.bot, fake_discord, fail_on_error_logs=False):
            assert await get(f"{base}/readyz") == (200, {"status": "ready"})

            # A gateway outage: the connection drops and reconnecting is refused.
            fake_discord.refuse_gateway()
            disconnected = asyncio.ensure_future(app.bot.wait_for("shard_disconnect", timeout=10))
            assert fake_discord.drop_gateway() == 1
            await disconnected
            status, body = await get(f"{base}/readyz")
            assert status == 503
            assert body == {"status": "not ready", "not_ready": {"shard 0": "not connected"}}
            assert (await get(f"{base}/healthz"))[0] == 200  # alive all the same

            since = fake_discord.mark()
            fake_discord.refuse_gateway(False)
            # Resumed, or identified afresh when the session could not be resumed in time.
            await fake_discord.wait_for(
                lambda e: isinstance(e, GatewayResumed | GatewayIdentified),
                since=since,
                timeout=15,
                what="a reconnection",
            )
            await fake_discord.sync_gateway()
            assert await get(f"{base}/readyz") == (200, {"status": "ready"})


@pytest.mark.timeout(30)
async def test_metrics_count_turns_by_outcome_without_content(
    fake_discord: FakeDiscord, discord_world: StandardWorld, fake_fal: FakeFal, tmp_path: Path
) -> None:
    world = discord_world
    async with (
        bot_with_http(fake_discord, fake_fal, tmp_path, SEED_BOT_LIMITS__USER_REQUESTS="1") as (
            app,
            base,
        ),
        run_client(app.bot, fake_discord),
    ):
        await app.bot.resumed.wait()
        since = fake_discord.mark()
        me = fake_discord.bot_user.id
        message = await fake_discord.send_message(
            world.alice, world.channel, f"<@{me}> secret-prompt-words"
        )
        thread = await fake_discord.wait_for_thread(
            world.channel, from_message=message, since=since
        )
        await fake_discord.wait_for_message(thread, contains="echo:", since=since, timeout=10)
        since = fake_discord.mark()
        await fake_discord.send_message(world.alice, world.channel, f"<@{me}> once more")
        await fake_discord.wait_for_message(world.channel, contains="request", since=since)

        status, text = await get(f"{base}/metrics")
    assert status == 200
    values = samples(text)

    def value(name: str, **labels: str) -> float:
        return values.get((name, frozenset(labels.items())), 0.0)

    assert value("seed_bot_turns_total", outcome="answered", kind="") == 1
    assert value("seed_bot_turns_total", outcome="refused", kind="quota") == 1
    assert value("seed_bot_turn_duration_seconds_count") == 1
    assert value("seed_bot_delivery_delay_seconds_count") == 1
    assert value("seed_bot_fal_run_seconds_count") == 1
    assert value("seed_bot_fal_calls_total", kind="submit", status="200") == 1
    assert value("seed_bot_fal_calls_total", kind="result", status="200") == 1
    assert value("seed_bot_turns_in_flight") == 0
    assert value("seed_bot_conversations_active") == 1
    assert value("seed_bot_db_transaction_seconds_count") > 3
    assert ("seed_bot_gateway_latency_seconds", frozenset({("shard", "0")})) in values
    for private in ("secret-prompt-words", "alice", "Alice", fake_discord.token, str(me)):
        assert private not in text


async def test_readyz_names_an_unreachable_database_without_its_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """/readyz needs no credentials: the reason is a category; the address (the driver's
    text) goes to the log only, and the password nowhere."""
    engine = create_engine("postgresql+asyncpg://nobody:pw-only-here@127.0.0.1:9/none")
    server = HealthServer(Metrics(), [database_check(engine)])
    try:
        await server.start("127.0.0.1", 0)
        status, body = await get(f"http://127.0.0.1:{server.port}/readyz")
    finally:
        await server.close()
        await engine.dispose()
    assert status == 503
    assert body == {"status": "not ready", "not_ready": {"database": "unavailable"}}
    logged = [r.getMessage() for r in caplog.records if "readiness" in r.getMessage()]
    assert logged and "ConnectionRefusedError" in logged[0]
    assert "pw-only-here" not in caplog.text


async def test_database_check_passes_on_a_working_database(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/ok.db")
    try:
        assert await database_check(engine)() == {}
    finally:
        await engine.dispose()
