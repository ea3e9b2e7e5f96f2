"""People's data end to end: /export and /forget on the fake Discord, what fal is told to
keep (headers recorded by the fake fal), and the retention sweep of a running bot."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from bot.domain.privacy import Removed
from bot.storage.engine import create_engine
from bot.storage.tables import conversations, turns
from tests.chat.conftest import Harness, HarnessFactory
from tests.fakes.discord import Perm, UserFile
from tests.fakes.discord.events import InteractionResponded
from tests.fakes.discord.models import FakeChannel, FakeUser
from tests.fakes.fal import Fault

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


async def respond(
    h: Harness, user: FakeUser, channel: FakeChannel, name: str
) -> InteractionResponded:
    """``user`` runs ``/name``; the answer must be private."""
    interaction = await h.fake.invoke_command(user, channel, name)
    response = await interaction.wait_response()
    assert response.ephemeral, response
    assert response.message is not None
    return response


def user_texts(h: Harness) -> list[str]:
    """What the last request to fal carried as the history's user messages, plus its prompt."""
    last = list(h.fal.requests.values())[-1].input
    return [m["content"] for m in last["messages"] if m["role"] == "user"] + [last["prompt"]]


# -- /export ---------------------------------------------------------------------------------


async def test_export_holds_the_askers_own_turns_and_counts_the_others(
    harness: Harness,
) -> None:
    h = harness
    thread, _ = await h.converse(h.world.alice, "first question", settle=True)
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "look", files=[UserFile("dot.png", PNG)])
    await h.answer_in(thread, since=since, contains="echo: look")
    await h.app.bot.idle()
    await h.say(h.world.bob, thread, "bob chimes in", settle=True)
    # A turn that fails: its stored error is the bot's internal text.
    h.fal.add_fault(Fault.key_refused("submit", times=None))
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "this one fails")
    await h.fake.wait_for_message(thread, lambda m: "⚠" in m.content, since=since)
    await h.app.bot.idle()
    stored = await h.app.privacy.export(str(thread.id))
    assert stored is not None and stored.turns[-1].error  # the internal text is stored

    response = await respond(h, h.world.alice, thread, "export")

    assert response.message is not None
    assert "1 message of other people left out" in response.message.content
    files = {name: data.decode() for name, data in response.message.files}
    assert sorted(files) == ["conversation.json", "conversation.md"]
    document = json.loads(files["conversation.json"])
    alices = [t for t in stored.turns if t.author_name == "Alice"]
    assert [t["id"] for t in document["turns"]] == [t.id for t in alices]
    assert [(t["author_name"], t["prompt"], t["answer"]) for t in document["turns"]] == [
        ("Alice", "first question", "echo: first question"),
        ("Alice", "look", "echo: look"),
        ("Alice", "this one fails", None),
    ]
    assert document["turns"][2]["state"] == "failed" and "error" not in document["turns"][2]
    assert document["messages_of_others_left_out"] == 1
    assert document["exported_for"] == str(h.world.alice.id)
    assert [i["name"] for i in document["turns"][1]["images"]] == ["dot.png"]
    assert document["conversation"]["channel_id"] == str(thread.id)
    markdown = files["conversation.md"]
    for expected in ("## Alice", "first question", "echo: look", "`dot.png`", "no answer: failed"):
        assert expected in markdown
    assert "1 message of other people left out" in markdown
    assert "<details><summary>Reasoning</summary>" in markdown
    for text in files.values():
        assert "bob chimes in" not in text and "Bob" not in text
        assert stored.turns[-1].error not in text


async def test_export_gives_each_person_only_their_own(harness: Harness) -> None:
    h = harness
    thread, _ = await h.converse(h.world.alice, "mine", settle=True)
    nothing = await respond(h, h.world.bob, thread, "export")
    assert nothing.message is not None and not nothing.message.attachments
    assert "nothing of yours to export" in nothing.message.content
    here = await respond(h, h.world.alice, h.world.channel, "export")
    assert here.message is not None and "inside a conversation's thread" in here.message.content
    unbound = await h.fake.create_thread(h.world.alice, h.world.channel, "not with the bot")
    none = await respond(h, h.world.alice, unbound, "export")
    assert none.message is not None and "not a conversation with me" in none.message.content

    # Bob takes part: he gets his own turn, not Alice's, starter or not, moderator or not.
    mods = h.fake.create_role(h.world.guild, "thread mods", permissions=Perm.MANAGE_THREADS)
    h.fake.set_member_roles(h.world.guild, h.world.bob, [mods])
    await h.say(h.world.bob, thread, "bobs own words", settle=True)
    bobs = await respond(h, h.world.bob, thread, "export")
    assert bobs.message is not None and len(bobs.message.attachments) == 2
    files = [data.decode() for _, data in bobs.message.files]
    assert all("bobs own words" in f and "mine" not in f for f in files)


# -- /forget ---------------------------------------------------------------------------------


