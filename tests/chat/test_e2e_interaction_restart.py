"""End to end: a turn answered through an interaction (``/ask`` where the bot is not a
member) survives a restart within Discord's 15 minutes, and one past them costs nothing.
On SQLite and, when ``SEED_BOT_TEST_POSTGRES_URL`` is set, on PostgreSQL."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, text, update
from sqlalchemy.sql.expression import Executable

from bot.chat.sealing import TokenSeal
from bot.domain import runner
from bot.domain.models import TurnState
from bot.storage import create_engine
from bot.storage.tables import interactions, turns
from tests.chat.conftest import Away, Harness, HarnessFactory, answered, away, reply_through
from tests.fakes.discord import FakeInteraction, MessageCreated, MessageEdited
from tests.fakes.fal import ModelOutput, billable_units

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def database_url(chat_database_url: str) -> str:
    """The harness's database (SQLite, then PostgreSQL: tests/chat/conftest.py), named for
    the restarts and the checks that reach it directly."""
    return chat_database_url


async def sql(url: str, statement: str | Executable) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            query = text(statement) if isinstance(statement, str) else statement
            result = await connection.execute(query)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()


async def turn_state(h: Harness, ask: FakeInteraction) -> TurnState:
    await h.app.bot.idle()
    turn = await h.app.store.turns.latest_turn(f"interaction:{ask.id}")
    assert turn is not None
    return turn.state


async def kept(url: str) -> list[tuple[object, ...]]:
    return await sql(url, "SELECT interaction_id, sealed_token FROM interactions")


async def expire_kept(url: str) -> None:
    """As if the bot had stayed down past the interactions' 15 minutes."""
    past = datetime.now(UTC) - timedelta(minutes=1)
    await sql(url, update(interactions).values(expires_at=past))


async def ask_and_stop_while_at_fal(
    make_harness: HarnessFactory, url: str
) -> tuple[Harness, Away, FakeInteraction, str]:
    """``/ask`` where the bot is not; the bot stops while fal works on the request."""
    first = await make_harness(SEED_BOT_DATABASE__URL=url)
    there = away(first)
    first.fal.hold()
    ask = await first.fake.invoke_command(
        there.carol, there.channel, "ask", {"prompt": "survive this"}
    )
    await ask.wait_response()
    (request_id,) = await first.fal.wait_for_submissions(1)
    await first.stop()
    return first, there, ask, request_id


async def ask_and_stop_before_submitting(
    make_harness: HarnessFactory, url: str
) -> tuple[Harness, FakeInteraction]:
    """``/ask`` where the bot is not, stored while the one request allowed in flight (a
    thread's) holds the slot; the bot stops before submitting it."""
    first = await make_harness(SEED_BOT_DATABASE__URL=url, SEED_BOT_LIMITS__MAX_IN_FLIGHT="1")
    there = away(first)
    first.fal.hold()
    await first.start_thread(first.world.alice, "the slot")
    await first.fal.wait_for_submissions(1)
    ask = await first.fake.invoke_command(there.carol, there.channel, "ask", {"prompt": "later"})
    # Stored: its status (with a Stop button for the turn) shows while it waits for the slot.
    await ask.wait_original(
        lambda m: any(c.startswith("seed:stop:") for c in m.custom_ids()), timeout=10
    )
    await first.stop()
    assert len(first.fal.requests) == 1
    return first, ask


