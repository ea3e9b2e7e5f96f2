"""End to end, everywhere Discord lets the app be: the synced commands (both installation
types, every context), ``/ask`` and "Ask Seed" where the bot is not a member (answered
through the interaction), the Reply button and its modal (also after a restart), "Ask Seed"
in the bot's own server, forwarded messages, and the bad inputs of each."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bot.domain.models import TurnState
from tests.chat.conftest import Harness, HarnessFactory, answered, away, reply_button, reply_through
from tests.fakes.discord import FakeInteraction, FakeMessage, Perm, UserFile
from tests.fakes.discord.models import FakeUser
from tests.fakes.fal import ModelOutput

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)
SETTINGS_COMMANDS = ("thinking", "effort", "system", "params", "settings")


def fal_inputs(h: Harness) -> list[dict[str, Any]]:
    return [dict(r.input) for r in h.fal.requests.values()]


async def latest_turn_state(h: Harness, scope_id: str) -> TurnState:
    """The state of the conversation's latest turn once the bot has nothing running."""
    await h.app.bot.idle()
    turn = await h.app.store.turns.latest_turn(scope_id)
    assert turn is not None
    return turn.state


# -- what is synced -------------------------------------------------------------------------


async def test_synced_commands_offer_ask_everywhere_and_settings_only_in_servers(
    harness: Harness,
) -> None:
    h = harness
    bot = h.app.bot
    # discord.py 2.7 reads these arrays back off by one: check the raw payloads.
    synced = {
        (c["name"], c["type"]): c for c in await bot.http.get_global_commands(h.fake.application_id)
    }
    for key in (("ask", 1), ("Ask Seed", 3)):
        assert synced[key]["integration_types"] == [0, 1], key
        assert synced[key]["contexts"] == [0, 1, 2], key
    for name in SETTINGS_COMMANDS:
        assert synced[(name, 1)]["integration_types"] == [0], name
        assert synced[(name, 1)]["contexts"] == [0], name
    for name in ("reset", "retry", "admin"):
        assert synced[(name, 1)]["integration_types"] == [0], name
    # The fake offers them accordingly: /thinking not where the bot is not.
    there = away(h)
    with pytest.raises(AssertionError, match="not available to"):
        await h.fake.invoke_command(there.carol, there.channel, "thinking", {"mode": "auto"})


# -- /ask where the bot is not a member -------------------------------------------------------


async def test_ask_in_a_server_without_the_bot_answers_privately_through_the_interaction(
    harness: Harness,
) -> None:
    h = harness
    there = away(h)
    ask = await h.fake.invoke_command(there.carol, there.channel, "ask", {"prompt": "hi there"})
    response = await ask.wait_response()
    assert response.type == 5 and response.ephemeral  # deferred at once, privately
    last = await answered(ask, "echo: hi there")
    assert last.ephemeral and all(m.ephemeral for m in ask.followups)
    turn = await h.app.store.turns.latest_turn(f"interaction:{ask.id}")
    assert turn is not None and reply_button(last) == f"seed:reply:{turn.id}"
    assert h.fake.messages_in(there.channel) == []  # nothing posted in the channel itself
    assert h.fake.threads() == []
    assert await latest_turn_state(h, f"interaction:{ask.id}") is TurnState.DELIVERED


async def test_ask_elsewhere_is_public_when_asked_and_allowed(harness: Harness) -> None:
    h = harness
    there = away(h)
    ask = await h.fake.invoke_command(
        there.carol, there.channel, "ask", {"prompt": "for all", "private": False}
    )
    assert not (await ask.wait_response()).ephemeral
    last = await answered(ask, "echo: for all")
    assert not last.ephemeral
    # Where the server does not let external apps post publicly, the answer stays private.
    h.fake.set_overwrite(there.channel, there.guild.everyone, deny=Perm.USE_EXTERNAL_APPS)
    denied = await h.fake.invoke_command(
        there.carol, there.channel, "ask", {"prompt": "not here", "private": False}
    )
    assert (await denied.wait_response()).ephemeral
    assert (await answered(denied, "echo: not here")).ephemeral


async def test_ask_in_a_dm_between_people_and_a_group_dm(harness: Harness) -> None:
    h = harness
    world = h.world
    h.fake.install_for_user(world.alice)
    dm = h.fake.create_private_channel(world.alice, world.bob)
    group = h.fake.create_private_channel(world.alice, world.bob, h.fake.create_user("dan"))
    for channel, prompt in ((dm, "in a dm"), (group, "in a group")):
        options = {"prompt": prompt, "thinking": "disabled"}
        ask = await h.fake.invoke_command(world.alice, channel, "ask", options)
        assert ask.context == 2
        last = await answered(ask, f"echo: {prompt}")
        assert last.ephemeral
        assert fal_inputs(h)[-1]["thinking"] == "disabled"  # the conversation's setting
    assert h.fake.messages_in(dm) == [] and h.fake.messages_in(group) == []