async def test_forget_removes_only_that_users_turns_in_that_server(harness: Harness) -> None:
    h = harness
    thread, _ = await h.converse(h.world.alice, "alice one", settle=True)
    await h.say(h.world.bob, thread, "bob one", settle=True)
    await h.say(h.world.alice, thread, "alice two", settle=True)
    other = h.fake.create_guild("Other Server")
    lobby = h.fake.create_text_channel(other, "lobby")
    h.fake.add_member(other, h.world.alice)
    h.fake.add_member(other, h.world.bob)
    since = h.fake.mark()
    opening = await h.mention(h.world.alice, "alice elsewhere", channel=lobby)
    elsewhere = await h.fake.wait_for_thread(lobby, from_message=opening, since=since)
    await h.answer_in(elsewhere, since=since, contains="echo: alice elsewhere")
    await h.app.bot.idle()

    asked = await respond(h, h.world.alice, thread, "forget")
    confirm = asked.message
    assert confirm is not None and "deletes the 2 turns you wrote in this server" in confirm.content
    [button] = [c["custom_id"] for row in confirm.components for c in row["components"]]
    preview = await h.app.privacy.forget(str(h.world.alice.id), str(h.world.guild.id), dry_run=True)
    assert preview == Removed(turns=2, messages=4)  # nothing deleted before the button

    pressed_by_bob = await h.fake.press_button(h.world.bob, confirm, button)
    bobs = await pressed_by_bob.wait_response()
    assert bobs.ephemeral and bobs.data is not None
    assert "Only the person who asked to forget" in bobs.data["content"]

    pressed = await h.fake.press_button(h.world.alice, confirm, button)
    done = await pressed.wait_response()
    assert done.type == 7 and done.message is not None
    assert "Removed 2 turns you wrote in this server" in done.message.content
    assert not done.message.components

    kept = await h.app.privacy.export(str(thread.id))
    assert kept is not None and [t.prompt for t in kept.turns] == ["bob one"]
    away = await h.app.privacy.export(str(elsewhere.id))
    assert away is not None and [t.prompt for t in away.turns] == ["alice elsewhere"]
    # The thread still works, and the model no longer sees what Alice wrote.
    await h.say(h.world.alice, thread, "alice three", settle=True)
    assert user_texts(h) == ["[Bob]: bob one", "[Alice]: alice three"]

    again = await respond(h, h.world.bob, lobby, "forget")
    assert again.message is not None and "Nothing you wrote in this server" in again.message.content


async def test_forget_in_a_dm_works_on_the_dm(make_harness: HarnessFactory) -> None:
    h = await make_harness(SEED_BOT_DISCORD__ALLOW_DMS="true")
    thread, _ = await h.converse(h.world.alice, "in the server", settle=True)
    dm = h.fake.dm_channel(h.world.alice)
    await h.say(h.world.alice, dm, "in private", settle=True)

    asked = await respond(h, h.world.alice, dm, "forget")
    assert asked.message is not None and "in our direct messages" in asked.message.content
    [button] = [c["custom_id"] for row in asked.message.components for c in row["components"]]
    done = await (await h.fake.press_button(h.world.alice, asked.message, button)).wait_response()
    assert done.message is not None and "Removed 1 turn " in done.message.content

    private = await h.app.privacy.export(str(dm.id))
    assert private is not None and private.turns == ()
    public = await h.app.privacy.export(str(thread.id))
    assert public is not None and [t.prompt for t in public.turns] == ["in the server"]


# -- what fal keeps --------------------------------------------------------------------------


async def test_by_default_fal_stores_nothing_and_uploads_keep_fal_default(
    harness: Harness,
) -> None:
    h = harness
    since = h.fake.mark()
    _, thread = await h.start_thread(h.world.alice, "see", files=[UserFile("dot.png", PNG)])
    await h.answer_in(thread, since=since, contains="echo: see")
    [request] = h.fal.requests.values()
    assert request.headers.get("X-Fal-Store-IO") == "0"
    [stored] = h.fal.files.values()
    assert stored.lifecycle is None  # kept forever here: the file must outlive no history


async def test_retention_sets_upload_lifetime_and_storing_can_be_allowed(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(
        SEED_BOT_PRIVACY__RETENTION_DAYS="7", SEED_BOT_PRIVACY__FAL_STORE_IO="true"
    )
    since = h.fake.mark()
    _, thread = await h.start_thread(h.world.alice, "see", files=[UserFile("dot.png", PNG)])
    await h.answer_in(thread, since=since, contains="echo: see")
    [request] = h.fal.requests.values()
    assert "X-Fal-Store-IO" not in request.headers
    [stored] = h.fal.files.values()
    assert stored.lifecycle == {"expiration_duration_seconds": 7 * 86400}


# -- the sweep of a running bot ----------------------------------------------------------------


async def test_the_bot_sweeps_old_turns_at_start(make_harness: HarnessFactory) -> None:
    first = await make_harness()
    thread, _ = await first.converse(first.world.alice, "long ago", settle=True)
    await first.say(first.world.alice, thread, "also long ago", settle=True)
    await first.say(first.world.bob, thread, "yesterday", settle=True)
    await first.stop()
    long_ago = datetime.now(UTC) - timedelta(days=31)
    engine = create_engine(first.app.config.database.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(turns).where(turns.c.prompt.like("%long ago")).values(created_at=long_ago)
            )
            await conn.execute(update(conversations).values(updated_at=long_ago))
    finally:
        await engine.dispose()

    h = await make_harness(SEED_BOT_PRIVACY__RETENTION_DAYS="30")
    assert h.app.sweeper is not None
    async with asyncio.timeout(10):
        await h.app.sweeper.swept.wait()
    async with h.app.engine.connect() as conn:
        left = (await conn.scalars(select(turns.c.prompt))).all()
    assert left == ["yesterday"]
    await h.say(h.world.alice, thread, "today", settle=True)
    assert user_texts(h) == ["[Bob]: yesterday", "[Alice]: today"]
