"""End to end: the in-flight cap, the per-turn deadline, context trimming, Discord failures on
send, waiting messages batched, attachment modes, the CDN allow-list, command sync."""

from __future__ import annotations

import base64

import pytest

from bot.chat.media import DiscordMedia
from bot.domain.errors import AttachmentError
from bot.domain.models import Attachment
from tests.chat.conftest import Harness, HarnessFactory
from tests.fakes.discord.events import CommandsSynced, MessageCreated, MessageEdited
from tests.fakes.discord.models import UserFile
from tests.fakes.discord.standard import StandardWorld

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


async def test_in_flight_cap_holds_extra_turns_back(make_harness: HarnessFactory) -> None:
    h = await make_harness(SEED_BOT_LIMITS__MAX_IN_FLIGHT="2")
    h.fal.concurrency = 100
    h.fal.hold()
    since = h.fake.mark()
    for n in range(5):
        await h.mention(h.world.alice, f"question {n}")
    await h.fal.wait_for_submissions(2)
    # the bot is waiting on two requests; the three others are held back by the cap
    await h.fake.sync_gateway()
    assert len(h.fal.requests) == 2
    h.fal.unhold()
    await h.fal.wait_for_submissions(5)
    for n in range(5):
        await h.fake.wait_for_message(None, contains=f"echo: question {n}", since=since, timeout=10)


async def test_turn_deadline_cancels_and_tells_the_user(make_harness: HarnessFactory) -> None:
    h = await make_harness(SEED_BOT_FAL__TURN_TIMEOUT="1.5")
    h.fal.hold()
    since = h.fake.mark()
    _, thread = await h.start_thread(h.world.alice, "take your time")
    # the status message ("Thinking…") is edited into the notice
    event = await h.fake.wait_for_event(
        MessageEdited,
        lambda e: e.after.channel_id == thread.id and "took too long" in e.after.content,
        since=since,
        timeout=10,
    )
    notice = event.after
    [request] = h.fal.requests.values()
    assert request.cancel_requested
    assert f"`{request.id}`" in notice.content


async def test_history_trimming_is_announced_once(make_harness: HarnessFactory) -> None:
    h = await make_harness(SEED_BOT_MODEL__CONTEXT_BUDGET_TOKENS="6500")
    # each exchange is ~1,210 tokens by the bot's estimate; after the new prompt (~605) and
    # 4096 output tokens, the budget leaves room for one exchange of history, not two
    long = "x" * 1800
    since = h.fake.mark()
    _, thread = await h.start_thread(h.world.alice, f"one {long}")
    await h.answer_in(thread, since=since, contains="echo:")
    notices = []
    for word in ("two", "three", "four"):
        since = h.fake.mark()
        await h.fake.send_message(h.world.alice, thread, f"{word} {long}")
        await h.fake.wait_for_message(thread, contains=f"echo: {word}", since=since)
        notices += [
            e.message.content
            for e in h.fake.events_of(MessageCreated, since=since)
            if e.by_bot and "no longer fit" in e.message.content
        ]
    assert len(notices) == 1  # said once, on the first trimmed turn
    last = list(h.fal.requests.values())[-1]
    assert [m["content"][:5] for m in last.input["messages"]] == ["three", "echo:"]


async def test_discord_failures_on_send_are_retried(harness: Harness) -> None:
    h = harness
    thread, _ = await h.converse(h.world.alice, "first")
    h.fake.fail("POST /channels/{channel_id}/messages", status=503, times=2)
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "again")
    answer = await h.fake.wait_for_message(thread, contains="echo: again", since=since, timeout=15)
    assert answer.content.endswith("echo: again")


