"""End to end: the slash commands, invoked by people on the fake Discord; what they change is
checked in what the next turn sends to the fake fal."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chat.conftest import Harness, HarnessFactory
from tests.fakes.discord import ChannelType, Perm, ThreadMemberAdded, UserFile
from tests.fakes.discord.models import FakeChannel, FakeRole, FakeUser

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)
GENERATION_KEYS = (
    "thinking",
    "reasoning_effort",
    "system_prompt",
    "max_completion_tokens",
    "temperature",
    "top_p",
)


# -- helpers ------------------------------------------------------------------------------------


async def command(
    h: Harness,
    user: FakeUser,
    channel: FakeChannel,
    name: str,
    options: dict[str, Any] | None = None,
) -> str:
    """``user`` runs ``/name``; the bot must answer ephemerally (flags 64); returns the text."""
    interaction = await h.fake.invoke_command(user, channel, name, options)
    response = await interaction.wait_response()
    assert response.type == 4, response
    assert response.ephemeral, f"/{name} answered publicly: {response}"
    assert response.message is not None
    assert response.message.flags & 64
    assert response.message.allowed_mentions is not None
    assert response.message.allowed_mentions.get("parse") == []
    return response.message.content


async def next_input(h: Harness, thread: FakeChannel, text: str) -> dict[str, Any]:
    """Alice says ``text`` in ``thread``; returns what fal received for that turn."""
    since = h.fake.mark()
    count = len(h.fal.requests)
    await h.fake.send_message(h.world.alice, thread, text)
    await h.answer_in(thread, since=since, contains=f"echo: {text}")
    requests = list(h.fal.requests.values())
    assert len(requests) == count + 1
    return dict(requests[-1].input)


async def new_thread(h: Harness, text: str = "hello there") -> tuple[FakeChannel, dict[str, Any]]:
    """Alice opens a conversation; returns its thread and the first turn's fal input."""
    since = h.fake.mark()
    _, thread = await h.start_thread(h.world.alice, text)
    await h.answer_in(thread, since=since, contains=f"echo: {text}")
    return thread, dict(list(h.fal.requests.values())[-1].input)


def generation(fal_input: dict[str, Any]) -> dict[str, Any]:
    return {k: fal_input[k] for k in GENERATION_KEYS if k in fal_input}


def give_role(h: Harness, user: FakeUser, name: str, permissions: Perm) -> FakeRole:
    role = h.fake.create_role(h.world.guild, name, permissions=permissions)
    h.fake.set_member_roles(h.world.guild, user, [role])
    return role


# -- settings in a thread -------------------------------------------------------------------------


async def test_thread_owner_settings_change_the_next_turn(harness: Harness) -> None:
    h = harness
    thread, first = await new_thread(h)
    assert generation(first) == {}

    text = await command(h, h.world.alice, thread, "thinking", {"mode": "disabled"})
    assert text.startswith("✅") and "disabled" in text and "this thread" in text
    assert generation(await next_input(h, thread, "two")) == {"thinking": "disabled"}

    text = await command(h, h.world.alice, thread, "effort", {"level": "high"})
    assert text.startswith("✅") and "high" in text
    assert generation(await next_input(h, thread, "three")) == {
        "thinking": "disabled",
        "reasoning_effort": "high",
    }

    text = await command(h, h.world.alice, thread, "system", {"prompt": "Answer like a pirate."})
    assert text.startswith("✅") and "System prompt set" in text
    got = generation(await next_input(h, thread, "four"))
    assert got["system_prompt"] == "Answer like a pirate."

    text = await command(
        h,
        h.world.alice,
        thread,
        "params",
        {"max_tokens": 512, "temperature": 0.25, "top_p": 0.5},
    )
    assert text.startswith("✅")
    assert "max_tokens **512**" in text and "temperature **0.25**" in text
    got = generation(await next_input(h, thread, "five"))
    assert got == {
        "thinking": "disabled",
        "reasoning_effort": "high",
        "system_prompt": "Answer like a pirate.",
        "max_completion_tokens": 512,
        "temperature": 0.25,
        "top_p": 0.5,
    }

    # clearing and resetting take the values away again
    text = await command(h, h.world.alice, thread, "system", {"clear": True})
    assert text.startswith("✅") and "cleared" in text
    text = await command(h, h.world.alice, thread, "params", {"reset": True})
    assert text.startswith("✅") and "reset" in text
    assert generation(await next_input(h, thread, "six")) == {
        "thinking": "disabled",
        "reasoning_effort": "high",
    }
    # the confirmations never went into the thread as public messages
    assert all(not m.content.startswith("✅") for m in h.fake.messages_in(thread))


# -- permissions ----------------------------------------------------------------------------------


