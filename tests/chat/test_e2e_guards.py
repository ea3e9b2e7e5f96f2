"""End to end, the guards of the Discord layer: every way in passes the gate (buttons too),
thread names show nothing hidden, who said what in a shared thread, a locked thread, the bot's
own edits."""

from __future__ import annotations

import gc
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.chat.bot import ChatOptions, SeedBot
from bot.domain.models import Conversation
from tests.chat.conftest import Harness, HarnessFactory
from tests.fakes.discord.events import MessageCreated
from tests.fakes.discord.models import FakeChannel, FakeUser, Perm


async def answer_after(h: Harness, thread: FakeChannel, change: Any) -> int:
    """Alice asks in ``thread``; once fal has the request, ``change`` (a coroutine function)
    alters Discord; then fal answers. Returns the event mark from before the question."""
    h.fal.hold()
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "answer me later")
    await h.fal.wait_for_submissions(2)
    await change()
    h.fal.unhold()
    return since


async def deny(h: Harness, user: FakeUser) -> None:
    """Put ``user`` on the deny list of the running bot (as /admin reload would)."""
    (h.tmp_path / "config.toml").write_text(f'[access]\ndeny_users = ["{user.id}"]\n')
    assert h.app.bot.reload_config is not None
    assert await h.app.bot.reload_config() == []


# -- 1. buttons pass the gate ------------------------------------------------------------------


async def test_a_denied_user_cannot_retry_through_the_button(harness: Harness) -> None:
    h = harness
    _, answer = await h.converse(h.world.alice, "first")
    [retry_id] = answer.custom_ids()
    await deny(h, h.world.alice)
    pressed = await h.fake.press_button(h.world.alice, answer, retry_id)
    response = await pressed.wait_response()
    assert response.ephemeral
    assert response.data is not None
    assert response.data["content"] == "⛔ Sorry, you are not allowed to use this bot."
    await h.app.bot.idle()
    assert len(h.fal.requests) == 1  # no model call


async def test_a_denied_user_cannot_stop_through_the_button(harness: Harness) -> None:
    h = harness
    thread, _ = await h.converse(h.world.alice, "first")
    h.fal.hold()
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "keep going")
    status = await h.fake.wait_for_message(
        thread, lambda m: any(i.startswith("seed:stop:") for i in m.custom_ids()), since=since
    )
    await deny(h, h.world.alice)
    [stop_id] = status.custom_ids()
    pressed = await h.fake.press_button(h.world.alice, status, stop_id)
    response = await pressed.wait_response()
    assert response.data is not None and "not allowed to use this bot" in response.data["content"]
    h.fal.unhold()
    await h.fake.wait_for_post(thread, contains="echo: keep going", since=since)


