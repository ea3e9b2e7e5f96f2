"""End to end: ``/autoreply`` channels, where the bot answers every message a person posts,
in a thread per message (``threads``) or in the channel as a reply (``inline``); who may set
it, how ``/settings`` shows it, and that bots, webhooks and refused people cost nothing."""

from __future__ import annotations

from typing import Any

from tests.chat.conftest import Harness, HarnessFactory
from tests.chat.conftest import ephemeral_answer as command
from tests.fakes.discord import Perm
from tests.fakes.discord.events import HttpRequest, MessageCreated
from tests.fakes.discord.models import FakeMessage, FakeUser
from tests.fakes.fal import ModelOutput, echo_responder

FLOOD = 6


def manager(h: Harness, user: FakeUser, permissions: Perm = Perm.MANAGE_CHANNELS) -> None:
    role = h.fake.create_role(h.world.guild, "managers", permissions=permissions)
    h.fake.set_member_roles(h.world.guild, user, [role])


async def autoreply(h: Harness, mode: str, **options: Any) -> None:
    """Alice (who may manage the channel and the server) sets ``#general``'s mode."""
    manager(h, h.world.alice, Perm.MANAGE_CHANNELS | Perm.MANAGE_GUILD)
    text = await command(h, h.world.alice, h.world.channel, "autoreply", {"mode": mode, **options})
    assert text.startswith("✅ Autoreply set to **" + mode), text


async def inline_answer(h: Harness, asked: FakeMessage, since: int) -> FakeMessage:
    """The bot's answer to ``asked`` in the channel itself, a reply to it."""
    return await h.fake.wait_for_post(
        h.world.channel,
        lambda m: (
            "echo:" in m.content
            and m.message_reference is not None
            and int(m.message_reference["message_id"]) == asked.id
        ),
        since=since,
        timeout=10,
    )


def user_turns(h: Harness) -> list[list[str]]:
    """For each request fal got: the person's messages of its history, then its prompt."""
    return [
        [
            *(m["content"] for m in r.input.get("messages", []) if m["role"] == "user"),
            r.input["prompt"],
        ]
        for r in h.fal.requests.values()
    ]


def rest_calls(h: Harness, since: int) -> list[HttpRequest]:
    return [e for e in h.fake.events[since:] if isinstance(e, HttpRequest)]


# -- off ------------------------------------------------------------------------------------


async def test_off_by_default_only_mentions_are_answered(harness: Harness) -> None:
    h = harness
    await h.fake.send_message(h.world.alice, h.world.channel, "talking among ourselves")
    await h.converse(h.world.bob, "the mention", settle=True)
    assert h.prompts() == ["the mention"]
    assert [m for m in h.fake.bot_messages(h.world.channel) if not m.ephemeral] == []


async def test_turning_it_off_again_answers_mentions_only(harness: Harness) -> None:
    h = harness
    await autoreply(h, "threads")
    await autoreply(h, "off")
    await h.fake.send_message(h.world.bob, h.world.channel, "not for the bot")
    await h.converse(h.world.bob, "for the bot", settle=True)
    assert h.prompts() == ["for the bot"]


# -- threads --------------------------------------------------------------------------------


async def test_threads_mode_answers_every_message_in_a_thread_of_its_own(
    harness: Harness,
) -> None:
    h = harness
    await autoreply(h, "threads")
    since = h.fake.mark()
    asked = await h.fake.send_message(h.world.bob, h.world.channel, "no mention needed")
    thread = await h.fake.wait_for_thread(h.world.channel, from_message=asked, since=since)
    await h.answer_in(thread, since=since, contains="echo: no mention needed")
    await h.say(h.world.bob, thread, "and it goes on here")
    assert user_turns(h)[-1] == ["no mention needed", "and it goes on here"]
    assert [m for m in h.fake.bot_messages(h.world.channel) if not m.ephemeral] == []


async def test_bots_webhooks_and_system_messages_are_never_answered(harness: Harness) -> None:
    h = harness
    await autoreply(h, "threads")
    robot = h.fake.create_user("robot", bot=True)
    h.fake.add_member(h.world.guild, robot)
    hook = h.fake.create_webhook(h.world.channel)
    await h.fake.send_message(robot, h.world.channel, "a bot talking")
    await h.fake.send_message(hook, h.world.channel, "a webhook talking")
    # a system message: the thread Discord announces when someone opens one
    await h.fake.create_thread(h.world.bob, h.world.channel, "bob's own thread")
    since = h.fake.mark()
    asked = await h.fake.send_message(h.world.alice, h.world.channel, "a person")
    thread = await h.fake.wait_for_thread(h.world.channel, from_message=asked, since=since)
    await h.answer_in(thread, since=since, contains="echo: a person")
    await h.app.bot.idle()
    assert h.prompts() == ["a person"]