async def test_other_member_cannot_change_a_thread(harness: Harness) -> None:
    h = harness
    thread, _ = await new_thread(h)
    attempts: list[tuple[str, dict[str, Any] | None]] = [
        ("thinking", {"mode": "disabled"}),
        ("effort", {"level": "low"}),
        ("system", {"prompt": "be rude"}),
        ("params", {"temperature": 0.1}),
        ("reset", None),
    ]
    for name, options in attempts:
        text = await command(h, h.world.bob, thread, name, options)
        assert text.startswith("⛔"), (name, text)
        assert "manage threads" in text, (name, text)
    got = await next_input(h, thread, "still the same?")
    assert generation(got) == {}
    assert len(got["messages"]) == 2  # the /reset was refused too


async def test_member_who_may_manage_threads_can_change_a_thread(harness: Harness) -> None:
    h = harness
    thread, _ = await new_thread(h)
    give_role(h, h.world.bob, "thread mods", Perm.MANAGE_THREADS)
    text = await command(h, h.world.bob, thread, "effort", {"level": "minimal"})
    assert text.startswith("✅")
    assert generation(await next_input(h, thread, "two")) == {"reasoning_effort": "minimal"}


async def test_channel_and_server_defaults_need_permissions(harness: Harness) -> None:
    h = harness
    channel = h.world.channel
    text = await command(h, h.world.alice, channel, "thinking", {"mode": "disabled"})
    assert text.startswith("⛔") and "Manage Channels" in text
    text = await command(h, h.world.alice, channel, "effort", {"level": "low", "server": True})
    assert text.startswith("⛔") and "Manage Server" in text
    _, first = await new_thread(h, "nothing set")
    assert generation(first) == {}

    # Manage Channels lets alice set this channel's default, but not the server's
    give_role(h, h.world.alice, "channel mods", Perm.MANAGE_CHANNELS)
    text = await command(h, h.world.alice, channel, "thinking", {"mode": "disabled"})
    assert text.startswith("✅") and "this channel's default" in text
    text = await command(h, h.world.alice, channel, "effort", {"level": "low", "server": True})
    assert text.startswith("⛔") and "Manage Server" in text
    _, got = await new_thread(h, "channel default")
    assert generation(got) == {"thinking": "disabled"}

    give_role(h, h.world.alice, "admins", Perm.MANAGE_GUILD)
    text = await command(h, h.world.alice, channel, "effort", {"level": "low", "server": True})
    assert text.startswith("✅") and "this server's default" in text
    text = await command(
        h, h.world.alice, channel, "system", {"prompt": "Be brief.", "server": True}
    )
    assert text.startswith("✅")
    _, got = await new_thread(h, "server default")
    assert generation(got) == {
        "thinking": "disabled",
        "reasoning_effort": "low",
        "system_prompt": "Be brief.",
    }


# -- invalid values -------------------------------------------------------------------------------


async def test_params_ranges_are_enforced_by_the_synced_definition(harness: Harness) -> None:
    """Discord itself refuses out-of-range numbers (min/max in the synced options), so they
    never reach the bot; the fake, like Discord's client, refuses to send them."""
    h = harness
    [params] = [c for c in h.fake.registered_commands() if c["name"] == "params"]
    spec = {o["name"]: o for o in params["options"]}
    assert (spec["temperature"]["min_value"], spec["temperature"]["max_value"]) == (0, 2)
    assert (spec["top_p"]["min_value"], spec["top_p"]["max_value"]) == (0, 1)
    assert (spec["max_tokens"]["min_value"], spec["max_tokens"]["max_value"]) == (1, 131072)
    thread, _ = await new_thread(h)
    with pytest.raises(AssertionError, match="outside"):
        await h.fake.invoke_command(h.world.alice, thread, "params", {"temperature": 2.5})
    assert generation(await next_input(h, thread, "two")) == {}


async def test_invalid_values_get_a_clear_error_and_change_nothing(harness: Harness) -> None:
    h = harness
    thread, _ = await new_thread(h)
    await command(h, h.world.alice, thread, "system", {"prompt": "Keep me."})
    await command(h, h.world.alice, thread, "params", {"temperature": 0.5})

    text = await command(h, h.world.alice, thread, "system")
    assert text.startswith("⛔") and "`prompt`" in text and "`clear: True`" in text
    text = await command(h, h.world.alice, thread, "system", {"prompt": "x", "clear": True})
    assert text.startswith("⛔") and "`prompt`" in text and "`clear: True`" in text
    text = await command(h, h.world.alice, thread, "system", {"prompt": "   "})
    assert "system_prompt" in text and "Nothing was changed" in text, text
    text = await command(h, h.world.alice, thread, "params")
    assert text.startswith("⛔") and "at least one of" in text
    text = await command(h, h.world.alice, thread, "params", {"top_p": 0.9, "reset": True})
    assert text.startswith("⛔") and "not both" in text

    got = generation(await next_input(h, thread, "two"))
    assert got == {"system_prompt": "Keep me.", "temperature": 0.5}