async def test_an_interaction_turn_at_fal_across_a_restart_is_delivered(
    make_harness: HarnessFactory, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    first, _, ask, request_id = await ask_and_stop_while_at_fal(make_harness, database_url)
    # The token is kept for the restart, sealed: not readable in the database.
    [(interaction_id, sealed)] = await kept(database_url)
    assert interaction_id == str(ask.id)
    assert isinstance(sealed, bytes) and sealed and ask.token.encode() not in sealed
    first.fal.unhold()

    second = await make_harness(SEED_BOT_DATABASE__URL=database_url)
    last = await answered(ask, "echo: survive this")
    assert last.ephemeral  # the visibility chosen before the restart
    assert await turn_state(second, ask) is TurnState.DELIVERED
    assert list(second.fal.requests) == [request_id]  # waited for, not submitted again
    assert await kept(database_url) == []  # dropped once used
    # Every line of every logger at DEBUG (discord.py's show URLs and payloads there).
    assert any(r.name.startswith("discord.webhook") for r in caplog.records)
    assert not [r.name for r in caplog.records if ask.token in r.getMessage()]


async def test_an_interaction_turn_stored_but_not_submitted_is_answered_after_a_restart(
    make_harness: HarnessFactory, database_url: str
) -> None:
    first, ask = await ask_and_stop_before_submitting(make_harness, database_url)
    first.fal.unhold()

    second = await make_harness(
        SEED_BOT_DATABASE__URL=database_url, SEED_BOT_LIMITS__MAX_IN_FLIGHT="1"
    )
    await answered(ask, "echo: later")
    assert await turn_state(second, ask) is TurnState.DELIVERED
    assert len(second.fal.requests) == 2
    assert await kept(database_url) == []


async def test_an_interaction_turn_stored_past_its_window_is_failed_without_a_model_call(
    make_harness: HarnessFactory, database_url: str
) -> None:
    first, ask = await ask_and_stop_before_submitting(make_harness, database_url)
    await expire_kept(database_url)
    first.fake.expire_interaction(ask)
    first.fal.unhold()

    second = await make_harness(
        SEED_BOT_DATABASE__URL=database_url, SEED_BOT_LIMITS__MAX_IN_FLIGHT="1"
    )
    assert await turn_state(second, ask) is TurnState.FAILED
    assert len(second.fal.requests) == 1  # the thread's only: nothing submitted for it
    assert await kept(database_url) == []


async def at_fal_past_its_window(
    make_harness: HarnessFactory, url: str
) -> tuple[Harness, FakeInteraction, str]:
    """An interaction turn at fal when the bot stopped, which stayed down past its window."""
    first, _, ask, request_id = await ask_and_stop_while_at_fal(make_harness, url)
    await expire_kept(url)
    first.fake.expire_interaction(ask)
    return first, ask, request_id


async def test_an_interaction_turn_at_fal_past_its_window_is_cancelled_and_failed(
    make_harness: HarnessFactory, database_url: str
) -> None:
    _, ask, request_id = await at_fal_past_its_window(make_harness, database_url)
    # fal still holds the request: a bot waiting for it would wait until its timeout.

    second = await make_harness(SEED_BOT_DATABASE__URL=database_url)
    assert await turn_state(second, ask) is TurnState.FAILED
    assert second.fal.requests[request_id].cancel_requested
    assert list(second.fal.requests) == [request_id]
    assert await kept(database_url) == []


async def test_an_interaction_turn_fal_finished_past_its_window_costs_what_fal_billed(
    make_harness: HarnessFactory, database_url: str
) -> None:
    first, ask, request_id = await at_fal_past_its_window(make_harness, database_url)
    first.fal.complete_now(request_id)  # fal finished (and billed it) while the bot was down

    second = await make_harness(SEED_BOT_DATABASE__URL=database_url)
    assert await turn_state(second, ask) is TurnState.FAILED
    turn = await second.app.store.turns.latest_turn(f"interaction:{ask.id}")
    assert turn is not None
    cost = await second.app.store.costs.turn_cost(turn.id)
    request = second.fal.requests[request_id]
    assert request.result_body is not None
    units = billable_units(request.input, request.result_body)
    assert cost is not None and (cost.units, cost.estimated, cost.settled) == (units, False, True)


async def test_expired_interactions_are_dropped_at_start_up(
    make_harness: HarnessFactory, database_url: str
) -> None:
    first, _, ask, _ = await ask_and_stop_while_at_fal(make_harness, database_url)
    await expire_kept(database_url)
    first.fal.unhold()
    # Kept for a turn nobody resumes (finished meanwhile, e.g. by another process).
    await sql(database_url, "UPDATE turns SET state = 'failed'")

    await make_harness(SEED_BOT_DATABASE__URL=database_url)
    assert await kept(database_url) == []
    assert ask.original_message is not None and ask.original_message.loading


def clock_ahead(monkeypatch: pytest.MonkeyPatch, by: timedelta) -> None:
    """The turn runner's clock ``by`` ahead: the interactions look that much older to it."""
    monkeypatch.setattr(runner, "utcnow", lambda: datetime.now(UTC) + by)


async def test_an_interaction_turn_whose_window_is_over_when_its_turn_comes_is_not_submitted(
    make_harness: HarnessFactory, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await make_harness(SEED_BOT_DATABASE__URL=database_url)
    there = away(h)
    clock_ahead(monkeypatch, timedelta(minutes=16))  # as if it had waited for a slot that long
    ask = await h.fake.invoke_command(there.carol, there.channel, "ask", {"prompt": "too late"})
    await ask.wait_response()
    assert await turn_state(h, ask) is TurnState.FAILED
    assert h.fal.requests == {}
    assert await kept(database_url) == []


async def test_an_interaction_turn_is_not_waited_for_past_its_window(
    make_harness: HarnessFactory, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await make_harness(SEED_BOT_DATABASE__URL=database_url)
    there = away(h)
    h.fal.hold()  # a bot waiting for it would wait until the turn's timeout (5 minutes)
    clock_ahead(monkeypatch, timedelta(minutes=15) - timedelta(seconds=3))
    ask = await h.fake.invoke_command(there.carol, there.channel, "ask", {"prompt": "slow"})
    await ask.wait_response()
    assert await turn_state(h, ask) is TurnState.FAILED
    # Cancelled at fal when the window closed (or, on a slow machine, never submitted).
    assert all(r.cancel_requested for r in h.fal.requests.values())
    assert await kept(database_url) == []


async def test_an_answer_half_posted_before_a_restart_goes_on_after_what_was_seen(
    make_harness: HarnessFactory, database_url: str
) -> None:
    first = await make_harness(SEED_BOT_DATABASE__URL=database_url)
    fake = first.fake
    there = away(first)
    first.fal.responder = lambda args: ModelOutput(
        "\n\n".join(f"Part {n}: " + "words " * 300 for n in range(3)), None
    )
    ask = await fake.invoke_command(there.carol, there.channel, "ask", {"prompt": "long"})
    await answered(ask, "Part 2:")
    await first.app.bot.idle()
    turn = await first.app.store.turns.latest_turn(f"interaction:{ask.id}")
    assert turn is not None and len(turn.reply_message_ids) == 3
    original = turn.reply_message_ids[0]
    await first.stop()
    # As if the bot had stopped right after posting the first part: the turn answered but
    # not delivered, one part recorded, the interaction still kept.
    await sql(
        database_url,
        update(turns)
        .where(turns.c.id == turn.id)
        .values(state=TurnState.COMPLETED.value, reply_message_ids=[original]),
    )
    await sql(
        database_url,
        insert(interactions).values(
            interaction_id=str(ask.id),
            application_id=str(fake.application_id),
            user_id=str(there.carol.id),
            sealed_token=TokenSeal(fake.token).seal(ask.token, str(ask.id)),
            ephemeral=True,
            expires_at=datetime.now(UTC) + timedelta(minutes=10),
        ),
    )

    since = fake.mark()
    second = await make_harness(SEED_BOT_DATABASE__URL=database_url)
    assert await turn_state(second, ask) is TurnState.DELIVERED
    created = fake.events_of(MessageCreated, since=since)
    assert all(e.via == "followup" and e.interaction_id == ask.id for e in created)
    posted = [e.message for e in created]
    assert [m.content.split(":")[0] for m in posted] == ["Part 1", "Part 2"]
    assert all(m.ephemeral for m in posted)
    assert not [
        e for e in fake.events_of(MessageEdited, since=since) if e.after.id == int(original)
    ]
    delivered = await second.app.store.turns.find_turn(turn.id)
    assert delivered is not None
    assert delivered.reply_message_ids == (original, *(str(m.id) for m in posted))
    assert await kept(database_url) == []


async def test_a_reply_in_flight_across_a_restart_is_answered_through_its_own_interaction(
    make_harness: HarnessFactory, database_url: str
) -> None:
    first = await make_harness(SEED_BOT_DATABASE__URL=database_url)
    there = away(first)
    ask = await first.fake.invoke_command(there.carol, there.channel, "ask", {"prompt": "one"})
    last = await answered(ask, "echo: one")
    first.fal.hold()
    submit = await reply_through(first, there.carol, last, "and two")
    await submit.wait_response()
    await first.fal.wait_for_submissions(2)
    await first.stop()
    first.fal.unhold()

    second = await make_harness(SEED_BOT_DATABASE__URL=database_url)
    await answered(submit, "echo: and two")
    assert await turn_state(second, ask) is TurnState.DELIVERED  # the conversation's latest
    assert await kept(database_url) == []