# -- inline ---------------------------------------------------------------------------------


async def test_inline_answers_in_the_channel_and_a_reply_continues_the_conversation(
    harness: Harness,
) -> None:
    h = harness
    await autoreply(h, "inline")
    since = h.fake.mark()
    first = await h.fake.send_message(h.world.alice, h.world.channel, "first question")
    answer = await inline_answer(h, first, since)
    assert h.fake.threads(h.world.channel) == []

    # a reply to the answer, without a ping: the same conversation
    since = h.fake.mark()
    second = await h.fake.send_message(
        h.world.alice, h.world.channel, "a follow-up", reply_to=answer, ping_reply=False
    )
    answer = await inline_answer(h, second, since)
    assert user_turns(h)[-1] == ["first question", "a follow-up"]

    # and with a ping (bob joins in): still that conversation
    since = h.fake.mark()
    third = await h.fake.send_message(
        h.world.bob, h.world.channel, f"<@{h.bot_user.id}> and me", reply_to=answer
    )
    await inline_answer(h, third, since)
    assert user_turns(h)[-1][:2] == ["first question", "a follow-up"]

    # any other message, a mention included, starts a new one
    since = h.fake.mark()
    other = await h.fake.send_message(h.world.bob, h.world.channel, "something else")
    await inline_answer(h, other, since)
    assert user_turns(h)[-1] == ["something else"]
    since = h.fake.mark()
    pinged = await h.mention(h.world.bob, "a mention")
    await inline_answer(h, pinged, since)
    assert user_turns(h)[-1] == ["a mention"]
    assert h.fake.threads(h.world.channel) == []


async def test_inline_long_answers_and_reasoning_are_posted_in_the_channel(
    harness: Harness,
) -> None:
    h = harness
    await autoreply(h, "inline")
    long_answer = "echo: " + " ".join(f"word{n}" for n in range(900))
    h.fal.responder = lambda args: ModelOutput(long_answer, "some reasoning")
    since = h.fake.mark()
    asked = await h.fake.send_message(h.world.alice, h.world.channel, "tell me a lot")
    await h.fake.wait_for_post(h.world.channel, contains="word899", since=since, timeout=10)
    await h.app.bot.idle()
    posted = [
        e.message
        for e in h.fake.events_of(MessageCreated, since=since)
        if e.by_bot and e.message.channel_id == h.world.channel.id
    ]
    shown = "\n".join(m.content for m in h.fake.bot_messages(h.world.channel))
    assert "some reasoning" in shown
    assert all(len(m.content) <= 2000 for m in h.fake.bot_messages(h.world.channel))
    assert len(posted) >= 2  # split over several messages, in the channel
    assert posted[0].message_reference is not None
    assert int(posted[0].message_reference["message_id"]) == asked.id
    assert h.fake.threads(h.world.channel) == []

    # a reply to the last part (which replies to nothing) continues that conversation
    h.fal.responder = echo_responder
    since = h.fake.mark()
    more = await h.fake.send_message(
        h.world.alice, h.world.channel, "shorter please", reply_to=posted[-1], ping_reply=False
    )
    await inline_answer(h, more, since)
    assert user_turns(h)[-1] == ["tell me a lot", "shorter please"]


async def test_inline_stop_and_retry(harness: Harness) -> None:
    h = harness
    await autoreply(h, "inline")
    h.fal.hold()
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, h.world.channel, "to be stopped")
    status = await h.fake.wait_for_post(
        h.world.channel,
        lambda m: any(i.startswith("seed:stop:") for i in m.custom_ids()),
        since=since,
        timeout=10,
    )
    [stop_id] = [i for i in status.custom_ids() if i.startswith("seed:stop:")]
    pressed = await h.fake.press_button(h.world.alice, status, stop_id)
    await pressed.wait_response()
    await h.fake.wait_for_edit(status, lambda m: "Stopped by" in m.content, since=since)
    h.fal.unhold()

    since = h.fake.mark()
    asked = await h.fake.send_message(h.world.alice, h.world.channel, "to be retried")
    answer = await inline_answer(h, asked, since)
    [retry_id] = [i for i in answer.custom_ids() if i.startswith("seed:retry:")]
    since = h.fake.mark()
    pressed = await h.fake.press_button(h.world.alice, answer, retry_id)
    await pressed.wait_response()
    again = await h.fake.wait_for_message(
        h.world.channel, contains="echo: to be retried", since=since
    )
    assert again.id != answer.id
    assert h.prompts()[-2:] == ["to be retried", "to be retried"]


