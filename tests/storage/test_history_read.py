"""The history read of a turn's context stops at the context budget, and the speakers come
from their stored rows: both must give exactly what reading every turn of the epoch gives
(the request sent is built from them), through Retry, failures, resets and deletions."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.conversation import trim_history
from bot.domain.models import ChatMessage, Conversation, Speaker, Turn, TurnState
from bot.storage import Repositories, conversations, sql_repositories
from bot.storage.privacy import SqlPrivacy

from .conftest import new_turn, reply

AUTHORS = {
    "1100000000000000001": "Ada",
    "1100000000000000002": "Bob",
    "1100000000000000003": "Cy",
}
GUILD = "1000000000000000001"

# What the store derived before it kept speakers: every turn of the epoch in history (but
# the one being answered), in order of its first message, its author's first name.
REFERENCE = text(
    "SELECT t.author_id, t.author_name, MIN(m.position) AS first"
    " FROM messages m JOIN turns t ON t.id = m.turn_id"
    " WHERE m.conversation_id = :conversation AND m.epoch = :epoch"
    " AND t.state IN ('completed', 'delivered') AND t.id != :exclude"
    " GROUP BY t.id, t.author_id, t.author_name ORDER BY first"
)


async def reference_speakers(engine: AsyncEngine, turn: Turn) -> tuple[Speaker, ...]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            REFERENCE,
            {"conversation": turn.conversation_id, "epoch": turn.epoch, "exclude": turn.id},
        )
        found: dict[str, Speaker] = {}
        for author_id, author_name, _ in rows:
            found.setdefault(author_id, Speaker(author_id, author_name))
    found.setdefault(turn.author_id, Speaker(turn.author_id, turn.author_name))
    return tuple(found.values())


def sized_exchange(tag: str, size: int) -> list[ChatMessage]:
    return [
        ChatMessage(role="user", content=[{"type": "text", "text": f"question {tag}"}]),
        ChatMessage(role="assistant", content=f"answer {tag} " + "x" * size),
    ]


async def answered(
    store: Repositories, conversation: Conversation, source: str, author: str
) -> Turn:
    name = AUTHORS[author]
    start = await store.conversations.begin_turn(
        new_turn(conversation, source, author_id=author, author_name=name)
    )
    await store.turns.complete_turn(
        start.turn.id, reply(), sized_exchange(source, len(source) * 37)
    )
    await store.turns.record_delivery(start.turn.id, [source])
    return start.turn


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads of a few messages each: turns straddle the reads."""
    monkeypatch.setattr(conversations, "HISTORY_BATCH", 3)


@pytest.mark.usefixtures("small_batches")
async def test_the_read_history_is_what_the_whole_history_trims_to(
    engine: AsyncEngine, store: Repositories, conversation: Conversation
) -> None:
    shuffle = random.Random(7)
    authors = list(AUTHORS)
    for n in range(40):
        turn = await answered(store, conversation, f"13{n:017d}", shuffle.choice(authors))
        if n % 7 == 3:  # some turns leave the history
            await store.turns.finish_turn(turn.id, TurnState.FAILED, "gone")
    pending = await store.conversations.begin_turn(new_turn(conversation, "1399999999999999999"))
    whole = await store.conversations.history(conversation.id, 0)
    total = sum(entry.tokens for entry in whole)
    budgets = [0, 1, whole[-1].tokens, total // 3, total // 2, total - 1, total, total * 2]
    budgets += [shuffle.randrange(total) for _ in range(12)]
    for budget in budgets:
        cut = sql_repositories(engine, history_tokens=budget)
        context = await cut.conversations.turn_context(pending.turn)
        kept = trim_history(whole, budget)
        assert [e.message for e in context.history] == list(kept.messages), budget
        # What the request is built from: the domain trims what was read the same way.
        assert trim_history(context.history, budget).messages == kept.messages
        assert context.omitted_turns == (1 if kept.dropped_turns else 0), budget
        assert context.speakers == await reference_speakers(engine, pending.turn)


async def test_the_speakers_stay_those_of_the_history_through_retry_failure_and_deletion(
    engine: AsyncEngine, store: Repositories, conversation: Conversation
) -> None:
    ada, bob, cy = AUTHORS
    privacy = SqlPrivacy(store.db)
    shuffle = random.Random(11)
    turns: list[Turn] = []
    source = 0

    async def check() -> None:
        probe = await store.conversations.begin_turn(
            new_turn(conversation, f"14{source:017d}9", author_id=cy, author_name="Cy")
        )
        expected = await reference_speakers(engine, probe.turn)
        assert probe.context.speakers == expected
        # The read-only path (a resumed turn) derives the same without storing anything.
        assert (await store.conversations.turn_context(probe.turn)).speakers == expected
        await store.turns.finish_turn(probe.turn.id, TurnState.FAILED, "probe")

    for step in range(60):
        source += 1
        action = shuffle.random()
        if action < 0.55 or not turns:
            turns.append(
                await answered(store, conversation, f"14{source:017d}0", shuffle.choice([ada, bob]))
            )
        elif action < 0.75:  # Retry: a new attempt (maybe by someone else) supersedes
            old = shuffle.choice(turns)
            author = shuffle.choice([ada, bob])
            start = await store.conversations.begin_turn(
                new_turn(
                    conversation,
                    old.source_id,
                    attempt=old.attempt + 1 + step,
                    author_id=author,
                    author_name=AUTHORS[author],
                    supersedes=old.id,
                ),
            )
            await store.turns.complete_turn(start.turn.id, reply(), sized_exchange(str(step), 9))
            await store.turns.record_delivery(start.turn.id, [start.turn.source_id])
            turns.remove(old)
            turns.append(start.turn)
        elif action < 0.85:
            await store.turns.finish_turn(shuffle.choice(turns).id, TurnState.FAILED, "x")
        elif action < 0.95:
            await privacy.forget(shuffle.choice([ada, bob]), GUILD)
            turns = [t for t in turns if await _exists(engine, t.id)]
        else:
            await store.conversations.reset(conversation.id)
            conversation = await store.conversations.get_conversation(conversation.id)
            turns = []
        await check()


async def _exists(engine: AsyncEngine, turn_id: int) -> bool:
    async with engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM turns WHERE id = :id"), {"id": turn_id}
        )
    return bool(found)


async def test_a_forgotten_persons_speaker_row_goes_with_their_turns(
    engine: AsyncEngine, store: Repositories, conversation: Conversation
) -> None:
    ada, bob, _ = AUTHORS
    await answered(store, conversation, "1500000000000000001", ada)
    await answered(store, conversation, "1500000000000000002", bob)
    await answered(store, conversation, "1500000000000000003", ada)
    await SqlPrivacy(store.db).forget(bob, GUILD)
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT author_id FROM speakers ORDER BY position"))
        assert list(rows.scalars()) == [ada]
    start = await store.conversations.begin_turn(new_turn(conversation, "1500000000000000004"))
    assert start.context.speakers == (Speaker(ada, "Ada"),)
