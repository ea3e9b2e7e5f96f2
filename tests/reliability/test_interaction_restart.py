"""A bot process killed (SIGKILL) while fal works on a turn asked through an interaction
(``/ask`` where the bot is not a member): the next process answers the interaction, waiting
for the same request, and neither process ever logs the interaction's token, at DEBUG."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.fakes.discord.server import FakeDiscord
from tests.fakes.discord.standard import StandardWorld
from tests.fakes.fal import FakeFal
from tests.reliability.botproc import start_bot

DEBUG = {"SEED_BOT_LOGGING__LEVEL": "DEBUG"}


@pytest.mark.timeout(60)
async def test_killed_while_an_interaction_turn_is_at_fal_the_next_process_answers_it(
    fake_discord: FakeDiscord, discord_world: StandardWorld, fake_fal: FakeFal, tmp_path: Path
) -> None:
    fake, fal = fake_discord, fake_fal
    guild = fake.create_guild("Elsewhere", bot_member=False)
    channel = fake.create_text_channel(guild, "chat")
    carol = fake.create_user("carol", global_name="Carol")
    fake.add_member(guild, carol)
    fake.install_for_user(carol)
    fal.hold()
    first = await start_bot(fake, fal, tmp_path, DEBUG, args=["--sync"])
    try:
        ask = await fake.invoke_command(carol, channel, "ask", {"prompt": "still there?"})
        await ask.wait_response(timeout=10)
        (request_id,) = await fal.wait_for_submissions(1, timeout=10)
        await first.wait_for_log(f"submitted as request {request_id}")  # its id is stored
    finally:
        await first.kill()
    fal.unhold()

    second = await start_bot(fake, fal, tmp_path, DEBUG)
    try:
        answer = await ask.wait_original(lambda m: "echo: still there?" in m.content, timeout=15)
        await second.wait_for_log("delivered", timeout=10)
        second.send(signal.SIGTERM)
        assert await second.wait(20) == 0
    finally:
        await second.kill()
    assert answer.ephemeral
    assert list(fal.requests) == [request_id]
    for bot in (first, second):
        assert "WebSocket Event" in bot.log  # discord.py's payloads were logged
        assert ask.token not in bot.log