async def test_messages_waiting_for_an_answer_become_one_turn(
    make_harness: HarnessFactory,
) -> None:
    # A window shorter than the time fal takes to queue "a": "b" and "c" come too late to
    # join it, and wait behind its answer together.
    h = await make_harness(SEED_BOT_DISCORD__BATCH_WINDOW_SECONDS="0.001")
    thread, _ = await h.converse(h.world.alice, "first")
    h.fal.hold()
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "a")
    await h.fal.wait_for_submissions(2)
    await h.fake.send_message(h.world.alice, thread, "b")
    await h.fake.send_message(h.world.alice, thread, "c")
    await h.fake.sync_gateway()
    h.fal.unhold()
    await h.fake.wait_for_post(thread, contains="echo: b\nc", since=since, timeout=10)
    assert h.prompts() == ["first", "a", "b\nc"]


async def test_without_a_window_every_message_is_its_own_turn(harness: Harness) -> None:
    h = harness  # the harness runs with batch_window_seconds = 0
    thread, _ = await h.converse(h.world.alice, "first")
    h.fal.hold()
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "a")
    await h.fal.wait_for_submissions(2)
    await h.fake.send_message(h.world.alice, thread, "b")
    await h.fake.send_message(h.world.alice, thread, "c")
    await h.fake.sync_gateway()
    h.fal.unhold()
    await h.fake.wait_for_post(thread, contains="echo: c", since=since, timeout=10)
    assert h.prompts() == ["first", "a", "b", "c"]


async def test_data_uri_mode_inlines_small_images(make_harness: HarnessFactory) -> None:
    h = await make_harness(SEED_BOT_FAL__ATTACHMENT_MODE="data_uri")
    since = h.fake.mark()
    _, thread = await h.start_thread(h.world.alice, "look", files=[UserFile("dot.png", PNG)])
    await h.answer_in(thread, since=since, contains="echo:")
    [request] = h.fal.requests.values()
    assert request.input["image_urls"] == [
        "data:image/png;base64," + base64.b64encode(PNG).decode()
    ]
    assert h.fal.files == {}  # nothing uploaded


async def test_mention_required_in_threads_when_configured(make_harness: HarnessFactory) -> None:
    h = await make_harness(SEED_BOT_DISCORD__REPLY_WITHOUT_MENTION="false")
    thread, _ = await h.converse(h.world.alice, "first")
    await h.fake.send_message(h.world.alice, thread, "not for the bot")
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, f"<@{h.bot_user.id}> for the bot")
    await h.fake.wait_for_message(thread, contains="echo: for the bot", since=since)
    assert h.prompts() == ["first", "for the bot"]


async def test_dev_guild_gets_the_commands(
    make_harness: HarnessFactory, discord_world: StandardWorld
) -> None:
    guild_id = discord_world.guild.id
    h = await make_harness(SEED_BOT_DISCORD__DEV_GUILD_ID=str(guild_id))
    synced = h.fake.events_of(CommandsSynced)
    assert {e.guild_id for e in synced} == {None, guild_id}
    names = {c["name"] for c in h.fake.registered_commands()}
    assert {"ask", "thinking", "effort", "system", "params", "settings", "reset", "retry"} <= names


async def test_downloads_only_from_the_cdn_hosts() -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        media = DiscordMedia(session, ["cdn.discordapp.com", "127.0.0.1:9999"])
        assert media.allows("https://cdn.discordapp.com/attachments/1/2/a.png?ex=1")
        assert media.allows("http://127.0.0.1:9999/attachments/1/2/a.png")  # loopback: tests
        assert not media.allows("http://cdn.discordapp.com/a.png")  # plain http off loopback
        assert not media.allows("https://cdn.discordapp.com.evil.test/a.png")
        assert not media.allows("https://evil.test/a.png")
        assert not media.allows("https://127.0.0.1:9998/a.png")
        assert not media.allows("not a url")
        far = Attachment("1", "a.png", "image/png", 10, "https://evil.test/a.png")
        with pytest.raises(AttachmentError, match="not hosted on Discord's CDN"):
            await media.fetch(far, 100)
        big = Attachment("2", "b.png", "image/png", 10_000, "https://cdn.discordapp.com/b.png")
        with pytest.raises(AttachmentError, match="larger than"):
            await media.fetch(big, 100)
