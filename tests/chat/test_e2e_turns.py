"""End to end, one turn at a time: who spoke, what was attached, how the answer is posted,
what is ignored or refused. People talk on the fake Discord; the model is the fake fal."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from bot.chat.controls import retry_view, stop_view
from bot.chat.delivery import ChannelDelivery, Views, Where
from bot.domain.errors import FieldProblem, ModelInputRejected
from bot.domain.models import Turn, TurnState
from tests.chat.conftest import Harness, HarnessFactory
from tests.fakes.discord.events import MessageCreated
from tests.fakes.discord.models import Perm, UserFile
from tests.fakes.fal import Failure, ModelOutput, echo_responder

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)
BMP = b"BM" + b"\x00" * 60  # a type the model does not take
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"

FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")


# -- who is speaking ---------------------------------------------------------------------------


async def test_second_speaker_turns_are_prefixed_with_display_names(harness: Harness) -> None:
    h = harness
    thread, _ = await h.converse(h.world.alice, "hello from alice")
    await h.say(h.world.bob, thread, "bob chiming in")
    await h.say(h.world.alice, thread, "alice again")
    assert h.prompts() == [
        "hello from alice",
        "[Bob]: bob chiming in",
        "[Alice]: alice again",
    ]


# -- attachments ---------------------------------------------------------------------------------


async def test_more_than_six_images_are_capped_with_one_warning(harness: Harness) -> None:
    h = harness
    files = [UserFile(f"img{n}.png", PNG) for n in range(1, 9)]
    thread, _ = await h.converse(h.world.alice, "look at all these", files=files)
    [request] = h.fal.requests.values()
    assert len(request.input["image_urls"]) == 6
    warning_lines = [
        line
        for m in h.fake.bot_messages(thread)
        for line in m.content.splitlines()
        if line.startswith("⚠️")
    ]
    assert len(warning_lines) == 1, warning_lines
    [line] = warning_lines
    assert "img7.png" in line and "img8.png" in line
    assert "img1.png" not in line


async def test_unsupported_types_are_named_and_not_sent(harness: Harness) -> None:
    h = harness
    files = [UserFile("scan.bmp", BMP), UserFile("paper.pdf", PDF)]
    thread, _ = await h.converse(h.world.alice, "what about these", files=files)
    [request] = h.fal.requests.values()
    assert not request.input.get("image_urls") and not request.input.get("video_urls")
    assert h.fal.files == {}
    warning_lines = [
        line
        for m in h.fake.bot_messages(thread)
        for line in m.content.splitlines()
        if line.startswith("⚠️")
    ]
    assert len(warning_lines) == 1, warning_lines
    assert "scan.bmp" in warning_lines[0] and "paper.pdf" in warning_lines[0]


async def test_small_text_files_are_inlined_as_fenced_blocks(harness: Harness) -> None:
    h = harness
    files = [
        UserFile("notes.txt", b"remember the milk\n"),
        UserFile("hello.py", b"print('hi')\n"),
    ]
    await h.converse(h.world.alice, "review these", files=files)
    [request] = h.fal.requests.values()
    prompt = request.input["prompt"]
    assert prompt.startswith("review these")
    assert "Attached file notes.txt:\n```\nremember the milk\n" in prompt
    assert "Attached file hello.py:\n```python\nprint('hi')\n" in prompt
    assert not request.input.get("image_urls")


# -- the answer ------------------------------------------------------------------------------


def _non_fence_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not FENCE.match(line)]


async def test_long_answer_with_code_is_split_with_balanced_fences(harness: Harness) -> None:
    h = harness
    prose = "\n\n".join(f"Paragraph {n}: " + " ".join(["words"] * 60) for n in range(12))
    code = "\n".join(f"    value_{n} = compute({n})  # step {n}" for n in range(120))
    answer = f"{prose}\n\n```python\n{code}\n```\n\nThat is all."
    assert len(answer) > 9000
    h.fal.responder = lambda args: ModelOutput(answer, None)
    since = h.fake.mark()
    _, thread = await h.start_thread(h.world.alice, "write lots")
    await h.answer_in(thread, since=since, contains="That is all.")
    parts = [m.content for m in h.fake.bot_messages(thread)]
    assert len(parts) >= 5
    for part in parts:
        assert len(part) <= 2000
        assert sum(1 for line in part.splitlines() if FENCE.match(line)) % 2 == 0, part
    # every part that continues the code block reopens it with its language
    inside = [p for p in parts if "value_" in p]
    assert len(inside) >= 2
    assert all("```python" in p for p in inside)
    assert _non_fence_lines("\n".join(parts)) == _non_fence_lines(answer)
    assert "".join("".join(parts).split()).replace("`", "").replace("python", "") == "".join(
        answer.split()
    ).replace("`", "").replace("python", "")


async def test_reasoning_with_code_fence_goes_to_reasoning_file(harness: Harness) -> None:
    h = harness
    reasoning = "Maybe a || b?\n```python\nx = a or b\n```\nYes."
    h.fal.responder = lambda args: ModelOutput("the answer", reasoning)
    since = h.fake.mark()
    _, thread = await h.start_thread(h.world.alice, "or?")
    await h.answer_in(thread, since=since, contains="the answer")
    first, *rest = h.fake.bot_messages(thread)
    assert [name for name, _ in first.files] == ["reasoning.md"]
    assert first.files[0][1].decode() == reasoning + "\n"
    assert "reasoning.md" in first.content and "```" not in first.content
    assert all(not m.files for m in rest)


async def test_reasoning_with_bars_is_spoilered_with_bars_neutralised(harness: Harness) -> None:
    h = harness
    reasoning = "a || b means either; ||not a spoiler end|| here"
    h.fal.responder = lambda args: ModelOutput("the answer", reasoning)
    since = h.fake.mark()
    _, thread = await h.start_thread(h.world.alice, "bars")
    await h.answer_in(thread, since=since, contains="the answer")
    first = h.fake.bot_messages(thread)[0]
    assert not first.files
    body, answer = first.content.split("\n", 1)[1].split("\n\n")
    assert answer == "the answer"
    assert body.startswith("||") and body.endswith("||")
    assert "||" not in body[2:-2]
    assert body[2:-2].replace("\u200b", "") == reasoning


async def test_model_output_never_pings(harness: Harness) -> None:
    h = harness
    role = h.fake.create_role(h.world.guild, "mods", mentionable=True)
    ping = f"@everyone @here <@&{role.id}> <@{h.world.bob.id}>"
    h.fal.responder = lambda args: ModelOutput(f"hey {ping}", f"thinking of {ping}")
    since = h.fake.mark()
    _, thread = await h.start_thread(h.world.alice, "ping them")
    await h.answer_in(thread, since=since, contains="hey")
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "again")
    await h.answer_in(thread, since=since, contains="hey")
    messages = h.fake.bot_messages()
    assert len(messages) >= 2  # reasoning and answer, twice (in one message each)
    assert all("thinking of" in m.content and "hey" in m.content for m in messages)
    for m in messages:
        assert m.allowed_mentions is not None and m.allowed_mentions.get("parse") == [], m
        assert not m.mention_everyone
        assert m.mention_role_ids == ()
        assert m.mention_user_ids == ()


# -- what the first turn includes ----------------------------------------------------------


async def test_mention_replying_to_a_message_includes_it(harness: Harness) -> None:
    h = harness
    original = await h.fake.send_message(
        h.world.bob, h.world.channel, "the sky is green", files=[UserFile("sky.png", PNG)]
    )
    await h.converse(h.world.alice, "is this true?", reply_to=original)
    [request] = h.fal.requests.values()
    prompt = request.input["prompt"]
    assert "the sky is green" in prompt and "Bob" in prompt
    assert prompt.index("the sky is green") < prompt.index("is this true?")
    assert len(request.input["image_urls"]) == 1
    assert [f.data for f in h.fal.files.values()] == [PNG]


# -- DMs -----------------------------------------------------------------------------------


async def test_dm_answered_when_allowed(make_harness: HarnessFactory) -> None:
    h = await make_harness(SEED_BOT_DISCORD__ALLOW_DMS="true")
    dm = h.fake.dm_channel(h.world.alice)
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, dm, "hello in private")
    answer = await h.answer_in(dm, since=since, contains="echo: hello in private")
    assert answer.channel_id == dm.id
    assert h.prompts() == ["hello in private"]


async def test_dm_refused_when_not_allowed(harness: Harness) -> None:
    h = harness
    dm = h.fake.dm_channel(h.world.alice)
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, dm, "hello in private")
    refusal = await h.fake.wait_for_message(dm, since=since)
    assert "Direct messages are turned off" in refusal.content
    # barrier: a later positive event, then nothing more happened in the DM
    await h.converse(h.world.alice, "after the dm")
    assert h.prompts() == ["after the dm"]
    assert len(h.fake.bot_messages(dm)) == 1


# -- ignored messages ------------------------------------------------------------------------


async def test_bots_webhooks_and_unmentioned_messages_are_ignored(harness: Harness) -> None:
    h = harness
    channel = h.world.channel
    mention = f"<@{h.bot_user.id}>"
    robot = h.fake.create_user("robot", bot=True)
    h.fake.add_member(h.world.guild, robot)
    hook = h.fake.create_webhook(channel)
    loose = await h.fake.create_thread(h.world.bob, channel, "an unbound thread")
    since = h.fake.mark()
    await h.fake.send_message(robot, channel, f"{mention} from a bot")
    await h.fake.send_message(hook, channel, f"{mention} from a webhook")
    await h.fake.send_message(h.world.alice, channel, "no mention in a channel")
    await h.fake.send_message(h.world.bob, loose, "no mention in an unbound thread")
    # barrier: a message that is answered, sent after the ignored ones
    await h.converse(h.world.alice, "the real one")
    assert h.prompts() == ["the real one"]
    created = [e for e in h.fake.events_of(MessageCreated, since=since) if e.by_bot]
    assert all(h.fake.channels[e.message.channel_id].parent_id is not None for e in created)
    assert h.fake.bot_messages(loose) == []
    assert h.fake.bot_messages(channel) == []


# -- failures --------------------------------------------------------------------------------


def refusing(broken: bytes) -> Any:
    """A model that cannot read the image whose stored copy holds ``broken`` (fal answers
    422 file_download_error for its index) and echoes otherwise."""

    def responder(args: dict[str, Any]) -> Any:
        for index, url in enumerate(args.get("image_urls", [])):
            if url.endswith("/broken.png"):
                return Failure.validation(
                    [
                        {
                            "loc": ["body", "image_urls", index],
                            "msg": "Failed to download the file. Please check if the URL is "
                            "accessible.",
                            "type": "file_download_error",
                        }
                    ]
                )
        return echo_responder(args)

    return responder


async def test_a_refused_attachment_is_left_out_named_and_the_turn_goes_on(
    harness: Harness,
) -> None:
    """One unusable image among several: the others go through, the reply names it."""
    h = harness
    h.fal.responder = refusing(PNG)
    thread, _ = await h.converse(h.world.alice, "first good question")
    since = h.fake.mark()
    files = [UserFile("good.png", PNG), UserFile("broken.png", PNG), UserFile("fine.png", PNG)]
    await h.fake.send_message(h.world.alice, thread, "and these pictures?", files=files)
    answer = await h.answer_in(thread, since=since, contains="echo: and these pictures?")
    assert "`broken.png` could not be used: Failed to download the file" in answer.content
    refused, answered = list(h.fal.requests.values())[-2:]
    assert len(refused.input["image_urls"]) == 3 and refused.result_status == 422
    sent = answered.input["image_urls"]
    assert len(sent) == 2 and not any(u.endswith("/broken.png") for u in sent)
    # the refused attempt leaves no trace in the history; the answered one is in it
    await h.say(h.world.alice, thread, "third question")
    history = list(h.fal.requests.values())[-1].input.get("messages", [])
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[0]["content"] == "first good question"
    assert history[3]["content"] == "echo: and these pictures?"


async def test_a_file_name_is_sent_to_fal_storage_safely(harness: Harness) -> None:
    h = harness
    # (Discord itself keeps no "/" in a file name; backslashes and format characters it does.)
    hostile = "..\\..\\x\u202e.png"
    await h.start_thread(h.world.alice, "look", files=[UserFile(hostile, PNG)])
    await h.fal.wait_for(lambda: bool(h.fal.files))
    [stored] = h.fal.files.values()
    assert stored.file_name == "x.png"


async def test_undownloadable_image_is_named_with_request_id(
    make_harness: HarnessFactory,
) -> None:
    # Discord's own (expiring) URL goes to fal, which cannot fetch it: fal's validation
    # rejects the request with file_download_error on image_urls[0].
    h = await make_harness(SEED_BOT_FAL__ATTACHMENT_MODE="discord_url")
    assert h.fal.allowed_media_hosts == set()
    thread, _ = await h.converse(h.world.alice, "plain start")
    since = h.fake.mark()
    # An image alone: without it nothing is left to answer, so the turn fails, naming it.
    await h.fake.send_message(h.world.alice, thread, "", files=[UserFile("holiday.png", PNG)])
    error = await h.answer_in(thread, since=since, contains="⚠️")
    failed = list(h.fal.requests.values())[-1]
    assert failed.result_status == 422
    assert "`holiday.png`" in error.content
    assert f"(request `{failed.id}`)" in error.content
    assert "Traceback" not in error.content and h.fal.base_url not in error.content
    await h.say(h.world.alice, thread, "next one")
    last = list(h.fal.requests.values())[-1]
    assert [m["content"] for m in last.input.get("messages", [])] == [
        "plain start",
        "echo: plain start",
    ]
    assert not last.input.get("image_urls")


async def test_missing_thread_permission_is_explained(harness: Harness) -> None:
    h = harness
    h.fake.deny_bot(h.world.channel, Perm.CREATE_PUBLIC_THREADS)
    since = h.fake.mark()
    message = await h.mention(h.world.alice, "start something")
    reply = await h.fake.wait_for_message(h.world.channel, since=since)
    assert "Create Public Threads" in reply.content
    assert reply.referenced_message_id == message.id
    assert h.fal.requests == {}
    assert h.fake.threads(h.world.channel) == []


# -- timing ----------------------------------------------------------------------------------


async def test_queued_request_shows_position_then_becomes_the_answer(harness: Harness) -> None:
    h = harness
    h.fal.concurrency = 1
    h.fal.responder = lambda args: ModelOutput(f"echo: {args['prompt']}", None)
    h.fal.hold()
    since = h.fake.mark()
    _, first_thread = await h.start_thread(h.world.alice, "occupy the runner")
    [first_id] = await h.fal.wait_for_submissions(1)
    await h.fal.wait_for_state(first_id, "IN_PROGRESS")
    _, thread = await h.start_thread(h.world.bob, "wait your turn")
    status = await h.fake.wait_for_message(thread, since=since, contains="Waiting in queue")
    assert "Waiting in queue (position 1)…" in status.content
    h.fal.unhold()
    answer = await h.fake.wait_for_edit(status, lambda m: "echo: wait your turn" in m.content)
    assert answer.id == status.id
    await h.answer_in(first_thread, since=since, contains="echo: occupy the runner")


async def test_status_message_edited_into_reply_carries_reasoning_file(
    harness: Harness,
) -> None:
    h = harness
    h.fal.concurrency = 1
    h.fal.responder = lambda args: ModelOutput(f"echo: {args['prompt']}", "Think:\n```\ncode\n```")
    h.fal.hold()
    since = h.fake.mark()
    await h.start_thread(h.world.alice, "occupy the runner")
    [first_id] = await h.fal.wait_for_submissions(1)
    await h.fal.wait_for_state(first_id, "IN_PROGRESS")
    _, thread = await h.start_thread(h.world.bob, "queued with reasoning")
    status = await h.fake.wait_for_message(thread, since=since, contains="Waiting in queue")
    h.fal.unhold()
    await h.answer_in(thread, since=since, contains="echo: queued with reasoning")
    # one message: the status, edited into the reasoning pointer and the answer
    [first] = h.fake.bot_messages(thread)
    assert first.id == status.id
    assert "reasoning.md" in first.content and "echo: queued with reasoning" in first.content
    assert [name for name, _ in first.files] == ["reasoning.md"]


async def test_turns_of_one_thread_are_answered_in_order(harness: Harness) -> None:
    # Different people, so nothing is batched: three turns, answered in arrival order.
    h = harness
    thread, _ = await h.converse(h.world.alice, "opening")
    since = h.fake.mark()
    said = [(h.world.alice, "second"), (h.world.bob, "third"), (h.world.alice, "fourth")]
    for author, text in said:
        await h.fake.send_message(author, thread, text)
    await h.answer_in(thread, since=since, contains="echo: [Alice]: fourth")
    answers = [
        e.message.content
        for e in h.fake.events_of(MessageCreated, since=since)
        if e.by_bot and "echo:" in e.message.content
    ]
    assert [a.split("\n\n")[-1] for a in answers] == [
        "echo: second",
        "echo: [Bob]: third",
        "echo: [Alice]: fourth",
    ]
    last = list(h.fal.requests.values())[-1]
    assert [m["content"] for m in last.input["messages"] if m["role"] == "user"] == [
        "opening",
        "second",
        "[Bob]: third",
    ]


# -- naming a rejected attachment: the names stored with the turn ---------------------------


class _Sent:
    id = 1


class _Channel:
    """Just enough of a Messageable for ChannelDelivery to post a failure notice."""

    id = 1

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, content: str, **kwargs: Any) -> _Sent:
        self.sent.append(content)
        return _Sent()


class _Recorder:
    """The delivery's recording port; a failure notice records nothing."""

    async def record_status_message(self, turn_id: int, message_id: str) -> None:
        raise AssertionError("a failure notice is no status message")

    async def record_reply_parts(self, turn_id: int, message_ids: Sequence[str]) -> None:
        raise AssertionError("a failure notice is no answer")

    async def record_delivery(self, turn_id: int, message_ids: Sequence[str]) -> None:
        raise AssertionError("a failure notice is no answer")


