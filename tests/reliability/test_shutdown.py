"""Stopping the bot while turns wait for the model: no error, and the turns stay stored for
the next start."""

from __future__ import annotations

import contextlib
from pathlib import Path

from bot.app import build_app
from bot.storage import create_engine, sql_repositories
from tests.chat.conftest import harness_config
from tests.fakes.discord import StandardWorld, run_client
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.fal import Call, FakeFal
from tests.reliability.conftest import bot_errors


async def test_stopping_with_turns_in_flight_logs_no_error_and_keeps_them(
    fake_discord: FakeDiscord, discord_world: StandardWorld, fake_fal: FakeFal, tmp_path: Path
) -> None:
    fake, world = fake_discord, discord_world

    def waits() -> list[Call]:
        return fake_fal.calls_to("stream") + fake_fal.calls_to("status")

    fake_fal.hold()
    config = harness_config(fake, fake_fal, tmp_path)
    with bot_errors() as errors:
        async with contextlib.AsyncExitStack() as stack:
            app = await stack.enter_async_context(
                build_app(config, sync_commands=True, guild_ready_timeout=0.0, status_delay=0.5)
            )
            await stack.enter_async_context(run_client(app.bot, fake, error_loggers=("discord",)))
            await app.bot.resumed.wait()
            interaction = await fake.invoke_command(
                world.alice, world.channel, "ask", {"prompt": "held by /ask"}
            )
            await interaction.wait_response()
            await fake.send_message(world.bob, world.channel, f"<@{fake.bot_user.id}> held too")
            ids = await fake_fal.wait_for_submissions(2)
            # the bot stores fal's request id before it starts waiting on the request
            await fake_fal.wait_for(
                lambda: {c.path.split("/requests/")[1].split("/")[0] for c in waits()} >= set(ids)
            )
    assert [r.getMessage() for r in errors.records] == []
    engine = create_engine(config.database.url)
    try:
        unfinished = await sql_repositories(engine).turns.unfinished_turns()
    finally:
        await engine.dispose()
    assert sorted(t.prompt for t in unfinished) == ["held by /ask", "held too"]
    assert all(t.handle is not None for t in unfinished)