# -- /settings ------------------------------------------------------------------------------------


async def test_settings_shows_each_value_and_its_source(make_harness: HarnessFactory) -> None:
    h = await make_harness(SEED_BOT_MODEL__TOP_P="0.4")
    give_role(h, h.world.alice, "admins", Perm.MANAGE_GUILD | Perm.MANAGE_CHANNELS)
    thread, _ = await new_thread(h)
    channel = h.world.channel
    await command(h, h.world.alice, thread, "thinking", {"mode": "auto"})
    await command(h, h.world.alice, thread, "system", {"prompt": "Talk like a robot."})
    await command(h, h.world.alice, channel, "effort", {"level": "medium"})
    await command(h, h.world.alice, channel, "params", {"temperature": 1.5, "server": True})

    text = await command(h, h.world.alice, thread, "settings")
    lines = {line.split("`")[1]: line for line in text.splitlines() if line.startswith("•")}
    assert set(lines) == set(
        [
            "thinking",
            "effort",
            "system_prompt",
            "max_completion_tokens",
            "temperature",
            "top_p",
            "persona",
            "autoreply",
        ]
    )
    assert lines["thinking"] == "• `thinking`: auto *(thread)*"
    assert "Talk like a robot." in lines["system_prompt"]
    assert lines["system_prompt"].endswith("*(thread)*")
    assert lines["effort"] == "• `effort`: medium *(channel)*"
    assert lines["temperature"] == "• `temperature`: 1.5 *(server)*"
    assert lines["top_p"] == "• `top_p`: 0.4 *(config file)*"
    assert lines["max_completion_tokens"] == "• `max_completion_tokens`: 4096 *(model default)*"

    # in the channel: no thread layer
    text = await command(h, h.world.alice, channel, "settings")
    assert "• `thinking`: enabled *(model default)*" in text
    assert "• `effort`: medium *(channel)*" in text

    got = generation(await next_input(h, thread, "two"))
    assert got == {
        "thinking": "auto",
        "reasoning_effort": "medium",
        "system_prompt": "Talk like a robot.",
        "temperature": 1.5,
        "top_p": 0.4,
    }


# -- /reset ---------------------------------------------------------------------------------------


async def test_reset_sends_no_history_but_keeps_old_turns(harness: Harness) -> None:
    h = harness
    thread, _ = await new_thread(h, "first")
    got = await next_input(h, thread, "second")
    assert len(got["messages"]) == 2

    text = await command(h, h.world.alice, thread, "reset")
    assert text.startswith("✅") and "afresh" in text
    got = await next_input(h, thread, "third")
    assert got.get("messages", []) == []
    got = await next_input(h, thread, "fourth")
    assert [m["content"] for m in got["messages"] if m["role"] == "user"] == ["third"]

    conversation = await h.app.store.conversations.conversation_for_scope(str(thread.id))
    assert conversation is not None and conversation.epoch == 1
    old = await h.app.store.conversations.history(conversation.id, 0)
    assert len(old) == 4  # first and second: a user and an assistant message each


async def test_reset_outside_a_bound_thread_is_refused(harness: Harness) -> None:
    h = harness
    text = await command(h, h.world.alice, h.world.channel, "reset")
    assert text.startswith("⛔") and "thread" in text
    unbound = await h.fake.create_thread(h.world.alice, h.world.channel, "just people")
    text = await command(h, h.world.alice, unbound, "reset")
    assert text.startswith("⛔") and "no conversation" in text
    assert h.fal.requests == {}


# -- /ask -----------------------------------------------------------------------------------------


async def test_ask_in_a_channel_starts_a_public_thread(harness: Harness) -> None:
    h = harness
    since = h.fake.mark()
    interaction = await h.fake.invoke_command(
        h.world.alice, h.world.channel, "ask", {"prompt": "why is the sky blue?"}
    )
    response = await interaction.wait_response()
    assert response.type == 5  # deferred: creating the thread may outlast Discord's 3 s
    thread = await h.fake.wait_for_thread(h.world.channel, since=since)
    assert thread.type == ChannelType.PUBLIC_THREAD
    assert thread.name == "why is the sky blue?"
    assert not response.ephemeral
    original = await interaction.wait_original()
    assert str(thread.id) in original.content
    echo = await h.fake.wait_for_message(thread, contains="asked:", since=since)
    assert "Alice" in echo.content and "why is the sky blue?" in echo.content
    answer = await h.answer_in(thread, since=since, contains="echo: why is the sky blue?")
    assert answer.id != echo.id
    [request] = h.fal.requests.values()
    assert request.input["prompt"] == "why is the sky blue?"
    assert generation(dict(request.input)) == {}
    conversation = await h.app.store.conversations.conversation_for_scope(str(thread.id))
    assert conversation is not None and conversation.owner_id == str(h.world.alice.id)
    # the thread continues like any other, and its asker owns it
    text = await command(h, h.world.alice, thread, "effort", {"level": "low"})
    assert text.startswith("✅")
    got = await next_input(h, thread, "and at sunset?")
    assert got["reasoning_effort"] == "low" and len(got["messages"]) == 2