def _turn(image_urls: tuple[str, ...], image_names: tuple[str, ...]) -> Turn:
    now = datetime.now(UTC)
    return Turn(
        id=1,
        conversation_id=1,
        epoch=0,
        source_id="1",
        author_id="1",
        author_name="Alice",
        reply_channel_id="1",
        prompt="p",
        image_urls=image_urls,
        video_urls=(),
        warnings=(),
        state=TurnState.SUBMITTED,
        handle=None,
        output=None,
        reasoning=None,
        error=None,
        reply_message_ids=(),
        created_at=now,
        updated_at=now,
        image_names=image_names,
    )


async def test_a_rejected_attachment_is_named_from_the_names_stored_with_its_turn() -> None:
    # a.png could not be downloaded, so only b.png was sent: fal's image_urls[0] is b.png.
    rejected = ModelInputRejected(
        "422",
        (FieldProblem("image_urls", 0, "file_download_error", "Failed to download"),),
        request_id="req-1",
    )
    channel = _Channel()
    views = Views(stop=stop_view, retry=retry_view)
    delivery = ChannelDelivery(Where(cast(Any, channel)), recorder=_Recorder(), views=views)
    await delivery.fail(_turn(("https://fal/b",), ("b.png",)), rejected)
    [notice] = channel.sent
    assert "`b.png`" in notice and "a.png" not in notice and "req-1" in notice
    # a turn stored without names (before they were kept) says "image 1"
    channel = _Channel()
    delivery = ChannelDelivery(Where(cast(Any, channel)), recorder=_Recorder(), views=views)
    await delivery.fail(_turn(("https://fal/b",), ()), rejected)
    assert "image 1" in channel.sent[0]