async def test_editing_an_inline_message_answers_it_again(harness: Harness) -> None:
    h = harness
    await autoreply(h, "inline")
    since = h.fake.mark()
    asked = await h.fake.send_message(h.world.alice, h.world.channel, "befor")
    await inline_answer(h, asked, since)
    await h.app.bot.idle()
    since = h.fake.mark()
    await h.fake.edit_message(asked, "before")
    await h.fake.wait_for_message(h.world.channel, contains="echo: before", since=since)


# -- refusals -------------------------------------------------------------------------------


async def test_a_refused_flood_in_an_autoreply_channel_costs_one_notice(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(SEED_BOT_LIMITS__USER_REQUESTS="1")
    await autoreply(h, "inline")
    since = h.fake.mark()
    asked = await h.fake.send_message(h.world.bob, h.world.channel, "the only one")
    await inline_answer(h, asked, since)
    await h.app.bot.idle()
    since = h.fake.mark()
    for n in range(FLOOD):
        await h.fake.send_message(h.world.bob, h.world.channel, f"more {n}")
    await h.fake.sync_gateway()
    await h.app.bot.idle()
    calls = rest_calls(h, since)
    assert [c.route for c in calls] == ["POST /channels/{channel_id}/messages"], calls
    assert "request limit" in h.fake.bot_messages(h.world.channel)[-1].content
    assert len(h.fal.requests) == 1


# -- who may set it, and where it shows ----------------------------------------------------


async def test_setting_it_needs_manage_channels_and_for_the_server_manage_server(
    harness: Harness,
) -> None:
    h = harness
    text = await command(h, h.world.bob, h.world.channel, "autoreply", {"mode": "threads"})
    assert text.startswith("⛔") and "Manage Channels" in text
    manager(h, h.world.bob)
    text = await command(
        h, h.world.bob, h.world.channel, "autoreply", {"mode": "threads", "server": True}
    )
    assert text.startswith("⛔") and "Manage Server" in text
    text = await command(h, h.world.bob, h.world.channel, "autoreply", {"mode": "threads"})
    assert text == "✅ Autoreply set to **threads** for this channel's default."
    # refused ones changed nothing: the channel's own value is all there is
    shown = await command(h, h.world.bob, h.world.channel, "settings", {})
    assert "• `autoreply`: threads *(channel)*" in shown


async def test_it_is_set_per_channel_or_server_not_per_thread(harness: Harness) -> None:
    h = harness
    thread, _ = await h.converse(h.world.alice, "a conversation")
    text = await command(h, h.world.alice, thread, "autoreply", {"mode": "inline"})
    assert text.startswith("⚠️") or text.startswith("⛔"), text
    assert "channel or server" in text


async def test_settings_show_autoreply_and_where_it_comes_from(harness: Harness) -> None:
    h = harness
    shown = await command(h, h.world.alice, h.world.channel, "settings", {})
    assert "• `autoreply`: off *(model default)*" in shown
    await autoreply(h, "threads", server=True)
    shown = await command(h, h.world.alice, h.world.channel, "settings", {})
    assert "• `autoreply`: threads *(server)*" in shown
    # the server's default applies to its channels at once
    since = h.fake.mark()
    asked = await h.fake.send_message(h.world.bob, h.world.channel, "server-wide")
    await h.fake.wait_for_thread(h.world.channel, from_message=asked, since=since)
    await autoreply(h, "inline")
    shown = await command(h, h.world.alice, h.world.channel, "settings", {})
    assert "• `autoreply`: inline *(channel)*" in shown


async def test_a_flood_of_chatter_costs_one_settings_read_per_channel(harness: Harness) -> None:
    """Every message of every channel asks whether to answer: the mode is read once per
    channel, not once per message, and nothing else is done for chatter in an off channel."""
    h = harness
    seen: list[tuple[str, bool]] = []
    observers = h.app.store.db.observers
    observers.append(lambda what, write: seen.append((what, write)))
    try:
        for n in range(FLOOD):  # one after the other: each read on its own
            await h.fake.send_message(h.world.bob, h.world.channel, f"chatter {n}")
            await h.fake.sync_gateway()
            await h.app.bot.idle()
    finally:
        observers.pop()
    assert seen == [("settings_layers", False)]
    assert h.fal.requests == {}
