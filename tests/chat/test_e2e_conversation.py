"""End to end: people talk to the bot on the fake Discord; the model is the fake fal."""

from __future__ import annotations

from tests.chat.conftest import Harness
from tests.fakes.discord.models import UserFile

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64


async def test_mention_with_media_opens_thread_and_answers(harness: Harness) -> None:
    h = harness
    files = [UserFile("one.png", PNG), UserFile("two.png", PNG), UserFile("clip.mp4", MP4)]
    since = h.fake.mark()
    message, thread = await h.start_thread(h.world.alice, "what is in these?", files=files)
    assert thread.name == "what is in these?"
    answer = await h.answer_in(thread, since=since, contains="echo:")
    # fal got three durable URLs (its own storage), not Discord's expiring ones
    [request] = h.fal.requests.values()
    urls = [*request.input["image_urls"], *request.input["video_urls"]]
    assert len(request.input["image_urls"]) == 2 and len(request.input["video_urls"]) == 1
    assert all(u.startswith(h.fal.base_url) for u in urls)
    assert sorted(f.data for f in h.fal.files.values()) == sorted([PNG, PNG, MP4])
    assert request.input["prompt"] == "what is in these?"
    # reasoning first, behind a spoiler; then the answer; no mention allowed anywhere
    bot_messages = [m for m in h.fake.bot_messages(thread)]
    reasoning = next(m for m in bot_messages if "||" in m.content)
    assert "The user said: what is in these?" in reasoning.content
    assert "echo: what is in these?" in answer.content
    for m in bot_messages:
        assert m.allowed_mentions is not None
        assert m.allowed_mentions.get("parse") == []
    assert message.id != answer.id


async def test_thread_continues_with_history(harness: Harness) -> None:
    h = harness
    since = h.fake.mark()
    _, thread = await h.start_thread(h.world.alice, "first question")
    await h.answer_in(thread, since=since, contains="echo: first question")
    for n, text in enumerate(["second question", "third question"], start=2):
        since = h.fake.mark()
        await h.fake.send_message(h.world.alice, thread, text)
        await h.answer_in(thread, since=since, contains=f"echo: {text}")
        last = list(h.fal.requests.values())[-1]
        history = last.input.get("messages", [])
        assert len(history) == 2 * (n - 1)
        assert [m["role"] for m in history] == ["user", "assistant"] * (n - 1)
        assert history[0]["content"] == "first question"
