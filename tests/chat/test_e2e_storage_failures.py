"""End to end, when the database refuses what a command stores before its turn: the person
is answered (Discord would otherwise show "The application did not respond")."""

from __future__ import annotations

import sqlite3

from tests.chat.conftest import HarnessFactory


async def test_ask_whose_options_the_database_refuses_is_answered(
    make_harness: HarnessFactory,
) -> None:
    """User-install /ask with a thinking option stores the option before the turn starts
    (as when PostgreSQL refused the interaction's scope key): the error is told privately."""
    h = await make_harness()
    guild = h.fake.create_guild("Elsewhere", bot_member=False)
    channel = h.fake.create_text_channel(guild, "chat")
    carol = h.fake.create_user("carol", global_name="Carol")
    h.fake.add_member(guild, carol)
    h.fake.install_for_user(carol)
    with sqlite3.connect(h.tmp_path / "bot.db") as db:
        db.execute("DROP TABLE settings")  # every write of a setting now fails at once
    ask = await h.fake.invoke_command(carol, channel, "ask", {"prompt": "hi", "thinking": "auto"})
    response = await ask.wait_response(timeout=10)
    assert response.ephemeral
    assert response.message is not None
    assert response.message.content == (
        "⚠️ The bot's database is unavailable right now. Try again in a minute."
    )
    assert h.fal.requests == {}