async def test_a_long_answer_goes_as_answer_md_within_the_follow_up_limit(
    harness: Harness,
) -> None:
    h = harness
    there = away(h)
    long_answer = "\n\n".join(f"Paragraph {n}: " + "words " * 300 for n in range(12))
    h.fal.responder = lambda args: ModelOutput(long_answer, "short reasoning")
    ask = await h.fake.invoke_command(there.carol, there.channel, "ask", {"prompt": "long"})
    original = await ask.wait_original(lambda m: "answer.md" in m.content, timeout=10)
    files = dict(original.files)
    assert files["answer.md"].decode() == long_answer + "\n"
    assert files["reasoning.md"].decode() == "short reasoning\n"
    assert original.content.startswith("Paragraph 0:") and len(original.content) <= 2000
    assert len(ask.followups) <= 5
    assert original.ephemeral and reply_button(original)
    # A medium answer goes in parts: the original and follow-ups, Reply on the last.
    medium = "\n\n".join(f"Part {n}: " + "words " * 300 for n in range(3))
    h.fal.responder = lambda args: ModelOutput(medium, None)
    ask = await h.fake.invoke_command(there.carol, there.channel, "ask", {"prompt": "medium"})
    last = await answered(ask, "Part 2:")
    assert 1 <= len(ask.followups) <= 5 and last is ask.followups[-1]
    assert reply_button(last) and not ask.original_message.custom_ids()  # type: ignore[union-attr]
    text = "".join(m.content for m in [ask.original_message, *ask.followups] if m)
    assert "Part 0:" in text and "Part 1:" in text


# -- Reply: the next turn of the same conversation ----------------------------------------------