async def test_ask_private_thread_adds_the_user(harness: Harness) -> None:
    h = harness
    since = h.fake.mark()
    interaction = await h.fake.invoke_command(
        h.world.alice, h.world.channel, "ask", {"prompt": "a secret question", "private": True}
    )
    response = await interaction.wait_response()
    assert response.ephemeral
    thread = await h.fake.wait_for_thread(h.world.channel, since=since)
    assert thread.type == ChannelType.PRIVATE_THREAD
    assert int(thread.type) == 12
    await h.fake.wait_for_event(
        ThreadMemberAdded, lambda e: e.user_id == h.world.alice.id, since=since
    )
    assert h.world.alice.id in thread.member_ids
    added = h.fake.events_of(ThreadMemberAdded, since=since)
    assert any(e.thread_id == thread.id and e.user_id == h.world.alice.id for e in added)
    await h.fake.wait_for_message(thread, contains="a secret question", since=since)
    await h.answer_in(thread, since=since, contains="echo: a secret question")


async def test_ask_sends_thinking_and_effort(harness: Harness) -> None:
    h = harness
    since = h.fake.mark()
    interaction = await h.fake.invoke_command(
        h.world.alice,
        h.world.channel,
        "ask",
        {"prompt": "think hard", "thinking": "enabled", "effort": "high"},
    )
    await interaction.wait_response()
    thread = await h.fake.wait_for_thread(h.world.channel, since=since)
    await h.answer_in(thread, since=since, contains="echo: think hard")
    [request] = h.fal.requests.values()
    assert generation(dict(request.input)) == {"thinking": "enabled", "reasoning_effort": "high"}


async def test_ask_with_an_image_sends_a_durable_url(harness: Harness) -> None:
    h = harness
    since = h.fake.mark()
    interaction = await h.fake.invoke_command(
        h.world.alice,
        h.world.channel,
        "ask",
        {"prompt": "what is this?", "image": UserFile("pic.png", PNG)},
    )
    await interaction.wait_response()
    thread = await h.fake.wait_for_thread(h.world.channel, since=since)
    await h.answer_in(thread, since=since, contains="echo: what is this?")
    [request] = h.fal.requests.values()
    [url] = request.input["image_urls"]
    assert url.startswith(h.fal.base_url)
    assert [f.data for f in h.fal.files.values()] == [PNG]


async def test_ask_inside_a_bound_thread_continues_it(harness: Harness) -> None:
    h = harness
    thread, _ = await new_thread(h, "first")
    since = h.fake.mark()
    interaction = await h.fake.invoke_command(
        h.world.alice, thread, "ask", {"prompt": "second", "effort": "low"}
    )
    response = await interaction.wait_response()
    assert not response.ephemeral
    original = await interaction.wait_original()
    assert "second" in original.content
    await h.answer_in(thread, since=since, contains="echo: second")
    assert h.fake.threads(h.world.channel) == [thread]
    request = list(h.fal.requests.values())[-1]
    assert request.input["reasoning_effort"] == "low"
    assert len(request.input["messages"]) == 2


async def test_ask_options_in_someone_elses_thread_are_refused(harness: Harness) -> None:
    """/ask's thinking/effort change the thread's settings, so they need the same permission
    as /thinking and /effort there."""
    h = harness
    thread, _ = await new_thread(h)
    text = await command(
        h, h.world.bob, thread, "ask", {"prompt": "sneaky", "thinking": "disabled"}
    )
    assert text.startswith("⛔") and "manage threads" in text
    assert generation(await next_input(h, thread, "two")) == {}
    assert len(h.fal.requests) == 2
    # without the options, anyone in the thread may ask
    since = h.fake.mark()
    interaction = await h.fake.invoke_command(h.world.bob, thread, "ask", {"prompt": "hi all"})
    await interaction.wait_response()
    await h.answer_in(thread, since=since, contains="hi all")


async def test_ask_without_thread_permission_is_explained(harness: Harness) -> None:
    h = harness
    h.fake.deny_bot(h.world.channel, Perm.CREATE_PUBLIC_THREADS)
    text = await command(h, h.world.alice, h.world.channel, "ask", {"prompt": "hello"})
    assert text.startswith("⚠️") and "Create Public Threads" in text
    assert h.fal.requests == {}
