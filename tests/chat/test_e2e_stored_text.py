"""End to end, what the bot stores of a person's text: a NUL (which PostgreSQL cannot store)
in a message, a display name or a file name is answered like anything else, and stored as
U+FFFD on both databases."""

from __future__ import annotations

from bot.domain.models import TurnState
from tests.chat.conftest import Harness
from tests.fakes.discord.models import UserFile

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


async def test_a_nul_from_a_person_is_answered_and_stored_as_a_replacement(
    harness: Harness,
) -> None:
    h = harness
    dora = h.fake.create_user("dora", global_name="Do\x00ra")
    h.fake.add_member(h.world.guild, dora)
    since = h.fake.mark()
    message = await h.mention(dora, "look\x00here", files=[UserFile("a\x00b.png", PNG)])
    thread = await h.fake.wait_for_thread(h.world.channel, from_message=message, since=since)
    await h.answer_in(thread, since=since, contains="echo:")

    # A follow-up: the first exchange goes back to the model as history.
    since = h.fake.mark()
    await h.fake.send_message(dora, thread, "and\x00again")
    await h.answer_in(thread, since=since, contains="echo:")
    await h.app.bot.idle()

    first = await h.app.store.turns.turn_for_source(str(message.id))
    latest = await h.app.store.turns.latest_turn(str(thread.id))
    assert first is not None and latest is not None
    assert (first.state, latest.state) == (TurnState.DELIVERED, TurnState.DELIVERED)
    assert first.prompt.endswith("look\ufffdhere")
    assert first.author_name == "Do\ufffdra"
    assert first.image_names == ("a\ufffdb.png",)
    assert latest.prompt.endswith("and\ufffdagain")
    history = list(h.fal.requests.values())[-1].input["messages"]
    assert "look\ufffdhere" in str(history)
