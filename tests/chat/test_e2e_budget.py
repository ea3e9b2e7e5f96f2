"""Discord's request budget (about 50 REST requests/s per bot token): work is shown only for
turns that run. A turn waiting for an in-flight slot posts at most one status saying so and
nothing else until it runs; typing starts once a turn has run for a while, so a fast answer
is one request."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import partial

import discord

from bot.chat.threadcache import IDLE_THREAD_SECONDS, evict_idle_threads
from tests.chat.conftest import Harness, HarnessFactory, answered, away
from tests.fakes.discord.events import HttpRequest, MessageEdited, TypingStarted
from tests.fakes.discord.models import FakeChannel, FakeMessage
from tests.fakes.discord.standard import StandardWorld

WAITING = "waiting for a free slot"


def requests_in(h: Harness, thread: FakeChannel, since: int) -> list[str]:
    """The routes of the REST requests that named ``thread`` since ``since``."""
    return [
        str(r.route) for r in h.fake.events_of(HttpRequest, since=since) if str(thread.id) in r.path
    ]


def typed_in(h: Harness, thread: FakeChannel, since: int = 0) -> int:
    return sum(1 for e in h.fake.events_of(TypingStarted, since=since) if e.channel_id == thread.id)


async def test_a_fast_answer_is_one_request(make_harness: HarnessFactory) -> None:
    # Delays far above a fake turn's time, so a busy machine does not make it "slow".
    h = await make_harness(status_delay=30.0, typing_delay=5.0)
    thread, _ = await h.converse(h.world.alice, "opening")
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "quick one")
    await h.answer_in(thread, since=since, contains="echo: quick one")
    assert requests_in(h, thread, since) == ["POST /channels/{channel_id}/messages"]


async def test_a_turn_that_runs_a_while_shows_typing(make_harness: HarnessFactory) -> None:
    h = await make_harness(typing_delay=0.2)
    thread, _ = await h.converse(h.world.alice, "opening")
    h.fal.hold()
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "take your time")
    await h.fal.wait_for_submissions(2)
    await h.fake.wait_for_typing(thread, since=since)
    h.fal.unhold()
    await h.answer_in(thread, since=since, contains="echo: take your time")


async def test_turns_waiting_for_a_slot_post_one_status_and_nothing_else(
    make_harness: HarnessFactory,
) -> None:
    # Statuses after 6 s: until then the running turns' typing (repeated by discord.py
    # every 5 s) shows time passing, during which a waiting turn must send nothing.
    h = await make_harness(SEED_BOT_LIMITS__MAX_IN_FLIGHT="2", status_delay=6.0, typing_delay=0.2)
    h.fal.hold()
    since = h.fake.mark()
    running = [(await h.start_thread(h.world.alice, f"running {n}"))[1] for n in range(2)]
    await h.fal.wait_for_submissions(2)
    waiting = [(await h.start_thread(h.world.bob, f"waiting {n}"))[1] for n in range(10)]
    for thread in running:
        typed_twice = partial(lambda t, _event: typed_in(h, t, since) >= 2, thread)
        await h.fake.wait_for(typed_twice, since=since, timeout=15, what="typing twice")
    for thread in waiting:
        assert requests_in(h, thread, since) == [
            "POST /channels/{channel_id}/messages/{message_id}/threads",  # made on its message
        ]
    statuses = [
        await h.fake.wait_for_message(thread, since=since, contains=WAITING, timeout=15)
        for thread in waiting
    ]
    places = sorted(
        int(m.group(1)) for s in statuses if (m := re.search(r"position (\d+)", s.content))
    )
    assert places == list(range(1, 11))
    for thread in running:  # their status shows the work now: typing has stopped
        await h.fake.wait_for_message(thread, since=since, contains="Thinking")
    for thread in waiting:
        assert requests_in(h, thread, since) == [
            "POST /channels/{channel_id}/messages/{message_id}/threads",
            "POST /channels/{channel_id}/messages",  # the status, and nothing else
        ]
        assert typed_in(h, thread) == 0
    assert len(h.fal.requests) == 2  # nothing of theirs reached fal either
    h.fal.unhold()
    for thread, status in zip(waiting, statuses, strict=True):
        answer = await h.answer_in(thread, since=since, contains="echo:")
        assert answer.id == status.id  # the one status became the answer
        assert len(h.fake.bot_messages(thread)) == 1
    assert sum(typed_in(h, thread) for thread in waiting) == 0  # their status showed the work


async def test_an_idle_thread_leaves_the_cache_and_its_next_message_brings_it_back(
    harness: Harness,
) -> None:
    h = harness
    thread, _ = await h.converse(h.world.alice, "opening")
    bot = h.app.bot
    assert evict_idle_threads(bot.guilds, datetime.now(UTC)) == 0  # just used
    an_hour_on = datetime.now(UTC) + timedelta(seconds=IDLE_THREAD_SECONDS + 1)
    assert evict_idle_threads(bot.guilds, an_hour_on) >= 1
    assert bot.get_channel(thread.id) is None
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "still here?")  # no mention needed
    await h.answer_in(thread, since=since, contains="echo: still here?")
    assert isinstance(bot.get_channel(thread.id), discord.Thread)
    assert len(h.fake.threads(h.world.channel)) == 1  # answered in it, no new thread


async def test_a_turn_waiting_for_a_slot_stops_at_once(make_harness: HarnessFactory) -> None:
    h = await make_harness(SEED_BOT_LIMITS__MAX_IN_FLIGHT="1")
    h.fal.hold()
    since = h.fake.mark()
    _, busy = await h.start_thread(h.world.alice, "occupy the slot")
    await h.fal.wait_for_submissions(1)
    _, thread = await h.start_thread(h.world.alice, "wait for it")
    status = await h.fake.wait_for_message(thread, since=since, contains=WAITING)
    [stop_id] = [i for i in status.custom_ids() if i.startswith("seed:stop:")]
    await (await h.fake.press_button(h.world.alice, status, stop_id)).wait_response()
    # Stopped while the slot is still taken, not once it frees up.
    await h.fake.wait_for_edit(status, lambda m: "Stopped by" in m.content, since=since)
    assert len(h.fal.requests) == 1
    h.fal.unhold()
    await h.answer_in(busy, since=since, contains="echo: occupy the slot")
    assert len(h.fal.requests) == 1  # the stopped turn never reached fal


def status_edits(h: Harness, status: FakeMessage, since: int) -> list[str]:
    """What the bot's edits of ``status`` since ``since`` made it say, in order."""
    return [
        e.after.content
        for e in h.fake.events_of(MessageEdited, since=since)
        if e.by_bot and e.after.id == status.id
    ]


