"""End to end, when the database refuses what a command stores before its turn: the person
is answered (Discord would otherwise show "The application did not respond")."""

from __future__ import annotations

import sqlite3

from tests.chat.conftest import HarnessFactory, status_with_stop


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


UNAVAILABLE = "⚠️ The bot's database is unavailable right now. Try again in a minute."


async def test_a_command_that_meets_a_database_failure_tells_the_person(
    make_harness: HarnessFactory,
) -> None:
    """Any slash command, not only those that expect it: the tree tells the person privately
    instead of leaving Discord's "The application did not respond"."""
    h = await make_harness()
    thread, _ = await h.converse(h.world.alice, "first", settle=True)
    with sqlite3.connect(h.tmp_path / "bot.db") as db:
        db.execute("DROP TABLE settings")
    pressed = await h.fake.invoke_command(h.world.alice, thread, "thinking", {"mode": "enabled"})
    response = await pressed.wait_response(timeout=10)
    assert response.ephemeral
    assert response.message is not None
    assert response.message.content == UNAVAILABLE


async def test_stop_and_retry_pressed_while_the_database_fails_tell_the_person(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness()
    thread, _ = await h.converse(h.world.alice, "first")
    answer = await h.say(h.world.alice, thread, "second", settle=True)
    [retry_id] = answer.custom_ids()
    h.fal.hold()
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "third")
    status = await status_with_stop(h, thread, since)
    [stop_id] = status.custom_ids()
    with sqlite3.connect(h.tmp_path / "bot.db") as db:
        db.execute("ALTER TABLE turns RENAME TO turns_away")
    for message, custom_id in ((answer, retry_id), (status, stop_id)):
        pressed = await h.fake.press_button(h.world.alice, message, custom_id)
        response = await pressed.wait_response(timeout=10)
        assert response.ephemeral
        assert response.message is not None
        assert response.message.content == UNAVAILABLE
    with sqlite3.connect(h.tmp_path / "bot.db") as db:
        db.execute("ALTER TABLE turns_away RENAME TO turns")
    h.fal.unhold()
    await h.answer_in(thread, since=since, contains="echo: third")
    assert len(h.fal.requests) == 3  # nothing retried, nothing stopped
