"""``seed-bot run`` and the signals an operator (or systemd) sends it: SIGTERM drains the
turns in flight for the grace period and takes no new ones; SIGHUP reloads config.toml
without reconnecting, and refuses a broken one while keeping the running config."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from bot.storage import create_engine, sql_repositories
from tests.fakes.discord.events import GatewayIdentified, ThreadCreated
from tests.fakes.discord.models import FakeChannel, FakeMessage, FakeUser
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.discord.standard import StandardWorld
from tests.fakes.fal import FakeFal
from tests.reliability.botproc import BotProcess, start_bot


async def mention(
    fake: FakeDiscord, user: FakeUser, channel: FakeChannel, text: str
) -> FakeMessage:
    return await fake.send_message(user, channel, f"<@{fake.bot_user.id}> {text}")


async def thread_of(fake: FakeDiscord, message: FakeMessage) -> FakeChannel:
    return await fake.wait_for_thread(from_message=message, timeout=10)


async def held_turn(fake: FakeDiscord, fal: FakeFal, world: StandardWorld) -> FakeChannel:
    """Alice asks; returns her thread once fal holds the request and the bot waits on it
    (its request id stored)."""
    fal.hold()
    asked = await mention(fake, world.alice, world.channel, "held question")
    thread = await thread_of(fake, asked)
    [request_id] = await fal.wait_for_submissions(1, timeout=10)
    await fal.wait_for(
        lambda: any(request_id in c.path for c in fal.calls_to("stream")), timeout=10
    )
    return thread


async def unfinished_turns(tmp_path: Path) -> list[tuple[str, str | None]]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    try:
        turns = await sql_repositories(engine).turns.unfinished_turns()
    finally:
        await engine.dispose()
    return [(t.prompt, t.handle.request_id if t.handle else None) for t in turns]


@pytest.mark.timeout(45)
async def test_sigterm_lets_the_turn_in_flight_finish_and_takes_no_new_one(
    fake_discord: FakeDiscord, discord_world: StandardWorld, fake_fal: FakeFal, tmp_path: Path
) -> None:
    fake, world, fal = fake_discord, discord_world, fake_fal
    bot = await start_bot(fake, fal, tmp_path, {"SEED_BOT_LIMITS__SHUTDOWN_GRACE_SECONDS": "30"})
    try:
        thread = await held_turn(fake, fal, world)
        bot.send(signal.SIGTERM)
        await bot.wait_for_log("waiting up to 30s for 1 turns in flight")
        since = fake.mark()
        late = await mention(fake, world.bob, world.channel, "too late")
        await fake.sync_gateway()  # the draining bot has seen it
        released = time.monotonic()
        await fal.release()
        answer = await fake.wait_for_message(thread, contains="echo: held question", timeout=10)
        assert await bot.wait(timeout=10) == 0, bot.log
        exited = time.monotonic() - released
    finally:
        await bot.kill()
    assert exited < 5, f"took {exited:.1f}s to exit after the last turn finished"
    assert [m.content for m in fake.bot_messages(thread)][-1] == answer.content
    assert fake.events_of(ThreadCreated, since=since) == []
    assert [m for m in fake.bot_messages() if m.channel_id == world.channel.id] == []
    assert late.id not in {m.referenced_message_id for m in fake.bot_messages()}
    assert [r.input["prompt"] for r in fal.requests.values()] == ["held question"]
    assert await unfinished_turns(tmp_path) == []
    assert "Traceback" not in bot.log


@pytest.mark.timeout(45)
async def test_sigterm_with_a_short_grace_keeps_the_turn_for_the_next_start(
    fake_discord: FakeDiscord, discord_world: StandardWorld, fake_fal: FakeFal, tmp_path: Path
) -> None:
    fake, world, fal = fake_discord, discord_world, fake_fal
    env = {"SEED_BOT_LIMITS__SHUTDOWN_GRACE_SECONDS": "0.2"}
    bot = await start_bot(fake, fal, tmp_path, env)
    try:
        thread = await held_turn(fake, fal, world)
        signalled = time.monotonic()
        bot.send(signal.SIGTERM)
        assert await bot.wait(timeout=10) == 0, bot.log
        stopped_in = time.monotonic() - signalled
        [(prompt, request_id)] = await unfinished_turns(tmp_path)
        assert prompt == "held question" and request_id in fal.requests
        assert not [m for m in fake.bot_messages(thread) if "echo:" in m.content]

        fal.unhold()  # the request finishes at fal while no bot is running
        bot = await start_bot(fake, fal, tmp_path, env)
        await fake.wait_for_message(thread, contains="echo: held question", timeout=10)
        bot.send(signal.SIGTERM)
        assert await bot.wait(timeout=10) == 0, bot.log
    finally:
        await bot.kill()
    assert stopped_in < 5, f"took {stopped_in:.1f}s to stop with a 0.2s grace"
    answers = [m for m in fake.bot_messages(thread) if "echo: held question" in m.content]
    assert len(answers) == 1
    assert len(fal.requests) == 1  # resumed by its stored request id, not submitted again
    assert await unfinished_turns(tmp_path) == []


@pytest.mark.timeout(45)
async def test_sighup_reloads_the_access_lists_and_refuses_a_broken_config(
    fake_discord: FakeDiscord, discord_world: StandardWorld, fake_fal: FakeFal, tmp_path: Path
) -> None:
    fake, world, fal = fake_discord, discord_world, fake_fal
    config = tmp_path / "config.toml"
    config.write_text("")
    identified = fake.mark()
    bot = await start_bot(fake, fal, tmp_path)
    try:
        await expect_answered(fake, world, "bob before the reload", world.bob)
        config.write_text(f'[access]\ndeny_users = ["{world.bob.id}"]\ndenied_reply = "notice"\n')
        seen = len(bot.lines)
        bot.send(signal.SIGHUP)
        await bot.wait_for_log("config reloaded", since=seen)
        await expect_refused(fake, world, bot)
        await expect_answered(fake, world, "after the reload")

        config.write_text('[access]\ndeny_users = ["bob"\n[limits]\nmax_in_flight = 0\n')
        seen = len(bot.lines)
        bot.send(signal.SIGHUP)
        await bot.wait_for_log("config reload refused", since=seen)
        # still refused (told once a day: in silence now)
        since = fake.mark()
        asked = await mention(fake, world.bob, world.channel, "may I now?")
        await expect_answered(fake, world, "after the refused reload")
        assert [
            m for m in fake.bot_messages(world.channel) if m.referenced_message_id == asked.id
        ] == []
        assert len(fake.events_of(ThreadCreated, since=since)) == 1  # alice's
        assert bot.proc.returncode is None

        # one connection all along: the reloads did not reconnect
        assert len(fake.events_of(GatewayIdentified, since=identified)) == 1
        bot.send(signal.SIGTERM)
        assert await bot.wait(timeout=10) == 0, bot.log
    finally:
        await bot.kill()


async def expect_refused(fake: FakeDiscord, world: StandardWorld, bot: BotProcess) -> None:
    since = fake.mark()
    asked = await mention(fake, world.bob, world.channel, "may I?")
    refusal = await fake.wait_for_message(world.channel, since=since, timeout=10)
    assert refusal.referenced_message_id == asked.id
    assert refusal.content == "⛔ Sorry, you are not allowed to use this bot."
    assert fake.events_of(ThreadCreated, since=since) == []
    assert bot.proc.returncode is None


async def expect_answered(
    fake: FakeDiscord, world: StandardWorld, text: str, user: FakeUser | None = None
) -> None:
    asked = await mention(fake, user or world.alice, world.channel, text)
    thread = await thread_of(fake, asked)
    await fake.wait_for_message(thread, contains=f"echo: {text}", timeout=10)