async def test_retry_through_the_button_counts_against_the_quota(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(SEED_BOT_LIMITS__USER_REQUESTS="1")
    _, answer = await h.converse(h.world.alice, "the only one")
    [retry_id] = answer.custom_ids()
    pressed = await h.fake.press_button(h.world.alice, answer, retry_id)
    response = await pressed.wait_response()
    assert response.data is not None and "request limit" in response.data["content"]
    await h.app.bot.idle()
    assert len(h.fal.requests) == 1


# -- 2. thread names ---------------------------------------------------------------------------


async def test_a_thread_name_shows_no_mass_ping_nor_hidden_characters(harness: Harness) -> None:
    h = harness
    prompt = "@everyone \u202eevil\u200b name @here\ufeff"
    since = h.fake.mark()
    message = await h.mention(h.world.alice, prompt)
    thread = await h.fake.wait_for_thread(h.world.channel, from_message=message, since=since)
    assert thread.name == "evil name"
    await h.answer_in(thread, since=since, contains="echo:")


async def test_a_thread_name_is_never_empty(harness: Harness) -> None:
    h = harness
    since = h.fake.mark()
    message = await h.mention(h.world.alice, "@everyone \u200b\u2066")
    thread = await h.fake.wait_for_thread(h.world.channel, from_message=message, since=since)
    assert thread.name and "everyone" not in thread.name and "\u200b" not in thread.name


# -- 3. who said what --------------------------------------------------------------------------


async def test_in_a_shared_thread_every_user_turn_can_be_attributed(harness: Harness) -> None:
    h = harness
    thread, _ = await h.converse(h.world.alice, "alice one")
    await h.say(h.world.alice, thread, "alice two")
    await h.say(h.world.bob, thread, "bob joins")
    request = list(h.fal.requests.values())[-1].input
    assert request["prompt"] == "[Bob]: bob joins"
    # the turns before Bob arrived are unlabelled, and the model is told whose they are
    users = [m["content"] for m in request["messages"] if m["role"] == "user"]
    assert users == ["alice one", "alice two"]
    assert "without such a label were written by Alice" in request["system_prompt"]
    await h.say(h.world.alice, thread, "alice three")
    request = list(h.fal.requests.values())[-1].input
    assert request["prompt"] == "[Alice]: alice three"
    assert "written by Alice" in request["system_prompt"]


async def test_one_person_alone_gets_no_labels(harness: Harness) -> None:
    h = harness
    thread, _ = await h.converse(h.world.alice, "alone")
    await h.say(h.world.alice, thread, "still alone")
    request = list(h.fal.requests.values())[-1].input
    assert request["prompt"] == "still alone"
    assert "system_prompt" not in request


# -- 4. a locked thread ------------------------------------------------------------------------


async def test_an_answer_to_a_locked_thread_is_explained_in_the_log_and_the_channel(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    thread, _ = await h.converse(h.world.alice, "first")
    caplog.set_level(logging.WARNING, logger="bot.chat.delivery")

    async def lock() -> None:
        await h.fake.archive_thread(thread, locked=True)
        await h.fake.sync_gateway()

    since = await answer_after(h, thread, lock)
    notice = await h.fake.wait_for_message(h.world.channel, since=since, contains="couldn't post")
    assert f"<#{thread.id}>" in notice.content and "the thread is locked" in notice.content
    await h.app.bot.idle()
    logged = [r.getMessage() for r in caplog.records if r.name == "bot.chat.delivery"]
    assert any("the thread is locked" in line for line in logged), logged
    assert not any("missing permission" in line.lower() for line in logged), logged
    # the answer nobody saw stays out of the history once the thread is open again (a
    # moderator unlocks it; the next message unarchives it)
    thread.locked = False
    await h.say(h.world.alice, thread, "are you there?")
    users = [m for m in list(h.fal.requests.values())[-1].input["messages"] if m["role"] == "user"]
    assert [m["content"] for m in users] == ["first"]


async def test_a_lost_permission_in_a_thread_is_named(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    thread, _ = await h.converse(h.world.alice, "first")
    caplog.set_level(logging.WARNING, logger="bot.chat.delivery")

    async def take_permission() -> None:
        h.fake.deny_bot(h.world.channel, Perm.SEND_MESSAGES_IN_THREADS)

    since = await answer_after(h, thread, take_permission)
    await h.app.bot.idle()
    logged = [r.getMessage() for r in caplog.records if r.name == "bot.chat.delivery"]
    assert any("missing a permission" in line for line in logged), logged
    assert not [
        e
        for e in h.fake.events_of(MessageCreated, since=since)
        if e.by_bot and "echo: answer me later" in e.message.content
    ]


# -- 5. the bot's own edits --------------------------------------------------------------------


async def test_the_bots_own_edits_cost_no_database_work(harness: Harness) -> None:
    h = harness
    _, answer = await h.converse(h.world.alice, "first")
    await h.app.bot.idle()
    # Every unit of work, on either execution path, passes the transaction helper's observers.
    transactions: list[str] = []
    observers = h.app.store.db.observers
    observers.append(lambda what, _write: transactions.append(what))
    try:
        await h.fake.edit_message(answer, answer.content + " (edited by the bot)")
        await h.fake.sync_gateway()
        await h.app.bot.idle()
    finally:
        observers.pop()
    assert transactions == []


# -- several processes: which conversations are this one's -------------------------------------


def test_a_process_owns_the_conversations_of_its_shards() -> None:
    def conversation(guild_id: str | None) -> Conversation:
        now = datetime.now(UTC)
        return Conversation(1, "1", guild_id, None, "1", 0, now, now)

    on_zero = str(4 << 22)  # (id >> 22) % 2 == 0
    on_one = str(5 << 22)
    second = SeedBot(ChatOptions(shard_count=2, shard_ids=(1,)))
    assert second.owns(conversation(on_one)) and not second.owns(conversation(on_zero))
    assert not second.owns(conversation(None))  # DMs go to shard 0
    everything = SeedBot(ChatOptions())
    assert everything.owns(conversation(on_zero)) and everything.owns(conversation(None))


# -- the heap after start-up -------------------------------------------------------------------


async def test_start_up_leaves_its_objects_out_of_the_collectors_way(
    make_harness: HarnessFactory,
) -> None:
    gc.unfreeze()  # what other tests' bots froze in this process
    assert gc.get_freeze_count() == 0
    h = await make_harness()
    await h.app.bot.caught_up.wait()
    assert gc.get_freeze_count() > 0
    _, answer = await h.converse(h.world.alice, "still answering")
    assert "echo: still answering" in answer.content
