from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.errors import StorageError
from bot.domain.models import Conversation, NewConversation
from bot.storage import Repositories

from .conftest import begin, exchange, history_messages, new_turn, reply

UNSET = datetime(2000, 1, 1, tzinfo=UTC)


async def test_create_then_look_up_by_scope_and_id(store: Repositories) -> None:
    assert await store.conversations.conversation_for_scope("1200000000000000009") is None
    before = datetime.now(UTC)

    created = await store.conversations.create_conversation(
        NewConversation(
            scope_id="1200000000000000009",
            owner_id="1100000000000000007",
            guild_id="1000000000000000001",
            parent_channel_id="1000000000000000002",
        )
    )

    assert created.scope_id == "1200000000000000009"
    assert created.owner_id == "1100000000000000007"
    assert created.guild_id == "1000000000000000001"
    assert created.parent_channel_id == "1000000000000000002"
    assert created.epoch == 0
    assert created.trim_notified_epoch is None
    assert created.created_at.tzinfo is UTC
    assert before - timedelta(seconds=1) <= created.created_at <= datetime.now(UTC)
    assert await store.conversations.conversation_for_scope("1200000000000000009") == created
    assert await store.conversations.get_conversation(created.id) == created
    assert await store.conversations.find_conversation(created.id) == created


async def test_dm_conversation_has_no_guild(store: Repositories) -> None:
    created = await store.conversations.create_conversation(
        NewConversation(scope_id="77", owner_id="78")
    )
    fetched = await store.conversations.get_conversation(created.id)
    assert (fetched.guild_id, fetched.parent_channel_id) == (None, None)


async def test_racing_creates_for_one_scope_all_get_the_same_conversation(
    store: Repositories, other_store: Repositories
) -> None:
    stores = [store, other_store] * 4
    results = await asyncio.gather(
        *(
            s.conversations.create_conversation(
                NewConversation(scope_id="555", owner_id=str(100 + i))
            )
            for i, s in enumerate(stores)
        )
    )
    # One conversation, made by the first; the others only touched its updated_at.
    assert len({replace(c, updated_at=UNSET) for c in results}) == 1
    assert await store.conversations.conversation_for_scope("555") in results


async def test_create_for_a_bound_scope_returns_the_existing_one(
    store: Repositories, conversation: Conversation
) -> None:
    again = await store.conversations.create_conversation(
        NewConversation(scope_id=conversation.scope_id, owner_id="someone else")
    )
    assert replace(again, updated_at=conversation.updated_at) == conversation
    assert again.updated_at >= conversation.updated_at


async def test_missing_conversation_is_a_storage_error(store: Repositories) -> None:
    with pytest.raises(StorageError, match="no conversation 4242"):
        await store.conversations.get_conversation(4242)
    assert await store.conversations.find_conversation(4242) is None
    with pytest.raises(StorageError, match="no conversation 4242"):
        await store.conversations.reset(4242)


async def test_reset_starts_a_new_epoch_and_hides_older_history(
    store: Repositories, conversation: Conversation
) -> None:
    turn = await begin(store, new_turn(conversation, "1"))
    await store.turns.complete_turn(turn.id, reply(), exchange("old"))

    assert await store.conversations.reset(conversation.id) == 1
    after = await store.conversations.get_conversation(conversation.id)
    assert after.epoch == 1
    assert after.updated_at >= conversation.updated_at
    assert await store.conversations.history(conversation.id, 1) == []
    # Old turns stay stored.
    assert await history_messages(store, conversation.id, 0) == exchange("old")
    assert (await store.turns.get_turn(turn.id)).output == "the answer"

    assert await store.conversations.reset(conversation.id) == 2
