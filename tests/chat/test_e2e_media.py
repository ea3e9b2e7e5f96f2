"""End to end, attachments at scale: the text inlined per turn is capped and the reply names
what was left out or cut; media are prepared once per turn (a burst starting over reuses
them), streamed to fal storage, and within a bound on files prepared at once over all
conversations."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.chat.media import DiscordMedia
from bot.domain.errors import AttachmentError
from bot.domain.models import Attachment
from bot.ops.metrics import sample
from tests.chat.conftest import Harness, HarnessFactory
from tests.fakes.discord.events import CdnFetched
from tests.fakes.discord.models import FakeChannel, GeneratedBytes, UserFile
from tests.storage.conftest import BACKENDS

# The tests that store what they measure run on PostgreSQL too (which, unlike SQLite,
# enforces what it stores): the harness's database parameter.
BOTH_DATABASES = pytest.mark.parametrize("chat_backend", BACKENDS, indirect=True)


async def warning_line(h: Harness, thread: FakeChannel) -> str:
    """The warning line under the answer (a long answer's last part), once it is posted."""
    await h.app.bot.idle()
    lines = [
        line
        for m in h.fake.bot_messages(thread)
        for line in m.content.splitlines()
        if line.startswith("⚠️")
    ]
    [line] = lines
    return line


def text_file(name: str, size: int) -> UserFile:
    line = f"{name}: a line of a long log file\n".encode()
    return UserFile(name, (line * (size // len(line) + 1))[:size])


async def until_waiting(h: Harness, files: int) -> None:
    """Wait until ``files`` files wait for room to be prepared (the bot's own state: no
    fake sees a file that is not yet downloaded)."""
    preparer = h.app.service.media
    async with asyncio.timeout(10):
        while preparer.waiting != files:
            preparer.waiting_changed.clear()
            await preparer.waiting_changed.wait()


# -- inlined text --------------------------------------------------------------------------------


@BOTH_DATABASES
async def test_inlined_text_is_capped_per_turn_and_the_reply_names_what_was_left_out(
    make_harness: HarnessFactory,
) -> None:
    """A mention replying to a message with ten text files, plus ten more attached: the
    quoted files count too. The defaults inline at most 192 KB of text: three files whole,
    the fourth cut (the model is told), the other sixteen left out and named."""
    h = await make_harness()
    quoted = await h.fake.send_message(
        h.world.bob,
        h.world.channel,
        "my logs",
        files=[text_file(f"q{i}.log", 60_000) for i in range(10)],
    )
    since = h.fake.mark()
    message = await h.mention(
        h.world.alice,
        "what is wrong?",
        files=[text_file(f"a{i}.txt", 60_000) for i in range(10)],
        reply_to=quoted,
    )
    thread = await h.fake.wait_for_thread(h.world.channel, from_message=message, since=since)
    await h.answer_in(thread, since=since, contains="echo:")

    [prompt] = h.prompts()
    assert len(prompt.encode()) <= 192 * 1024 + 2_000  # the files' text, the question, labels
    assert [f"q{i}.log" in prompt for i in range(5)] == [True, True, True, True, False]
    assert "Attached file q3.log (only its first " in prompt
    line = await warning_line(h, thread)
    assert line.startswith("⚠️ `q3.log` was cut to its first 16.")
    assert "16 text files left out (at most 192.0 KB of text per message)" in line
    assert "`q4.log`" in line


async def test_text_files_over_the_count_are_left_out_by_name(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(SEED_BOT_ATTACHMENTS__MAX_TEXT_FILES="2")
    since = h.fake.mark()
    files = [text_file(f"n{i}.md", 100) for i in range(4)]
    message = await h.mention(h.world.alice, "read these", files=files)
    thread = await h.fake.wait_for_thread(h.world.channel, from_message=message, since=since)
    await h.answer_in(thread, since=since, contains="echo:")

    [prompt] = h.prompts()
    assert "n0.md" in prompt and "n1.md" in prompt and "n2.md" not in prompt
    assert await warning_line(h, thread) == (
        "⚠️ 2 text files left out (only 2 per message are read): `n2.md`, `n3.md`"
    )


# -- media: once per turn, streamed, bounded ----------------------------------------------------


@BOTH_DATABASES
async def test_a_burst_starting_over_reuses_the_files_already_prepared(
    make_harness: HarnessFactory,
) -> None:
    """A follow-up joins the burst: the turn starts over with both messages' files, but the
    first message's video and text are not downloaded or uploaded again, and the replaced
    attempts keep no copy of the prompt."""
    h = await make_harness(SEED_BOT_DISCORD__BATCH_WINDOW_SECONDS="5")
    since = h.fake.mark()
    message = await h.mention(h.world.alice, "hello")
    thread = await h.fake.wait_for_thread(h.world.channel, from_message=message, since=since)
    await h.answer_in(thread, since=since, contains="echo:")
    h.fal.hold()
    since = h.fake.mark()
    clip = UserFile("clip.mp4", GeneratedBytes(3 * 1024 * 1024))
    await h.fake.send_message(
        h.world.alice, thread, "one", files=[clip, text_file("notes.txt", 5_000)]
    )
    [_, first] = await h.fal.wait_for_submissions(2)
    await h.fake.send_message(
        h.world.alice, thread, "two", files=[UserFile("more.mp4", GeneratedBytes(1000))]
    )
    await h.fal.wait_for(lambda: h.fal.requests[first].cancel_requested)
    await h.fal.wait_for(lambda: h.prompts()[-1].startswith("one\ntwo"))
    h.fal.unhold()
    answer = await h.answer_in(thread, since=since, contains="echo: one")
    await h.app.bot.idle()

    fetched = [e.attachment_id for e in h.fake.events_of(CdnFetched) if e.status == 200]
    assert len(fetched) == len(set(fetched)) == 3  # each file downloaded once
    assert len(h.fal.calls_to("upload")) == 2  # the two videos, each uploaded once
    last = list(h.fal.requests.values())[-1]
    assert len(last.input["video_urls"]) == 2
    assert "Attached file notes.txt" in last.input["prompt"]
    assert "echo: one\ntwo" in answer.content
    # The replaced attempt keeps no prompt: the answered one holds the whole burst.
    latest = await h.app.store.turns.latest_turn(str(thread.id))
    assert latest is not None and latest.prompt.startswith("one\ntwo")
    replaced = await h.app.store.turns.get_turn(latest.id - 1)
    assert replaced.prompt == ""


async def test_a_video_is_streamed_to_fal_storage_with_its_reported_length(
    harness: Harness,
) -> None:
    h = harness
    data = GeneratedBytes(5 * 1024 * 1024 + 17)
    since = h.fake.mark()
    message = await h.mention(h.world.alice, "watch", files=[UserFile("big.mp4", data)])
    thread = await h.fake.wait_for_thread(h.world.channel, from_message=message, since=since)
    await h.answer_in(thread, since=since, contains="echo:")

    [put] = h.fal.calls_to("upload")
    assert put.headers["Content-Length"] == str(data.size)
    assert "Transfer-Encoding" not in put.headers
    [stored] = h.fal.files.values()
    assert stored.data == b"".join(data.chunks())
    [request] = h.fal.requests.values()
    assert request.input["video_urls"] == [
        f"{h.fal.base_url}/files/{next(iter(h.fal.files))}/big.mp4"
    ]


async def test_files_prepared_at_once_are_bounded_over_all_conversations(
    make_harness: HarnessFactory,
) -> None:
    """Three people post a video each at once; with two files in flight at most, the third
    waits (not even downloaded) until one of the first two is stored, then all are
    answered."""
    h = await make_harness(SEED_BOT_ATTACHMENTS__MAX_FILES_IN_FLIGHT="2")
    h.fal.hold_uploads()
    since = h.fake.mark()
    people = [h.world.alice, h.world.bob, h.world.alice]
    for n, person in enumerate(people):
        await h.mention(
            person, f"video {n}", files=[UserFile(f"v{n}.mp4", GeneratedBytes(200_000))]
        )
    await h.fal.wait_for(lambda: h.fal.uploads_open == 2)
    await until_waiting(h, 1)
    downloads = [e for e in h.fake.events_of(CdnFetched, since=since) if e.status == 200]
    assert len(downloads) == 2
    assert sample(h.app.metrics, "seed_bot_attachments_waiting") == 1
    assert sample(h.app.metrics, "seed_bot_attachment_bytes_in_flight") == 2 * 200_000
    h.fal.release_uploads()
    await h.fal.wait_for(lambda: len(h.fal.requests) == 3, timeout=10)
    assert h.fal.max_uploads_open == 2
    assert sample(h.app.metrics, "seed_bot_attachment_bytes_in_flight") == 0
    assert len(h.fal.files) == 3


async def test_bytes_in_flight_let_a_file_larger_than_the_bound_go_alone(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(SEED_BOT_ATTACHMENTS__MAX_BYTES_IN_FLIGHT="300000")
    h.fal.hold_uploads()
    since = h.fake.mark()
    first = await h.mention(
        h.world.alice, "big one", files=[UserFile("big.mp4", GeneratedBytes(500_000))]
    )
    await h.fal.wait_for(lambda: h.fal.uploads_open == 1)
    await h.mention(h.world.bob, "small one", files=[UserFile("small.mp4", GeneratedBytes(1000))])
    await until_waiting(h, 1)
    h.fal.release_uploads()
    thread = await h.fake.wait_for_thread(h.world.channel, from_message=first, since=since)
    await h.answer_in(thread, since=since, contains="echo: big one")
    await h.fal.wait_for(lambda: len(h.fal.requests) == 2, timeout=10)
    assert h.fal.max_uploads_open == 1


# -- the CDN download --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("served", "problem"),
    [
        (b"x" * 300_000, "larger than Discord reported"),
        (b"x" * 100, "smaller than Discord reported"),
    ],
)
async def test_a_file_unlike_its_reported_size_is_refused_while_streaming(
    served: bytes, problem: str
) -> None:
    """The size Discord reported is announced to fal storage as the upload's length: a
    CDN answer longer is cut off at the first byte over it (never buffered whole), one
    shorter refused at its end. The CDN here sends no length up front."""

    async def cdn(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(served), 65536):
            await response.write(served[start : start + 65536])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/attachments/1/2/a.mp4", cdn)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session:
            media = DiscordMedia(session, [f"{host}:{port}"])
            url = f"http://{host}:{port}/attachments/1/2/a.mp4"
            attachment = Attachment("2", "a.mp4", "video/mp4", 1000, url)
            received: list[bytes] = []

            async def download() -> None:
                async for chunk in media.stream(attachment, 10_000_000):
                    received.append(chunk)

            with pytest.raises(AttachmentError, match=problem):
                await download()
            assert sum(map(len, received)) <= attachment.size
            with pytest.raises(AttachmentError, match=problem):
                await media.fetch(attachment, 10_000_000)
    finally:
        await runner.cleanup()


async def test_a_reload_applies_new_media_bounds(harness: Harness) -> None:
    h = harness
    (h.tmp_path / "config.toml").write_text(
        "[attachments]\nmax_files_in_flight = 1\nmax_bytes_in_flight = 1000000\n"
    )
    owner: Any = h.fake.owner
    h.fake.add_member(h.world.guild, owner)
    reloaded = await h.fake.invoke_command(owner, h.world.channel, "admin reload")
    response = await reloaded.wait_response()
    assert response.data is not None and "Config reloaded" in response.data["content"]
    preparer = h.app.service.media
    assert (preparer.max_files_in_flight, preparer.bytes.capacity) == (1, 1_000_000)