async def test_reply_button_opens_a_modal_whose_text_is_the_next_turn_with_history(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness()
    there = away(h)
    ask = await h.fake.invoke_command(there.carol, there.channel, "ask", {"prompt": "first"})
    answer = await answered(ask, "echo: first")
    submit = await reply_through(h, there.carol, answer, "second")
    assert (await submit.wait_response()).ephemeral
    second = await answered(submit, "echo: second")
    history = fal_inputs(h)[-1]["messages"]
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[0]["content"] == "first"
    # A modal opened before a restart is answered after it ...
    press = await h.fake.press_button(there.carol, second, reply_button(second))
    assert (await press.wait_response()).type == 9
    await h.app.bot.idle()
    await h.stop()
    h2 = await make_harness()
    submit = await h2.fake.submit_modal(there.carol, press, {"seed:reply:text": "third"})
    await answered(submit, "echo: third")
    history = fal_inputs(h2)[-1]["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["first", "second"]
    # ... and the Reply button under an answer from before the restart still continues it.
    submit = await reply_through(h2, there.carol, second, "fourth")
    await answered(submit, "echo: fourth")
    history = fal_inputs(h2)[-1]["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["first", "second", "third"]
    assert await latest_turn_state(h2, f"interaction:{ask.id}") is TurnState.DELIVERED


async def test_a_blank_reply_is_refused_with_a_clear_message(harness: Harness) -> None:
    h = harness
    there = away(h)
    ask = await h.fake.invoke_command(there.carol, there.channel, "ask", {"prompt": "first"})
    answer = await answered(ask, "echo: first")
    count = len(h.fal.requests)
    submit = await reply_through(h, there.carol, answer, "   ")
    response = await submit.wait_response()
    assert response.ephemeral and response.message is not None
    assert "empty" in response.message.content
    assert len(h.fal.requests) == count


async def test_reply_and_ask_seed_pass_the_gate(harness: Harness) -> None:
    h = harness
    there = away(h)
    ask = await h.fake.invoke_command(there.carol, there.channel, "ask", {"prompt": "first"})
    answer = await answered(ask, "echo: first")
    target = await h.fake.send_message(there.carol, there.channel, "what is this")
    (h.tmp_path / "config.toml").write_text(f'[access]\ndeny_users = ["{there.carol.id}"]\n')
    assert h.app.bot.reload_config is not None and await h.app.bot.reload_config() == []
    count = len(h.fal.requests)
    press = await h.fake.press_button(there.carol, answer, reply_button(answer))
    refused = await press.wait_response()
    assert refused.type == 4 and refused.ephemeral and press.modal is None
    menu = await h.fake.invoke_message_command(there.carol, target, "Ask Seed")
    refused = await menu.wait_response()
    assert refused.type == 4 and refused.ephemeral and menu.modal is None
    assert len(h.fal.requests) == count


# -- "Ask Seed" ---------------------------------------------------------------------------------


async def ask_seed(
    h: Harness, user: FakeUser, target: FakeMessage, question: str = ""
) -> FakeInteraction:
    menu = await h.fake.invoke_message_command(user, target, "Ask Seed")
    assert (await menu.wait_response()).type == 9
    return await h.fake.submit_modal(
        user, menu, {"seed:ask:question": question} if question else {}
    )


async def test_ask_seed_in_the_bots_server_opens_a_thread_on_the_target(harness: Harness) -> None:
    h = harness
    world = h.world
    target = await h.fake.send_message(
        world.alice, world.channel, "a cat picture", files=[UserFile("cat.png", PNG)]
    )
    since = h.fake.mark()
    submit = await ask_seed(h, world.bob, target, "what animal?")
    thread = await h.fake.wait_for_thread(world.channel, from_message=target, since=since)
    answer = await h.answer_in(thread, since=since, contains="echo:")
    assert "what animal?" in answer.content
    sent = fal_inputs(h)[-1]
    assert "a cat picture" in sent["prompt"] and "what animal?" in sent["prompt"]
    assert len(sent["image_urls"]) == 1
    notice = await submit.wait_original()
    assert notice.ephemeral and f"<#{thread.id}>" in notice.content
    # The conversation goes on in the thread like any other.
    since = h.fake.mark()
    await h.fake.send_message(world.bob, thread, "and its name?")
    await h.answer_in(thread, since=since, contains="echo: and its name?")
    assert fal_inputs(h)[-1]["messages"][0]["role"] == "user"


async def test_ask_seed_elsewhere_answers_through_the_interaction(harness: Harness) -> None:
    h = harness
    there = away(h)
    target = await h.fake.send_message(there.carol, there.channel, "explain this")
    submit = await ask_seed(h, there.carol, target)  # the question is optional
    last = await answered(submit, "echo:")
    assert last.ephemeral and reply_button(last)
    assert "explain this" in fal_inputs(h)[-1]["prompt"]
    assert h.fake.messages_in(there.channel) == [target]


async def test_ask_seed_on_a_message_with_nothing_usable_says_so(harness: Harness) -> None:
    h = harness
    there = away(h)
    target = await h.fake.send_message(
        there.carol, there.channel, "", files=[UserFile("archive.zip", b"PK\x03\x04")]
    )
    menu = await h.fake.invoke_message_command(there.carol, target, "Ask Seed")
    response = await menu.wait_response()
    assert response.type == 4 and response.ephemeral and response.message is not None
    assert "nothing I can read" in response.message.content
    assert h.fal.requests == {}


# -- forwarded messages -------------------------------------------------------------------------


async def test_forwarded_messages_are_input_in_all_three_places(harness: Harness) -> None:
    h = harness
    world = h.world
    other = h.fake.create_text_channel(world.guild, "other")
    original = await h.fake.send_message(
        world.alice, other, "the forwarded words", files=[UserFile("cat.png", PNG)]
    )
    # 1. A message mentioning the bot that replies to a forward.
    forward = await h.fake.forward(original, world.channel, world.bob)
    _, thread = await h.start_thread(world.bob, "what is this?", reply_to=forward)
    await h.answer_in(thread, since=0, contains="echo:")
    sent = fal_inputs(h)[-1]
    assert "the forwarded words" in sent["prompt"] and len(sent["image_urls"]) == 1
    # 2. A forward into a bound thread.
    since = h.fake.mark()
    await h.fake.forward(original, thread, world.bob)
    await h.answer_in(thread, since=since, contains="the forwarded words")
    sent = fal_inputs(h)[-1]
    assert "the forwarded words" in sent["prompt"] and len(sent["image_urls"]) == 1
    # 3. The target of "Ask Seed", where the bot is not.
    there = away(h)
    h.fake.add_member(world.guild, there.carol)
    elsewhere = await h.fake.forward(original, there.channel, there.carol)
    submit = await ask_seed(h, there.carol, elsewhere, "thoughts?")
    await answered(submit, "echo:")
    sent = fal_inputs(h)[-1]
    assert "the forwarded words" in sent["prompt"] and len(sent["image_urls"]) == 1


# -- what Discord refuses -----------------------------------------------------------------------


async def test_an_answer_after_the_interaction_expired_is_logged_and_the_turn_failed(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    there = away(h)
    h.fal.hold()
    ask = await h.fake.invoke_command(there.carol, there.channel, "ask", {"prompt": "slow"})
    await ask.wait_response()
    (request_id,) = await h.fal.wait_for_submissions(1)
    h.fake.expire_interaction(ask)
    with caplog.at_level(logging.WARNING, logger="bot"):
        await h.fal.release(request_id)
        await h.app.bot.idle()
    assert any("interaction expired" in r.getMessage() for r in caplog.records)
    assert await latest_turn_state(h, f"interaction:{ask.id}") is TurnState.FAILED
    assert ask.original_message is not None and ask.original_message.loading


async def test_a_refused_follow_up_is_logged_and_the_turn_failed(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    there = away(h)
    medium = "\n\n".join(f"Part {n}: " + "words " * 300 for n in range(3))
    h.fal.responder = lambda args: ModelOutput(medium, None)
    h.fake.fail(
        "POST /webhooks/{webhook_id}/{webhook_token}",
        status=400,
        body={"code": 40094, "message": "Maximum number of follow up messages hit"},
    )
    with caplog.at_level(logging.WARNING, logger="bot"):
        ask = await h.fake.invoke_command(there.carol, there.channel, "ask", {"prompt": "medium"})
        await ask.wait_original(lambda m: "Part 0:" in m.content, timeout=10)
        await h.app.bot.idle()
    assert any("cannot answer through interaction" in r.getMessage() for r in caplog.records)
    assert await latest_turn_state(h, f"interaction:{ask.id}") is TurnState.FAILED


async def test_ask_seed_in_a_thread_or_on_a_message_with_a_thread_goes_on_there(
    harness: Harness,
) -> None:
    h = harness
    world = h.world
    since = h.fake.mark()
    first, thread = await h.start_thread(world.alice, "hello")
    await h.answer_in(thread, since=since, contains="echo: hello")
    # On a message inside the conversation's thread: the next turn there, with history.
    inside = await h.fake.send_message(world.bob, thread, "a remark")
    await h.answer_in(thread, since=since, contains="echo: [Bob]: a remark")
    since = h.fake.mark()
    submit = await ask_seed(h, world.bob, inside, "is that right?")
    answer = await h.answer_in(thread, since=since, contains="echo:")
    assert "is that right?" in answer.content
    assert (await submit.wait_original()).ephemeral
    sent = fal_inputs(h)[-1]
    assert "a remark" in sent["prompt"] and len(sent["messages"]) == 4
    # On the message the thread was opened on: that thread, not a second one.
    since = h.fake.mark()
    await ask_seed(h, world.bob, first, "once more")
    await h.answer_in(thread, since=since, contains="once more")
    assert len(h.fake.threads(world.channel)) == 1


async def test_a_slow_answer_through_the_interaction_shows_a_stop_button_that_stops_it(
    harness: Harness,
) -> None:
    h = harness
    there = away(h)
    h.fal.hold()
    ask = await h.fake.invoke_command(there.carol, there.channel, "ask", {"prompt": "slow"})
    status = await ask.wait_original(
        lambda m: any(c.startswith("seed:stop:") for c in m.custom_ids()), timeout=10
    )
    assert status.ephemeral
    (stop,) = status.custom_ids()
    press = await h.fake.press_button(there.carol, status, stop)
    await press.wait_response()
    stopped = await ask.wait_original(lambda m: "Stopped" in m.content, timeout=10)
    assert stopped.custom_ids() == [] and ask.followups == []
    assert await latest_turn_state(h, f"interaction:{ask.id}") is TurnState.STOPPED
    (request,) = h.fal.requests.values()
    assert request.cancel_requested  # fal was asked to cancel it


async def test_reply_and_ask_seed_submissions_count_against_the_quotas(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(SEED_BOT_LIMITS__USER_REQUESTS="1")
    there = away(h)
    ask = await h.fake.invoke_command(there.carol, there.channel, "ask", {"prompt": "first"})
    answer = await answered(ask, "echo: first")
    count = len(h.fal.requests)
    submit = await reply_through(h, there.carol, answer, "second")
    refused = await submit.wait_response()
    assert refused.type == 4 and refused.ephemeral and refused.message is not None
    assert "request limit" in refused.message.content
    target = await h.fake.send_message(there.carol, there.channel, "explain")
    submit = await ask_seed(h, there.carol, target, "why?")
    refused = await submit.wait_response()
    assert refused.type == 4 and refused.ephemeral
    assert len(h.fal.requests) == count
