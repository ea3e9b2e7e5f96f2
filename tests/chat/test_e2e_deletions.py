"""A message deleted in Discord (one, or in bulk) leaves the stored history: the next
request to fal carries neither its text nor the answer to it. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.chat.conftest import Harness, HarnessFactory
from tests.fakes.discord.events import MessageCreated, MessageEdited
from tests.fakes.discord.models import FakeChannel, FakeMessage
from tests.storage.conftest import (
    BACKENDS,
    POSTGRES_ENV,
    fresh_postgres_database,
    postgres_base_url,
)


@pytest_asyncio.fixture(params=BACKENDS)
async def start(
    request: pytest.FixtureRequest, make_harness: HarnessFactory
) -> AsyncIterator[HarnessFactory]:
    """``make_harness`` on the database under test."""
    if request.param == "sqlite":
        yield make_harness
        return
    base = postgres_base_url()
    if base is None:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV}")
    async with fresh_postgres_database(base) as url:

        async def make(**env: str) -> Harness:
            return await make_harness(
                SEED_BOT_DATABASE__URL=url, SEED_BOT_DATABASE__AUTO_MIGRATE="true", **env
            )

        yield make


def last_request(h: Harness) -> str:
    """Everything the last request to fal carried (history and prompt), as text."""
    return repr(list(h.fal.requests.values())[-1].input)


async def say(h: Harness, thread: FakeChannel, text: str) -> tuple[FakeMessage, FakeMessage]:
    """Alice says ``text`` in ``thread``; her message and the answer to it."""
    since = h.fake.mark()
    message = await h.fake.send_message(h.world.alice, thread, text)
    answer = await h.answer_in(thread, since=since, contains=f"echo: {text}")
    await h.app.bot.idle()
    return message, answer


async def opened(h: Harness) -> tuple[FakeMessage, FakeChannel]:
    """Alice opens a conversation with "opening words"; her message and the thread, answered."""
    since = h.fake.mark()
    message, thread = await h.start_thread(h.world.alice, "opening words")
    await h.answer_in(thread, since=since, contains="echo: opening words")
    await h.app.bot.idle()
    return message, thread


async def settled(h: Harness) -> None:
    """The bot has seen every gateway event so far and finished what they started."""
    await h.fake.sync_gateway()
    await h.app.bot.idle()


async def test_a_deleted_message_and_its_answer_leave_the_history(
    start: HarnessFactory,
) -> None:
    h = await start()
    opening, thread = await opened(h)
    gone, _ = await say(h, thread, "private-words-one")
    await say(h, thread, "kept words")
    assert "private-words-one" in last_request(h)

    await h.fake.delete_message(gone)
    await settled(h)
    await say(h, thread, "next question")

    sent = last_request(h)
    assert "private-words-one" not in sent  # neither the text nor the echo answering it
    assert "opening words" in sent and "kept words" in sent

    # The message the thread was opened on (in the channel) takes its turn along too.
    await h.fake.delete_message(opening)
    await settled(h)
    await say(h, thread, "once more")
    assert "opening words" not in last_request(h) and "kept words" in last_request(h)


async def test_a_bulk_delete_removes_every_turn_it_names(start: HarnessFactory) -> None:
    h = await start()
    _, thread = await opened(h)
    first, _ = await say(h, thread, "bulk-gone-one")
    second, _ = await say(h, thread, "bulk-gone-two")
    await say(h, thread, "kept words")

    await h.fake.bulk_delete_messages([first, second])
    await settled(h)
    await say(h, thread, "next question")

    sent = last_request(h)
    assert "bulk-gone-one" not in sent and "bulk-gone-two" not in sent
    assert "kept words" in sent


def _has_stop(m: FakeMessage, thread: FakeChannel) -> bool:
    return m.channel_id == thread.id and any(
        c["custom_id"].startswith("seed:stop:") for row in m.components for c in row["components"]
    )


async def test_a_message_deleted_while_answered_stops_its_turn(start: HarnessFactory) -> None:
    h = await start()
    _, thread = await opened(h)
    h.fal.hold()
    since = h.fake.mark()
    gone = await h.fake.send_message(h.world.alice, thread, "in-flight-words")
    event: Any = await h.fake.wait_for(
        lambda e: (
            (isinstance(e, MessageCreated) and e.by_bot and _has_stop(e.message, thread))
            or (isinstance(e, MessageEdited) and _has_stop(e.after, thread))
        ),
        since=since,
        timeout=10,
    )
    status = event.message if isinstance(event, MessageCreated) else event.after
    [request_id] = list(h.fal.requests)[-1:]

    await h.fake.delete_message(gone)
    await h.fake.wait_for_edit(
        status, lambda m: "the message was deleted" in m.content, since=since, timeout=10
    )
    await h.fal.wait_for(lambda: h.fal.requests[request_id].cancel_requested)
    h.fal.unhold()
    await settled(h)
    await say(h, thread, "next question")
    assert "in-flight-words" not in last_request(h)


async def test_deleting_one_message_of_a_burst_removes_the_turn_it_was_merged_into(
    start: HarnessFactory,
) -> None:
    h = await start(SEED_BOT_DISCORD__BATCH_WINDOW_SECONDS="5")
    _, thread = await opened(h)
    h.fal.hold()
    since = h.fake.mark()
    first = await h.fake.send_message(h.world.alice, thread, "burst-part-one")
    [_, running] = await h.fal.wait_for_submissions(2)
    await h.fake.send_message(h.world.alice, thread, "burst-part-two")
    await h.fal.wait_for(lambda: h.fal.requests[running].cancel_requested)
    await h.fal.wait_for(
        lambda: (
            list(h.fal.requests.values())[-1].input["prompt"] == "burst-part-one\nburst-part-two"
        )
    )
    h.fal.unhold()
    await h.answer_in(thread, since=since, contains="echo: burst-part-one\nburst-part-two")
    await h.app.bot.idle()

    # The first message is not the one the turn is stored under: it goes all the same.
    await h.fake.delete_message(first)
    await settled(h)
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "next question")
    await h.answer_in(thread, since=since, contains="echo: next question")
    sent = last_request(h)
    assert "burst-part-one" not in sent and "burst-part-two" not in sent
    assert "opening words" in sent