async def test_a_stopped_waiting_turn_leaves_the_line_at_once(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(SEED_BOT_LIMITS__MAX_IN_FLIGHT="1")
    h.fal.hold()
    since = h.fake.mark()
    _, busy = await h.start_thread(h.world.alice, "occupy the slot")
    await h.fal.wait_for_submissions(1)
    _, first = await h.start_thread(h.world.alice, "first in line")
    _, second = await h.start_thread(h.world.bob, "second in line")
    status = await h.fake.wait_for_message(first, since=since, contains=WAITING)
    await h.fake.wait_for_message(second, since=since, contains="position 2")
    [stop_id] = [i for i in status.custom_ids() if i.startswith("seed:stop:")]
    pressed = h.fake.mark()
    await (await h.fake.press_button(h.world.alice, status, stop_id)).wait_response()
    await h.fake.wait_for_edit(status, lambda m: "Stopped by" in m.content, since=pressed)
    # It left the line at once: the turn behind it is next, and runs once the slot frees.
    assert h.app.service.slots.waiting == 1
    h.fal.unhold()
    await h.answer_in(busy, since=since, contains="echo: occupy the slot")
    await h.answer_in(second, since=since, contains="echo: second in line")
    assert len(h.fal.requests) == 2  # the stopped turn never reached fal
    edits = status_edits(h, status, pressed)
    assert edits and all("Stopped by" in e for e in edits), edits


async def test_an_ask_waiting_for_a_slot_says_so_through_its_interaction(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(SEED_BOT_LIMITS__MAX_IN_FLIGHT="1")
    there = away(h)
    h.fal.hold()
    since = h.fake.mark()
    _, busy = await h.start_thread(h.world.alice, "occupy the slot")
    await h.fal.wait_for_submissions(1)
    ask = await h.fake.invoke_command(there.carol, there.channel, "ask", {"prompt": "me next"})
    status = await ask.wait_original(lambda m: WAITING in m.content, timeout=10)
    assert "(position 1)" in status.content
    h.fal.unhold()
    await answered(ask, "echo: me next")
    await h.answer_in(busy, since=since, contains="echo: occupy the slot")


async def test_an_edit_in_an_evicted_thread_is_answered_again(
    make_harness: HarnessFactory, discord_world: StandardWorld
) -> None:
    # Allowed in #general only: the edit's thread must be known as #general's again.
    h = await make_harness(SEED_BOT_ACCESS__ALLOW_CHANNELS=str(discord_world.channel.id))
    thread, _ = await h.converse(h.world.alice, "opening")
    since = h.fake.mark()
    message = await h.fake.send_message(h.world.alice, thread, "wrong question")
    await h.answer_in(thread, since=since, contains="echo: wrong question")
    an_hour_on = datetime.now(UTC) + timedelta(seconds=IDLE_THREAD_SECONDS + 1)
    assert evict_idle_threads(h.app.bot.guilds, an_hour_on) >= 1
    since = h.fake.mark()
    await h.fake.edit_message(message, "right question")
    await h.answer_in(thread, since=since, contains="echo: right question")
    assert isinstance(h.app.bot.get_channel(thread.id), discord.Thread)
