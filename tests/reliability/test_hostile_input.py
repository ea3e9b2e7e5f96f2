"""A corpus of hostile and odd input, sent through the fake Discord: every case ends in a
clear answer or a deliberate silence, never a crash, never a ping, and never a damaged
conversation (the next normal message is answered with the earlier good history intact)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot.chat.texts import compose_reply
from tests.chat.conftest import Harness, HarnessFactory
from tests.fakes.discord import InteractionResponded, MessageCreated, MessageEdited
from tests.fakes.discord.models import FakeChannel, FakeMessage, UserFile
from tests.fakes.fal import Failure, ModelOutput, echo_responder
from tests.reliability.conftest import bot_errors

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)
# A bitmap: a type the model does not take, so every one of these files is left out by name.
BMP = b"BM" + bytes(60)
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48
FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})", re.M)
GOOD = "good start"


# -- helpers the cases use ----------------------------------------------------------------------


def last_input(h: Harness) -> dict[str, Any]:
    return dict(list(h.fal.requests.values())[-1].input)


def posted_since(h: Harness, thread: FakeChannel, since: int) -> list[FakeMessage]:
    """The bot's messages created in ``thread`` after ``since``, as they are now (a status
    message edited into the answer shows the answer)."""
    ids = [
        e.message.id
        for e in h.fake.events_of(MessageCreated, since=since)
        if e.by_bot and e.message.channel_id == thread.id
    ]
    current = [h.fake.find_message(i) for i in ids]
    return [m for m in current if m is not None]


async def until_posted(
    h: Harness, thread: FakeChannel, since: int, done: Callable[[FakeMessage], bool]
) -> list[FakeMessage]:
    """Wait (on the fake's events, created or edited) until one of the bot's messages in
    ``thread`` since ``since`` satisfies ``done``; returns them all."""
    await h.fake.wait_for(
        lambda _: any(done(m) for m in posted_since(h, thread, since)),
        since=since,
        timeout=10,
        what=f"a bot message in {thread.id}",
    )
    return posted_since(h, thread, since)


async def send_and_wait(
    h: Harness,
    thread: FakeChannel,
    text: str,
    *,
    files: tuple[UserFile, ...] = (),
    expect: str = "echo:",
) -> list[FakeMessage]:
    """Alice sends ``text`` in ``thread``; returns the bot's messages up to the one holding
    ``expect``."""
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, text, files=files)
    return await until_posted(h, thread, since, lambda m: expect in m.content)


def warnings_of(messages: list[FakeMessage]) -> list[str]:
    return [line for m in messages for line in m.content.splitlines() if line.startswith("⚠️")]


# -- the cases ------------------------------------------------------------------------------------

Act = Callable[[Harness, FakeChannel], Awaitable[None]]


@dataclass(frozen=True)
class Case:
    act: Act
    #: whether the case's own message becomes a stored turn (answered by the model)
    adds_turn: bool = True
    env: dict[str, str] = field(default_factory=dict)


async def mention_only_in_channel(h: Harness, thread: FakeChannel) -> None:
    since = h.fake.mark()
    message = await h.mention(h.world.alice, "")
    new = await h.fake.wait_for_thread(h.world.channel, from_message=message, since=since)
    assert new.name == "Chat with Alice"
    posted = await until_posted(h, new, since, lambda m: "echo:" in m.content)
    assert all(m.content.strip() != "echo:" for m in posted)
    assert last_input(h)["prompt"].strip()


async def mention_only_in_thread(h: Harness, thread: FakeChannel) -> None:
    await send_and_wait(h, thread, f"<@{h.bot_user.id}>")
    assert last_input(h)["prompt"].strip()


async def whitespace_only(h: Harness, thread: FakeChannel) -> None:
    await send_and_wait(h, thread, "   \n\t  \n ")
    assert last_input(h)["prompt"].strip()


async def long_prompt(h: Harness, thread: FakeChannel) -> None:
    text = ("lorem ipsum dolor sit amet " * 160)[:4000]
    messages = await send_and_wait(h, thread, text, expect="That was long")
    assert last_input(h)["prompt"] == text.strip()
    assert all(len(m.content) <= 2000 for m in messages)


async def twenty_attachments(h: Harness, thread: FakeChannel) -> None:
    files = tuple(UserFile(f"p{n:02}.png", PNG) for n in range(20))
    messages = await send_and_wait(h, thread, "so many pictures", files=files)
    assert len(last_input(h)["image_urls"]) == 6
    [warning] = warnings_of(messages)
    assert "p06.png" in warning and "p19.png" in warning and "p05.png" not in warning
    assert all(len(m.content) <= 2000 for m in messages)


async def zero_byte_file(h: Harness, thread: FakeChannel) -> None:
    messages = await send_and_wait(
        h, thread, "empty file", files=(UserFile("empty.png", b"", size=None),)
    )
    assert "image_urls" not in last_input(h) or not last_input(h)["image_urls"]
    [warning] = warnings_of(messages)
    assert "empty.png" in warning and "empty" in warning
    assert h.fal.files == {}


async def oversized_file(h: Harness, thread: FakeChannel) -> None:
    big = PNG + b"\x00" * 4096
    messages = await send_and_wait(h, thread, "big picture", files=(UserFile("big.png", big),))
    assert not last_input(h).get("image_urls")
    [warning] = warnings_of(messages)
    assert "big.png" in warning and "limit" in warning
    assert h.fal.files == {}


async def png_labelled_video(h: Harness, thread: FakeChannel) -> None:
    await send_and_wait(
        h, thread, "a clip", files=(UserFile("clip.mp4", PNG, content_type="video/mp4"),)
    )
    # the declared type decides: it goes to the model as a video, which judges it
    assert len(last_input(h)["video_urls"]) == 1
    assert not last_input(h).get("image_urls")


async def exe_labelled_png(h: Harness, thread: FakeChannel) -> None:
    await send_and_wait(
        h, thread, "a picture?", files=(UserFile("setup.png", EXE, content_type="image/png"),)
    )
    assert len(last_input(h)["image_urls"]) == 1
    [stored] = h.fal.files.values()
    assert stored.data == EXE


async def hostile_filenames(h: Harness, thread: FakeChannel) -> None:
    role = h.fake.create_role(h.world.guild, "mods", mentionable=True)
    names = [
        "../../etc/passwd.bmp",
        "a`b```c.bmp",
        "||spoiler||.bmp",
        "@everyone.bmp",
        f"<@&{role.id}>.bmp",
        "two\nlines.bmp",
        "x" * 300 + ".bmp",
    ]
    files = tuple(UserFile(name, BMP, content_type="image/bmp") for name in names)
    messages = await send_and_wait(h, thread, "odd names", files=files)
    # one short line for everything left out, file names unable to break markdown or ping
    [warning] = warnings_of(messages)
    assert "`../../etc/passwd.bmp`" in warning
    assert "||" not in warning and "@everyone" not in warning and f"<@&{role.id}>" not in warning
    assert warning.count("`") % 2 == 0, warning
    assert len(warning) < 600


async def markup_in_prompt(h: Harness, thread: FakeChannel) -> None:
    role = h.fake.create_role(h.world.guild, "mods", mentionable=True)
    text = (
        f"||secret|| @everyone @here <@&{role.id}> <@{h.world.bob.id}>\n"
        "```python\nprint('unclosed')\n"
    )
    messages = await send_and_wait(h, thread, text)
    for m in messages:
        assert len(FENCE.findall(m.content)) % 2 == 0, m.content


async def markup_in_model_output(h: Harness, thread: FakeChannel) -> None:
    role = h.fake.create_role(h.world.guild, "mods", mentionable=True)
    ping = f"@everyone @here <@&{role.id}> <@{h.world.bob.id}>"
    output = f"Sure {ping} ||not| a spoiler|| and\n```js\nunclosed(" + "\n" * 3 + "x" * 2500
    reasoning = f"{ping} || ``` ||"

    def responder(args: dict[str, Any]) -> ModelOutput:
        if "markup please" in args["prompt"]:
            return ModelOutput(output, reasoning)
        return echo_responder(args)

    h.fal.responder = responder
    messages = await send_and_wait(h, thread, "markup please", expect="Sure")
    assert all(len(m.content) <= 2000 for m in messages)


def scripted(output: str, reasoning: str | None) -> Act:
    """The model answers the case's message with ``output`` and ``reasoning``."""

    async def act(h: Harness, thread: FakeChannel) -> None:
        def responder(args: dict[str, Any]) -> ModelOutput:
            if args["prompt"] == "odd answer please":
                return ModelOutput(output, reasoning)
            return echo_responder(args)

        h.fal.responder = responder
        # what the renderer makes of it (tested on its own in tests/chat/test_render.py)
        expected = compose_reply(output, reasoning, ())
        assert all(text.strip() for text in expected.messages)
        since = h.fake.mark()
        await h.fake.send_message(h.world.alice, thread, "odd answer please")
        posted = await until_posted(h, thread, since, lambda m: m.content == expected.messages[-1])
        assert [m.content for m in posted] == list(expected.messages)
        assert [name for m in posted for name, _ in m.files] == [f.filename for f in expected.files]
        assert all(len(FENCE.findall(m.content)) % 2 == 0 for m in posted), posted

    return act


async def slash_ask_with_markup(h: Harness, thread: FakeChannel) -> None:
    role = h.fake.create_role(h.world.guild, "mods", mentionable=True)
    prompt = f"@everyone <@&{role.id}> ||x|| ```py\nboom\n" + "y" * 3900
    since = h.fake.mark()
    interaction = await h.fake.invoke_command(
        h.world.alice, h.world.channel, "ask", {"prompt": prompt}
    )
    await interaction.wait_response()
    original = await interaction.wait_original()
    assert original.content.startswith("Started")
    new = await h.fake.wait_for_thread(h.world.channel, since=since)
    # (a channel name never pings; the raw role markup is still taken out)
    assert 0 < len(new.name) <= 100 and "<@&" not in new.name and "||" not in new.name
    await until_posted(h, new, since, lambda m: "echo:" in m.content)


async def system_prompt_too_long(h: Harness, thread: FakeChannel) -> None:
    # Discord itself refuses string options over 6000 characters: the bot never sees 9000.
    with pytest.raises(AssertionError, match="length out of range"):
        await h.fake.invoke_command(h.world.alice, thread, "system", {"prompt": "x" * 9000})
    interaction = await h.fake.invoke_command(h.world.alice, thread, "system", {"prompt": " \n "})
    response = await interaction.wait_response()
    assert response.ephemeral and response.message is not None
    assert response.message.content.startswith("⚠️ Invalid system_prompt")
    assert "Nothing was changed" in response.message.content
    interaction = await h.fake.invoke_command(
        h.world.alice, thread, "system", {"prompt": "p" * 6000}
    )
    response = await interaction.wait_response()
    assert response.message is not None and response.message.content.startswith("✅")
    interaction = await h.fake.invoke_command(h.world.alice, thread, "system", {"clear": True})
    await interaction.wait_response()
    # the failed command and the cleared prompt leave the next turn without one
    await send_and_wait(h, thread, "no system prompt now")
    assert "system_prompt" not in last_input(h)


FIELD_WORDS = {
    "prompt": "your message",
    "system_prompt": "the system prompt",
    "thinking": "the thinking setting",
    "reasoning_effort": "the effort setting",
    "max_completion_tokens": "the max tokens setting",
    "temperature": "the temperature setting",
    "top_p": "the top_p setting",
    "image_urls": "the image `shot.png`",
    "video_urls": "the video `clip.mp4`",
}


def rejected_field(field_name: str) -> Act:
    hostile_msg = "bad value <@&1> @everyone || ``` ok"

    async def act(h: Harness, thread: FakeChannel) -> None:
        loc: list[Any] = ["body", field_name]
        if field_name in ("image_urls", "video_urls"):
            loc.append(0)

        def responder(args: dict[str, Any]) -> Any:
            media = field_name not in ("image_urls", "video_urls") or args.get(field_name)
            if "trigger" in args["prompt"] and media:
                return Failure.validation([{"loc": loc, "msg": hostile_msg, "type": "value_error"}])
            return echo_responder(args)

        h.fal.responder = responder
        files: tuple[UserFile, ...] = ()
        if field_name == "image_urls":
            files = (UserFile("shot.png", PNG),)
        elif field_name == "video_urls":
            files = (UserFile("clip.mp4", b"\x00\x00\x00\x18ftypmp42", content_type="video/mp4"),)
        if files:
            # A refused attachment is left out and named; the turn goes on without it.
            messages = await send_and_wait(h, thread, "trigger", files=files, expect="echo:")
            answer = messages[-1].content
            assert f"{FIELD_WORDS[field_name].split()[-1]} could not be used: bad value" in answer
            assert "```" not in answer.split("\n\n")[-1], answer
            refused, answered = list(h.fal.requests.values())[-2:]
            assert refused.result_status == 422 and not answered.input.get(field_name)
            return
        messages = await send_and_wait(h, thread, "trigger", files=files, expect="⚠️")
        [error] = messages
        request_id = list(h.fal.requests)[-1]
        assert error.content.startswith("⚠️ The model could not use"), error.content
        assert FIELD_WORDS[field_name] in error.content, error.content
        assert f"(request `{request_id}`)" in error.content
        assert "\n" not in error.content and len(error.content) < 400

    return act


CASES: dict[str, Case] = {
    "mention only, in a channel": Case(mention_only_in_channel, adds_turn=False),
    "mention only, in a thread": Case(mention_only_in_thread),
    "whitespace only": Case(whitespace_only),
    "4000-character prompt": Case(long_prompt),
    "20 attachments": Case(twenty_attachments),
    "zero-byte file": Case(zero_byte_file),
    "oversized file": Case(oversized_file, env={"SEED_BOT_ATTACHMENTS__MAX_IMAGE_BYTES": "1000"}),
    "png bytes labelled video/mp4": Case(png_labelled_video),
    "exe labelled image/png": Case(exe_labelled_png),
    "filenames with path and markup": Case(hostile_filenames),
    "markup and mentions in the prompt": Case(markup_in_prompt),
    "markup and mentions in model output": Case(markup_in_model_output),
    "/system too long or blank": Case(system_prompt_too_long),
    "/ask with markup and 4000 characters": Case(slash_ask_with_markup, adds_turn=False),
    "empty model output": Case(scripted("", None)),
    "blank model output with blank reasoning": Case(scripted(" \n\t ", "  ")),
    "output of fences and bars only": Case(scripted("```\n```\n||||\n```", "||||||")),
    "reasoning of 10000 bars": Case(scripted("fine", "|" * 10000)),
    **{
        f"fal 422 on {name}": Case(
            rejected_field(name), adds_turn=name in ("image_urls", "video_urls")
        )
        for name in FIELD_WORDS
    },
}


def long_echo(args: dict[str, Any]) -> ModelOutput:
    reply = echo_responder(args)
    if len(args["prompt"]) >= 4000:
        return ModelOutput(reply.output + "\n\nThat was long.", reply.reasoning)
    return reply


def bot_posts(h: Harness) -> list[FakeMessage]:
    posts: list[FakeMessage] = []
    for event in h.fake.events:
        if isinstance(event, MessageCreated) and event.by_bot:
            posts.append(event.message)
        elif isinstance(event, MessageEdited) and event.by_bot:
            posts.append(event.after)
        elif isinstance(event, InteractionResponded) and event.message is not None:
            posts.append(event.message)
    return posts


@pytest.mark.parametrize("name", list(CASES))
async def test_hostile_input(name: str, make_harness: HarnessFactory) -> None:
    case = CASES[name]
    with bot_errors() as errors:
        h = await make_harness(**case.env)
        h.fal.responder = long_echo
        since = h.fake.mark()
        _, thread = await h.start_thread(h.world.alice, GOOD)
        await h.answer_in(thread, since=since, contains=f"echo: {GOOD}")
        before = len(h.fal.requests)

        await case.act(h, thread)

        h.fal.responder = echo_responder
        await send_and_wait(h, thread, "all good?", expect="echo: all good?")
        history = last_input(h)["messages"]
        assert [m["content"] for m in history[:2]] == [GOOD, f"echo: {GOOD}"]
        extra = len(h.fal.requests) - before - 1  # the case's own model calls
        if not case.adds_turn:
            # rejected or elsewhere: nothing of the case's turn joined this thread's history
            assert len(history) == 2, history
        else:
            assert extra >= 1
            assert len(history) >= 4
        assert all(m["role"] in ("user", "assistant") for m in history)
        # (an assistant message is what the API returned, sent back unchanged, even if empty)
        assert all(m["content"] not in ("", None, []) for m in history if m["role"] == "user")

    assert [r.getMessage() for r in errors.records] == []
    posts = bot_posts(h)
    assert posts
    for m in posts:
        if m.loading and not m.content:
            continue  # a deferred interaction's "thinking" placeholder: nothing to ping with
        assert m.allowed_mentions is not None and m.allowed_mentions.get("parse") == [], m
        assert not m.mention_everyone, m
        assert m.mention_role_ids == () and m.mention_user_ids == (), m
        assert len(m.content) <= 2000
