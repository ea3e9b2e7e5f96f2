"""The two crash windows of a delivery that test_restart_kill.py hits only by timing, set up
exactly: a restart after the status message was posted but before its id was stored, and a
restart after every part of the answer was posted but before the turn was marked delivered."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from bot.domain.models import TurnState
from bot.storage import create_engine
from tests.chat.conftest import HarnessFactory
from tests.fakes.discord.events import MessageCreated, MessageEdited
from tests.fakes.fal import Fault

STATUS = "Thinking…"


async def rewrite_turns(tmp_path: Path, sql: str) -> None:
    """Put the stored turns back to what a crash at an earlier step would have left."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    try:
        async with engine.begin() as connection:
            await connection.execute(text(sql))
    finally:
        await engine.dispose()


async def turn_states(tmp_path: Path) -> list[TurnState]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(text("SELECT state FROM turns ORDER BY id"))
            return [TurnState(state) for (state,) in rows]
    finally:
        await engine.dispose()


@pytest.mark.timeout(30)
async def test_a_status_message_whose_id_was_lost_becomes_the_answer(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    first = await make_harness()
    fake, fal = first.fake, first.fal
    fal.hold()
    _, thread = await first.start_thread(first.world.alice, "lost status")
    status = await fake.wait_for_message(thread, contains=STATUS, timeout=10)
    await first.stop()
    # as if the bot died between posting the status message and storing its id
    await rewrite_turns(tmp_path, "UPDATE turns SET status_message_id = NULL")
    fal.unhold()

    second = await make_harness()
    await fake.wait_for_post(thread, contains="echo: lost status", timeout=10)
    await second.app.bot.idle()  # the delivery is recorded after the post
    contents = [m.content for m in fake.bot_messages(thread)]
    assert len(contents) == 1, contents  # reasoning and answer in one: no stray status
    assert "The user said: lost status" in contents[0] and "echo: lost status" in contents[0]
    assert fake.bot_messages(thread)[0].id == status.id  # the status became the first part
    # without its Stop button: the answer's Retry button instead
    [row] = fake.bot_messages(thread)[0].components
    assert [c["custom_id"].split(":")[1] for c in row["components"]] == ["retry"]
    assert await turn_states(tmp_path) == [TurnState.DELIVERED]


@pytest.mark.timeout(30)
async def test_a_delivered_answer_not_yet_marked_so_is_left_alone_on_restart(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    first = await make_harness()
    fake, fal = first.fake, first.fal
    fal.hold()
    _, thread = await first.start_thread(first.world.alice, "all parts out")
    await fake.wait_for_message(thread, contains=STATUS, timeout=10)  # part 0 will be it
    fal.unhold()
    await fake.wait_for_post(thread, contains="echo: all parts out", timeout=10)
    await fake.sync_gateway()
    await first.app.bot.idle()  # the delivery is recorded after the post
    await first.stop()
    before = [m.content for m in fake.bot_messages(thread)]
    # as if the bot died after posting every part, before marking the turn delivered
    await rewrite_turns(tmp_path, "UPDATE turns SET state = 'completed'")

    since = fake.mark()
    second = await make_harness()  # returns once the unfinished turns are queued
    await second.app.bot.idle()  # ...and now they have run
    await fake.sync_gateway()
    changed = [
        e for e in fake.events[since:] if isinstance(e, MessageCreated | MessageEdited) and e.by_bot
    ]
    assert changed == []  # the status message did not turn back into "Thinking…"
    assert [m.content for m in fake.bot_messages(thread)] == before
    assert await turn_states(tmp_path) == [TurnState.DELIVERED]


async def test_a_shutdown_during_submission_keeps_the_request_id(
    make_harness: HarnessFactory,
) -> None:
    """Stopping the bot while a submit is on its way to fal must not lose the request id:
    the next start waits for that request instead of submitting the message again."""
    h = await make_harness()
    h.fal.faults.append(Fault.slow(0.5, "submit"))
    since = h.fake.mark()
    message = await h.mention(h.world.alice, "in transit")
    await h.fal.wait_for(lambda: len(h.fal.calls_to("submit")) == 1)
    await h.stop()  # cancels the turn mid-submit
    h2 = await make_harness()
    thread = await h2.fake.wait_for_thread(h2.world.channel, from_message=message, since=since)
    await h2.fake.wait_for_message(thread, contains="echo: in transit", since=since, timeout=10)
    assert len(h2.fal.calls_to("submit")) == 1
    assert len(h2.fal.requests) == 1
