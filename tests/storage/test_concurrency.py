"""Several tasks, and several engines standing for several processes, on one database."""

from __future__ import annotations

import asyncio

import pytest

from bot.domain.errors import DuplicateMessage
from bot.domain.models import Conversation, NewConversation, RequestHandle, TurnStart, TurnState
from bot.storage import Repositories, create_engine, sql_repositories

from .conftest import begin, decoded, exchange, new_turn, reply, utc


async def test_concurrent_appends_to_one_conversation_all_survive_in_order(
    store: Repositories, other_store: Repositories, conversation: Conversation
) -> None:
    turns = [await begin(store, new_turn(conversation, str(i))) for i in range(12)]
    stores = [store, other_store]

    await asyncio.gather(
        *(
            stores[i % 2].turns.complete_turn(turn.id, reply(), exchange(str(turn.id)))
            for i, turn in enumerate(turns)
        )
    )

    history = await store.conversations.history(conversation.id, 0)
    assert len(history) == 2 * len(turns)
    assert [e.position for e in history] == list(range(len(history)))
    # Each turn's two messages are adjacent and in their order, whatever order turns landed in.
    pairs = [history[i : i + 2] for i in range(0, len(history), 2)]
    assert sorted(p[0].turn_id for p in pairs) == [t.id for t in turns]
    for first, second in pairs:
        assert first.turn_id == second.turn_id
        assert decoded([first, second]) == exchange(str(first.turn_id))


async def test_two_tasks_each_appending_turn_after_turn(
    store: Repositories, other_store: Repositories, conversation: Conversation
) -> None:
    async def talk(s: Repositories, who: str) -> list[int]:
        ids = []
        for i in range(8):
            turn = await begin(s, new_turn(conversation, f"{who}{i}"))
            await s.turns.complete_turn(turn.id, reply(), exchange(f"{who}{i}"))
            ids.append(turn.id)
        return ids

    a_ids, b_ids = await asyncio.gather(talk(store, "a"), talk(other_store, "b"))

    history = await store.conversations.history(conversation.id, 0)
    assert len(history) == 32
    turn_order = [e.turn_id for e in history[::2]]
    # Both tasks' turns are all there, each task's in the order it completed them.
    assert [t for t in turn_order if t in a_ids] == a_ids
    assert [t for t in turn_order if t in b_ids] == b_ids


async def test_concurrent_quota_checks_never_exceed_the_limit(
    store: Repositories, other_store: Repositories
) -> None:
    limit = 7
    stores = [store, other_store]
    results = await asyncio.gather(
        *(
            stores[i % 2].usage.try_consume(
                [("user:1", limit, 3600), ("guild:1", 100, 3600)], now=utc(9, 0, i)
            )
            for i in range(40)
        )
    )
    allowed = [r for r in results if r is None]
    assert len(allowed) == limit
    # Every refusal names a time at which the first counted request has left the window.
    assert all(
        r.keys == ("user:1",) and utc(10, 0, 0) <= r.retry_at <= utc(10, 0, 39)
        for r in results
        if r is not None
    )
    # And exactly `limit` requests were recorded against the shared key: one more fits.
    guild = [("guild:1", limit + 1, 3600)]
    assert await store.usage.try_consume(guild, now=utc(9, 1)) is None
    assert await store.usage.try_consume(guild, now=utc(9, 1)) is not None


async def test_racing_duplicate_message_gets_exactly_one_turn(
    store: Repositories, other_store: Repositories, conversation: Conversation
) -> None:
    results = await asyncio.gather(
        *(
            s.conversations.begin_turn(
                new_turn(conversation, "1300000000000000042", prompt=f"copy {i}")
            )
            for i, s in enumerate([store, other_store, store, other_store])
        ),
        return_exceptions=True,
    )
    turns = [r.turn for r in results if isinstance(r, TurnStart)]
    refused = [r for r in results if not isinstance(r, TurnStart)]
    assert len(turns) == 1
    assert len(refused) == 3
    assert all(isinstance(r, DuplicateMessage) for r in refused)
    # The winner is intact.
    assert await store.turns.turn_for_source("1300000000000000042") == turns[0]


async def test_pending_turn_survives_a_restart(migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    store = sql_repositories(engine)
    conversation = await store.conversations.create_conversation(
        NewConversation(scope_id="1", owner_id="2")
    )
    submitted = await begin(store, new_turn(conversation, "10"))
    handle = RequestHandle(
        request_id="r-10", status_url="https://q/s", response_url="https://q/r", cancel_url=None
    )
    await store.turns.record_submission(submitted.id, handle)
    pending = await begin(store, new_turn(conversation, "11"))
    await engine.dispose()

    engine = create_engine(migrated_url)
    try:
        resumed = await sql_repositories(engine).turns.unfinished_turns()
    finally:
        await engine.dispose()

    assert [t.id for t in resumed] == [submitted.id, pending.id]
    assert resumed[0].state is TurnState.SUBMITTED
    assert resumed[0].handle == handle
    assert resumed[0].prompt == submitted.prompt
    assert resumed[1].state is TurnState.PENDING
    assert resumed[1].handle is None


@pytest.mark.parametrize("writers", [2, 4])
async def test_many_writers_on_separate_engines_are_never_locked_out(
    migrated_url: str, writers: int
) -> None:
    """Writers queue on the database's lock instead of failing ("database is locked" on
    SQLite without BEGIN IMMEDIATE)."""
    engines = [create_engine(migrated_url) for _ in range(writers)]
    # No retries: a lock failure must not be papered over by the retry loop.
    stores = [sql_repositories(e, retries=0) for e in engines]
    try:
        conversation = await stores[0].conversations.create_conversation(
            NewConversation(scope_id="1", owner_id="2")
        )

        async def work(s: Repositories, n: int) -> None:
            for i in range(10):
                turn = await begin(s, new_turn(conversation, f"{n}-{i}"))
                await s.turns.record_submission(turn.id, RequestHandle(request_id=f"r{n}-{i}"))
                await s.conversations.history(conversation.id, 0)
                await s.turns.complete_turn(turn.id, reply(), exchange(f"{n}-{i}"))
                await s.usage.try_consume([("user:1", 1000, 60)], now=utc(9))

        await asyncio.gather(*(work(s, n) for n, s in enumerate(stores)))
        history = await stores[0].conversations.history(conversation.id, 0)
        assert len(history) == 2 * 10 * writers
    finally:
        for e in engines:
            await e.dispose()
