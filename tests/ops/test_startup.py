"""``seed-bot run`` failing at start, as an operator meets it: Discord unreachable (retried,
one line per attempt, until it comes up), the token refused (exit 2), the database
unreachable (one line), fal unreachable (a warning; the bot starts anyway). No traceback
unless ``--debug``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from tests.fakes.discord.events import GatewayIdentified
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.discord.standard import build_standard_world
from tests.fakes.fal import DEFAULT_KEY, FakeFal
from tests.reliability.botproc import ROOT, BotProcess, bot_env

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens there


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def spawn(env: dict[str, str], cwd: Path, *args: str) -> BotProcess:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        "run",
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    return BotProcess(proc)


def base_env(tmp_path: Path) -> dict[str, str]:
    return {
        "DISCORD_TOKEN": "a.token.that-is-never-accepted",
        "FAL_KEY": DEFAULT_KEY,
        "SEED_BOT_FAL__QUEUE_BASE": CLOSED,
        "SEED_BOT_FAL__REST_BASE": CLOSED,
        "SEED_BOT_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/bot.db",
    }


@pytest.mark.timeout(60)
async def test_discord_unreachable_is_retried_until_it_comes_up(tmp_path: Path) -> None:
    port = free_port()  # where Discord will be, once it is up
    fake = FakeDiscord(port=port)
    env = base_env(tmp_path) | {
        "DISCORD_TOKEN": fake.token,
        "SEED_BOT_DISCORD__API_BASE": f"http://127.0.0.1:{port}/api/v10",
        "SEED_BOT_DISCORD__GATEWAY_URL": f"ws://127.0.0.1:{port}/gateway/",
        "SEED_BOT_DISCORD__SHARD_COUNT": "1",
    }
    bot = await spawn(env, tmp_path)
    try:
        first = await bot.wait_for_log("cannot reach Discord", timeout=20)
        assert f"http://127.0.0.1:{port}/api/v10" in first and "attempt 1;" in first
        assert "ConnectionRefusedError" in first or "ClientConnectorError" in first
        await bot.wait_for_log("attempt 2;", timeout=10)
        warning = await bot.wait_for_log("fal is unreachable at start", timeout=20)
        assert "starting anyway" in warning
        async with fake:
            build_standard_world(fake)
            await fake.wait_for_event(GatewayIdentified, timeout=20)
            await bot.wait_for_log("reached Discord after", timeout=10)
            await bot.wait_for_log("connected as", timeout=10)
            bot.send(signal.SIGTERM)
            assert await bot.wait(20) == 0
    finally:
        await bot.kill()
    assert "Traceback" not in bot.log
    assert fake.token not in bot.log
    assert "voice will NOT be supported" not in bot.log
    attempts = [line for line in bot.log.splitlines() if "cannot reach Discord" in line]
    assert len(attempts) >= 2  # one line per attempt, nothing else about it


@pytest.mark.timeout(30)
async def test_a_refused_token_is_one_line_naming_discord_token_and_exit_2(
    fake_discord: FakeDiscord, fake_fal: FakeFal, tmp_path: Path
) -> None:
    env = bot_env(fake_discord, fake_fal, tmp_path, DISCORD_TOKEN="refused.token.value")
    bot = await spawn(env, tmp_path)
    assert await bot.wait(20) == 2
    [line] = [line for line in bot.lines if line.startswith("seed-bot:")]
    assert "DISCORD_TOKEN" in line
    assert "Traceback" not in bot.log
    assert "refused.token.value" not in bot.log


@pytest.mark.timeout(30)
async def test_an_unreachable_database_is_one_line_saying_so(tmp_path: Path) -> None:
    env = base_env(tmp_path) | {
        "SEED_BOT_DATABASE__URL": "postgresql+asyncpg://bot:hunter2@127.0.0.1:9/seedbot"
    }
    bot = await spawn(env, tmp_path)
    assert await bot.wait(20) == 1
    [line] = [line for line in bot.lines if line.startswith("seed-bot:")]
    assert "cannot reach the database postgresql+asyncpg://bot:***@127.0.0.1:9/seedbot" in line
    assert "check database.url" in line
    assert "Traceback" not in bot.log
    assert "hunter2" not in bot.log

    debug = await spawn(env, tmp_path, "--debug")
    assert await debug.wait(20) == 1
    assert "Traceback" in debug.log  # --debug shows where it failed
    assert "hunter2" not in debug.log


@pytest.mark.timeout(30)
async def test_an_out_of_date_schema_names_the_command_to_run(tmp_path: Path) -> None:
    env = base_env(tmp_path) | {"SEED_BOT_DATABASE__AUTO_MIGRATE": "false"}
    bot = await spawn(env, tmp_path)
    assert await bot.wait(20) == 1
    [line] = [line for line in bot.lines if line.startswith("seed-bot:")]
    assert "database schema is out of date" in line and "run `seed-bot migrate`" in line
    assert "Traceback" not in bot.log


@pytest.mark.timeout(60)
async def test_discord_dns_failure_and_5xx_are_retried(
    fake_discord: FakeDiscord, fake_fal: FakeFal, tmp_path: Path
) -> None:
    env = bot_env(
        fake_discord,
        fake_fal,
        tmp_path,
        SEED_BOT_DISCORD__API_BASE="http://discord.invalid/api/v10",
    )
    bot = await spawn(env, tmp_path)
    try:
        line = await bot.wait_for_log("cannot reach Discord", timeout=20)
        assert "discord.invalid" in line and "DNS" in line
        await bot.wait_for_log("attempt 2;", timeout=10)
    finally:
        await bot.kill()
    assert "Traceback" not in bot.log

    # Discord answering 503 to the login (discord.py gives up on a 503 at once).
    build_standard_world(fake_discord)
    fake_discord.fail("GET /users/@me", status=503, times=2)
    bot = await spawn(bot_env(fake_discord, fake_fal, tmp_path), tmp_path)
    try:
        line = await bot.wait_for_log("cannot reach Discord", timeout=20)
        assert "DiscordServerError" in line
        await bot.wait_for_log("reached Discord after 3 attempts", timeout=20)
        await bot.wait_for_log("connected as", timeout=20)
        bot.send(signal.SIGTERM)
        assert await bot.wait(20) == 0
    finally:
        await bot.kill()
    assert "Traceback" not in bot.log


@pytest.mark.timeout(30)
async def test_with_json_logs_the_failure_is_a_json_line_too(
    fake_discord: FakeDiscord, fake_fal: FakeFal, tmp_path: Path
) -> None:
    env = bot_env(
        fake_discord,
        fake_fal,
        tmp_path,
        DISCORD_TOKEN="refused.token.value",
        SEED_BOT_LOGGING__FORMAT="json",
    )
    bot = await spawn(env, tmp_path)
    assert await bot.wait(20) == 2
    lines = [json.loads(line) for line in bot.lines]
    assert lines[-1]["level"] == "CRITICAL"
    assert "DISCORD_TOKEN" in lines[-1]["message"]
    assert "refused.token.value" not in bot.log
