from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.conversation import estimate_tokens
from bot.domain.errors import DuplicateMessage, StorageError
from bot.domain.models import (
    ChatMessage,
    Conversation,
    GenerationSettings,
    JsonValue,
    NewConversation,
    NewTurn,
    RawJson,
    RequestHandle,
    SettingsScope,
    TurnState,
)
from bot.domain.ports import SettingsChange, SubmittedWith
from bot.storage import Repositories, sql_repositories
from bot.storage.rows import HISTORY, HISTORY_NEWEST, SPEAKERS

from .conftest import begin, decoded, exchange, history_messages, new_turn, reply

HANDLE = RequestHandle(
    request_id="764cabcf-b745-4b3e-ae38-1200304cf45b",
    status_url="https://queue.fal.run/fal-ai/bytedance/requests/764c/status",
    response_url="https://queue.fal.run/fal-ai/bytedance/requests/764c",
    cancel_url="https://queue.fal.run/fal-ai/bytedance/requests/764c/cancel",
)


async def test_begin_turn_round_trips_every_field(
    store: Repositories, conversation: Conversation
) -> None:
    new = new_turn(
        conversation,
        "1300000000000000001",
        author_name="Ada Lovelace 🧮",
        prompt="what is in these?\n```py\nprint('x')\n```",
        image_urls=("https://v3.fal.media/a.png", "https://v3.fal.media/b.webp"),
        video_urls=("https://v3.fal.media/c.mp4",),
        warnings=("left out notes.pdf: unsupported type",),
        image_names=("a.png", "../b.webp"),
        video_names=("c.mp4",),
    )

    start = await store.conversations.begin_turn(new)
    turn = start.turn

    assert turn.conversation_id == conversation.id
    assert turn.epoch == 0
    assert turn.source_id == new.source_id
    assert turn.author_id == new.author_id
    assert turn.author_name == "Ada Lovelace 🧮"
    assert turn.reply_channel_id == new.reply_channel_id
    assert turn.prompt == new.prompt
    assert turn.image_urls == new.image_urls
    assert turn.video_urls == new.video_urls
    assert turn.warnings == new.warnings
    assert (turn.image_names, turn.video_names) == (("a.png", "../b.webp"), ("c.mp4",))
    assert turn.state is TurnState.PENDING
    assert turn.handle is None
    assert (turn.output, turn.reasoning, turn.error) == (None, None, None)
    assert turn.reply_message_ids == ()
    assert turn.created_at.tzinfo is UTC
    assert turn.created_at == turn.updated_at
    assert await store.turns.get_turn(turn.id) == turn
    assert await store.turns.find_turn(turn.id) == turn
    assert await store.turns.find_turn(4242) is None
    assert await store.turns.turn_for_source(new.source_id) == turn
    assert await store.turns.turn_for_source("999") is None
    assert start.conversation.id == conversation.id
    assert start.conversation.updated_at == turn.created_at


async def test_record_submission_stores_the_handle(
    store: Repositories, conversation: Conversation
) -> None:
    turn = await begin(store, new_turn(conversation, "1"))
    await store.turns.record_submission(turn.id, HANDLE)
    stored = await store.turns.get_turn(turn.id)
    assert stored.state is TurnState.SUBMITTED
    assert stored.handle == HANDLE
    assert stored.updated_at >= turn.updated_at

    bare = await begin(store, new_turn(conversation, "2"))
    await store.turns.record_submission(bare.id, RequestHandle(request_id="only-an-id"))
    assert (await store.turns.get_turn(bare.id)).handle == RequestHandle(request_id="only-an-id")


async def test_a_stopped_turn_stays_stopped_when_its_submission_lands(
    store: Repositories, conversation: Conversation
) -> None:
    turn = await begin(store, new_turn(conversation, "1"))
    await store.turns.finish_turn(turn.id, TurnState.STOPPED)
    await store.turns.record_submission(turn.id, HANDLE)
    stored = await store.turns.get_turn(turn.id)
    assert stored.state is TurnState.STOPPED
    assert stored.handle == HANDLE


async def test_complete_turn_appends_messages_and_keeps_output_for_display(
    store: Repositories, conversation: Conversation
) -> None:
    turn = await begin(store, new_turn(conversation, "1"))
    await store.turns.record_submission(turn.id, HANDLE)
    messages = exchange("one")

    await store.turns.complete_turn(turn.id, reply("the output"), messages)

    stored = await store.turns.get_turn(turn.id)
    assert stored.state is TurnState.COMPLETED
    assert stored.output == "the output"
    assert stored.reasoning == "because"
    assert stored.handle == HANDLE
    history = await store.conversations.history(conversation.id, 0)
    assert [(e.turn_id, e.position) for e in history] == [(turn.id, 0), (turn.id, 1)]
    assert decoded(history) == messages
    # The token estimates were stored with the messages.
    assert [e.tokens for e in history] == [estimate_tokens(m.content) for m in messages]


async def test_message_content_comes_back_exactly(
    store: Repositories, conversation: Conversation
) -> None:
    content: JsonValue = {
        "z_last_key_first": 1,
        "a": [None, True, False, 0, -1, 2**53, 0.1, 1e-300, 'ünïcødé ✓ \u0000 \\ "'],
        "nested": {"type": "image_url", "image_url": {"url": "https://x/y?a=1&b=2"}},
        "empty": {},
    }
    messages = [
        ChatMessage(role="user", content=content),
        ChatMessage(role="assistant", content=None),
        ChatMessage(role="assistant", content="plain text"),
        ChatMessage(role="tool", content=[]),
    ]
    turn = await begin(store, new_turn(conversation, "1"))
    await store.turns.complete_turn(turn.id, reply(), messages)

    history = await store.conversations.history(conversation.id, 0)

    # Exactly, but for the NUL, which no stored text carries (PostgreSQL refuses it): it
    # comes back as U+FFFD (bot/storage/types.py).
    stored = json.loads(json.dumps(content).replace("\\u0000", "\\ufffd"))
    assert decoded(history) == [ChatMessage("user", stored), *messages[1:]]
    # Read back as the JSON text stored, compact, UTF-8 and in key order: sent on as it is.
    first = history[0].message.content
    assert isinstance(first, RawJson)
    assert first.text == json.dumps(stored, ensure_ascii=False, separators=(",", ":"))
    assert [e.message.content for e in history[1:]] == [
        RawJson("null"),
        RawJson('"plain text"'),
        RawJson("[]"),
    ]


async def test_history_is_ordered_across_turns(
    store: Repositories, conversation: Conversation
) -> None:
    expected: list[ChatMessage] = []
    for i in range(5):
        turn = await begin(store, new_turn(conversation, str(i)))
        await store.turns.complete_turn(turn.id, reply(), exchange(str(i)))
        await store.turns.record_delivery(turn.id, [f"90{i}"])
        expected += exchange(str(i))

    history = await store.conversations.history(conversation.id, 0)

    assert decoded(history) == expected
    assert [e.position for e in history] == list(range(10))


async def test_history_holds_only_completed_and_delivered_turns(
    store: Repositories, conversation: Conversation
) -> None:
    delivered = await begin(store, new_turn(conversation, "1"))
    await store.turns.complete_turn(delivered.id, reply(), exchange("delivered"))
    await store.turns.record_delivery(delivered.id, ["901", "902"])

    superseded = await begin(store, new_turn(conversation, "2"))
    await store.turns.complete_turn(superseded.id, reply(), exchange("superseded"))
    await store.turns.finish_turn(superseded.id, TurnState.SUPERSEDED)

    completed = await begin(store, new_turn(conversation, "3"))
    await store.turns.complete_turn(completed.id, reply(), exchange("completed"))

    await begin(store, new_turn(conversation, "4"))  # pending
    failed = await begin(store, new_turn(conversation, "5"))
    await store.turns.finish_turn(failed.id, TurnState.FAILED, "model timed out")

    history = await store.conversations.history(conversation.id, 0)

    assert decoded(history) == exchange("delivered") + exchange("completed")
    assert {e.turn_id for e in history} == {delivered.id, completed.id}


async def test_history_is_per_conversation_and_epoch(
    store: Repositories, conversation: Conversation
) -> None:
    other = await store.conversations.create_conversation(
        NewConversation(scope_id="2", owner_id="3")
    )
    t_other = await begin(store, new_turn(other, "o1"))
    await store.turns.complete_turn(t_other.id, reply(), exchange("other"))

    t0 = await begin(store, new_turn(conversation, "1"))
    await store.turns.complete_turn(t0.id, reply(), exchange("epoch 0"))
    assert await store.conversations.reset(conversation.id) == 1
    t1 = await begin(store, new_turn(conversation, "2"))
    await store.turns.complete_turn(t1.id, reply(), exchange("epoch 1"))

    assert await history_messages(store, conversation.id, 0) == exchange("epoch 0")
    assert await history_messages(store, conversation.id, 1) == exchange("epoch 1")
    assert await history_messages(store, other.id, 0) == exchange("other")


async def test_a_turn_of_an_old_epoch_completing_after_reset_stays_in_its_epoch(
    store: Repositories, conversation: Conversation
) -> None:
    old = await begin(store, new_turn(conversation, "1"))
    epoch = await store.conversations.reset(conversation.id)
    new = await begin(store, new_turn(conversation, "2"))
    await store.turns.complete_turn(new.id, reply(), exchange("new"))
    await store.turns.complete_turn(old.id, reply(), exchange("old"))

    assert await history_messages(store, conversation.id, epoch) == exchange("new")
    assert await history_messages(store, conversation.id, 0) == exchange("old")


async def test_complete_turn_refuses_a_finished_or_missing_turn(
    store: Repositories, conversation: Conversation
) -> None:
    turn = await begin(store, new_turn(conversation, "1"))
    await store.turns.finish_turn(turn.id, TurnState.STOPPED)
    with pytest.raises(StorageError, match="is stopped"):
        await store.turns.complete_turn(turn.id, reply(), exchange("late"))
    assert await store.conversations.history(conversation.id, 0) == []
    assert (await store.turns.get_turn(turn.id)).state is TurnState.STOPPED

    done = await begin(store, new_turn(conversation, "2"))
    await store.turns.complete_turn(done.id, reply(), exchange("once"))
    with pytest.raises(StorageError, match="is completed"):
        await store.turns.complete_turn(done.id, reply(), exchange("twice"))
    assert await history_messages(store, conversation.id, 0) == exchange("once")

    with pytest.raises(StorageError, match="no turn 4242"):
        await store.turns.complete_turn(4242, reply(), exchange("x"))


async def test_complete_turn_with_no_new_messages(
    store: Repositories, conversation: Conversation
) -> None:
    turn = await begin(store, new_turn(conversation, "1"))
    await store.turns.complete_turn(turn.id, reply(""), [])
    assert (await store.turns.get_turn(turn.id)).state is TurnState.COMPLETED
    assert await store.conversations.history(conversation.id, 0) == []


async def test_record_delivery(store: Repositories, conversation: Conversation) -> None:
    turn = await begin(store, new_turn(conversation, "1"))
    await store.turns.complete_turn(turn.id, reply(), exchange("1"))
    await store.turns.record_delivery(turn.id, ["1400000000000000001", "1400000000000000002"])
    stored = await store.turns.get_turn(turn.id)
    assert stored.state is TurnState.DELIVERED
    assert stored.reply_message_ids == ("1400000000000000001", "1400000000000000002")


async def test_delivering_a_failure_notice_keeps_the_turn_failed(
    store: Repositories, conversation: Conversation
) -> None:
    turn = await begin(store, new_turn(conversation, "1"))
    await store.turns.finish_turn(turn.id, TurnState.FAILED, "fal is unavailable (request r-1)")
    await store.turns.record_delivery(turn.id, ["1400000000000000009"])
    stored = await store.turns.get_turn(turn.id)
    assert stored.state is TurnState.FAILED
    assert stored.error == "fal is unavailable (request r-1)"
    assert stored.reply_message_ids == ("1400000000000000009",)


async def test_finish_turn(store: Repositories, conversation: Conversation) -> None:
    turn = await begin(store, new_turn(conversation, "1"))
    await store.turns.finish_turn(turn.id, TurnState.FAILED, "the model refused image 2")
    stored = await store.turns.get_turn(turn.id)
    assert (stored.state, stored.error) == (TurnState.FAILED, "the model refused image 2")

    with pytest.raises(ValueError, match="finish_turn takes"):
        await store.turns.finish_turn(turn.id, TurnState.DELIVERED)
    with pytest.raises(StorageError, match="no turn 4242"):
        await store.turns.finish_turn(4242, TurnState.FAILED)
    with pytest.raises(StorageError, match="no turn 4242"):
        await store.turns.record_delivery(4242, [])
    with pytest.raises(StorageError, match="no turn 4242"):
        await store.turns.record_submission(4242, HANDLE)
    with pytest.raises(StorageError, match="no turn 4242"):
        await store.turns.get_turn(4242)


async def test_unfinished_turns_are_pending_submitted_and_completed_oldest_first(
    store: Repositories, conversation: Conversation
) -> None:
    other = await store.conversations.create_conversation(
        NewConversation(scope_id="2", owner_id="3")
    )
    pending = await begin(store, new_turn(conversation, "1"))
    submitted = await begin(store, new_turn(other, "2"))
    await store.turns.record_submission(submitted.id, HANDLE)
    completed = await begin(store, new_turn(conversation, "3"))
    await store.turns.complete_turn(completed.id, reply(), exchange("3"))
    delivered = await begin(store, new_turn(conversation, "4"))
    await store.turns.complete_turn(delivered.id, reply(), exchange("4"))
    await store.turns.record_delivery(delivered.id, ["9"])
    for i, state in enumerate((TurnState.FAILED, TurnState.STOPPED, TurnState.SUPERSEDED)):
        finished = await begin(store, new_turn(other, f"f{i}"))
        await store.turns.finish_turn(finished.id, state)
    later_pending = await begin(store, new_turn(other, "5"))

    unfinished = await store.turns.unfinished_turns()

    assert [t.id for t in unfinished] == [pending.id, submitted.id, completed.id, later_pending.id]
    assert unfinished[1].handle == HANDLE
    assert unfinished[2].state is TurnState.COMPLETED


async def test_begin_turn_for_a_missing_conversation_is_not_a_duplicate(
    store: Repositories, conversation: Conversation
) -> None:
    missing = Conversation(
        id=conversation.id + 1000,
        scope_id="x",
        guild_id=None,
        parent_channel_id=None,
        owner_id="y",
        epoch=0,
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
    )
    with pytest.raises(StorageError) as raised:
        await begin(store, new_turn(missing, "1"))
    assert not isinstance(raised.value, DuplicateMessage)
    assert await store.turns.turn_for_source("1") is None


async def test_duplicate_source_is_refused_and_the_first_turn_kept(
    store: Repositories, conversation: Conversation
) -> None:
    first = await begin(store, new_turn(conversation, "1"))
    with pytest.raises(DuplicateMessage):
        await begin(store, new_turn(conversation, "1", prompt="a different prompt"))
    assert await store.turns.turn_for_source("1") == first


async def test_the_schema_accepts_every_turn_state_and_nothing_else(
    engine: AsyncEngine, store: Repositories, conversation: Conversation
) -> None:
    turn = await begin(store, new_turn(conversation, "1"))
    for state in TurnState:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE turns SET state = :state WHERE id = :id"),
                {"state": state.value, "id": turn.id},
            )
        assert (await store.turns.get_turn(turn.id)).state is state
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE turns SET state = 'bogus' WHERE id = :id"), {"id": turn.id}
            )


async def test_history_is_one_index_range_scan_without_a_sort(engine: AsyncEngine) -> None:
    query = HISTORY.params(conversation_id=1, epoch=0, exclude=0, since=0)
    compiled = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            explained = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")
            plan: list[str] = list(explained.scalars(3))
            assert plan[0].startswith("SEARCH messages USING INDEX")
            assert plan[0].endswith("(conversation_id=? AND epoch=? AND position>?)")
            assert plan[1] == "SEARCH turns USING INTEGER PRIMARY KEY (rowid=?)"
        else:
            # The tables are nearly empty: make the planner show what it can use.
            await conn.exec_driver_sql("SET enable_seqscan = off")
            plan = list((await conn.exec_driver_sql(f"EXPLAIN {compiled}")).scalars())
            assert any(
                "Index Scan using uq_messages_conversation_id_epoch_position" in line
                or "Index Scan using ix_messages_history_turns" in line
                for line in plan
            )
        assert not any("TEMP B-TREE" in line or "Sort" in line for line in plan), plan


async def test_the_history_is_read_newest_first_by_an_index_without_a_sort(
    engine: AsyncEngine,
) -> None:
    """The budget read: a backward range scan of an index, joined by primary key, with no
    sort or grouping, so that it stops where its LIMIT (the budget) does."""
    query = HISTORY_NEWEST.params(conversation_id=1, epoch=0, exclude=0, before=9, limit=5)
    compiled = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            explained = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")
            plan: list[str] = list(explained.scalars(3))
            assert plan[0].startswith("SEARCH messages USING INDEX")
            assert plan[0].endswith("(conversation_id=? AND epoch=? AND position<?)")
            assert plan[1] == "SEARCH turns USING INTEGER PRIMARY KEY (rowid=?)"
            assert len(plan) == 2, plan
        else:
            await conn.exec_driver_sql("SET enable_seqscan = off")
            plan = list((await conn.exec_driver_sql(f"EXPLAIN {compiled}")).scalars())
            assert any("Index Scan Backward using" in line for line in plan), plan
        assert not any("TEMP B-TREE" in line or "Sort" in line for line in plan), plan


async def test_the_speakers_are_read_by_their_key_not_from_the_turns(engine: AsyncEngine) -> None:
    query = SPEAKERS.params(conversation_id=1, epoch=0, exclude=0)
    compiled = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    if engine.dialect.name != "sqlite":
        pytest.skip("the plan checked is SQLite's")
    async with engine.connect() as conn:
        explained = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")
        plan: list[str] = list(explained.scalars(3))
    # By the primary key, each speaker's turn by its own (only the epoch's few speakers
    # are sorted).
    assert plan[0] == (
        "SEARCH speakers USING INDEX sqlite_autoindex_speakers_1 (conversation_id=? AND epoch=?)"
    )
    assert plan[1].startswith("SEARCH turns USING INTEGER PRIMARY KEY (rowid=?)"), plan


async def test_speakers_are_the_authors_in_history_then_the_new_one(
    store: Repositories, conversation: Conversation
) -> None:
    ada, bob, cy = "1100000000000000001", "1100000000000000002", "1100000000000000003"

    async def answered(source: str, author: str, name: str) -> list[tuple[str, str]]:
        start = await store.conversations.begin_turn(
            new_turn(conversation, source, author_id=author, author_name=name)
        )
        await store.turns.complete_turn(start.turn.id, reply(), exchange(source))
        return [(s.author_id, s.author_name) for s in start.context.speakers]

    assert await answered("1", ada, "Ada") == [(ada, "Ada")]
    assert await answered("2", ada, "Ada L.") == [(ada, "Ada")]
    assert await answered("3", bob, "Bob") == [(ada, "Ada"), (bob, "Bob")]
    # A turn not in history (failed) does not count as having spoken.
    failed = await begin(store, new_turn(conversation, "4", author_id=cy, author_name="Cy"))
    await store.turns.finish_turn(failed.id, TurnState.FAILED, "no")
    assert await answered("5", bob, "Bob") == [(ada, "Ada"), (bob, "Bob")]
    assert await answered("6", ada, "Ada") == [(ada, "Ada"), (bob, "Bob")]
    # A new epoch starts with no speakers but the new one.
    await store.conversations.reset(conversation.id)
    assert await answered("7", bob, "Bob") == [(bob, "Bob")]


async def test_retry_attempts_share_a_source(
    store: Repositories, conversation: Conversation
) -> None:
    first = await begin(store, new_turn(conversation, "1300000000000000201"))
    with pytest.raises(DuplicateMessage):
        await begin(store, new_turn(conversation, "1300000000000000201"))
    retry = await begin(store, new_turn(conversation, "1300000000000000201", attempt=1))
    assert (first.attempt, retry.attempt) == (0, 1)
    latest = await store.turns.turn_for_source("1300000000000000201")
    assert latest is not None and latest.id == retry.id
    with pytest.raises(DuplicateMessage):
        await begin(store, new_turn(conversation, "1300000000000000201", attempt=1))


async def test_status_message_and_reply_parts(
    store: Repositories, conversation: Conversation
) -> None:
    turn = await begin(store, new_turn(conversation, "1300000000000000301"))
    await store.turns.record_status_message(turn.id, "1400000000000000001")
    await store.turns.record_reply_parts(turn.id, ["1400000000000000001", "1400000000000000002"])
    again = await store.turns.get_turn(turn.id)
    assert again.status_message_id == "1400000000000000001"
    assert again.reply_message_ids == ("1400000000000000001", "1400000000000000002")
    assert again.state is TurnState.PENDING


async def test_latest_turn_skips_superseded_and_old_epochs(
    store: Repositories, conversation: Conversation
) -> None:
    assert await store.turns.latest_turn(conversation.scope_id) is None
    assert await store.turns.latest_turn("1200000000000000999") is None  # no conversation
    a = await begin(store, new_turn(conversation, "1300000000000000401"))
    b = await begin(store, new_turn(conversation, "1300000000000000402"))
    other = await store.conversations.create_conversation(
        NewConversation(scope_id="2", owner_id="3")
    )
    theirs = await begin(store, new_turn(other, "1300000000000000403"))  # newer, not its
    latest = await store.turns.latest_turn(conversation.scope_id)
    assert latest is not None and latest.id == b.id
    await store.turns.finish_turn(b.id, TurnState.SUPERSEDED)
    latest = await store.turns.latest_turn(conversation.scope_id)
    assert latest is not None and latest.id == a.id
    await store.conversations.reset(conversation.id)
    assert await store.turns.latest_turn(conversation.scope_id) is None
    assert await store.turns.latest_turn("2") == theirs  # each scope its own conversation


async def test_recent_conversations_name_their_newest_turn(
    store: Repositories, conversation: Conversation
) -> None:
    from datetime import datetime, timedelta

    before = datetime.now(UTC) - timedelta(seconds=5)
    [(found, newest)] = await store.conversations.recent_conversations(before)
    assert found.id == conversation.id and newest is None
    await begin(store, new_turn(conversation, "1300000000000000501"))
    await begin(store, new_turn(conversation, "1300000000000000502"))
    [(_, newest)] = await store.conversations.recent_conversations(before)
    assert newest == "1300000000000000502"
    assert (
        await store.conversations.recent_conversations(datetime.now(UTC) + timedelta(seconds=5))
        == []
    )


async def test_begin_turn_reads_history_layers_and_speakers_in_its_epoch(
    store: Repositories, conversation: Conversation
) -> None:
    first = await begin(store, new_turn(conversation, "1300000000000000601"))
    await store.turns.complete_turn(
        first.id, reply(), [ChatMessage("user", "q"), ChatMessage("assistant", "a")]
    )
    await store.settings.update_settings(
        SettingsScope.SERVER, "1000000000000000001", SettingsChange(GenerationSettings(top_p=0.5))
    )
    await store.settings.update_settings(
        SettingsScope.THREAD,
        conversation.scope_id,
        SettingsChange(GenerationSettings(effort="low")),
    )
    await store.settings.update_settings(
        SettingsScope.THREAD, "elsewhere", SettingsChange(GenerationSettings(effort="high"))
    )

    start = await store.conversations.begin_turn(new_turn(conversation, "1300000000000000602"))

    assert start.context.history == tuple(await store.conversations.history(conversation.id, 0))
    assert [e.message.content for e in start.context.history] == [RawJson('"q"'), RawJson('"a"')]
    assert start.context.layers == {
        SettingsScope.SERVER: GenerationSettings(top_p=0.5),
        SettingsScope.THREAD: GenerationSettings(effort="low"),
    }
    # A resumed turn reads the same, without itself (here: once it is answered).
    await store.turns.complete_turn(start.turn.id, reply(), exchange("second"))
    resumed = await store.conversations.turn_context(start.turn)
    assert resumed == start.context
    assert len(await store.conversations.history(conversation.id, 0)) == 4


async def test_begin_turn_binds_an_unbound_scope_once(store: Repositories) -> None:
    bind = NewConversation(scope_id="77", owner_id="78", guild_id="79", parent_channel_id="80")
    unbound = NewTurn(
        scope_id="77",
        source_id="1",
        author_id="78",
        author_name="Ada",
        reply_channel_id="77",
        prompt="hi",
    )
    with pytest.raises(StorageError, match="no conversation for scope 77"):
        await store.conversations.begin_turn(unbound)
    assert await store.conversations.conversation_for_scope("77") is None

    first = await store.conversations.begin_turn(unbound, conversation=bind)
    assert (first.conversation.scope_id, first.conversation.owner_id) == ("77", "78")
    assert (first.conversation.guild_id, first.conversation.parent_channel_id) == ("79", "80")
    assert first.turn.conversation_id == first.conversation.id
    assert await store.conversations.conversation_for_scope("77") == first.conversation

    # Bound already (another message raced it there): the first conversation is kept.
    again = await store.conversations.begin_turn(
        replace(unbound, source_id="2"), conversation=replace(bind, owner_id="someone else")
    )
    assert again.conversation.id == first.conversation.id
    assert again.conversation.owner_id == "78"
    assert again.conversation.created_at == first.conversation.created_at


async def test_begin_turn_takes_the_epoch_current_when_it_runs(
    store: Repositories, conversation: Conversation
) -> None:
    await store.conversations.reset(conversation.id)
    start = await store.conversations.begin_turn(new_turn(conversation, "1"))
    assert start.conversation.epoch == start.turn.epoch == 1


async def test_record_submission_can_mark_the_trim_notice_given(
    store: Repositories, conversation: Conversation
) -> None:
    turn = await begin(store, new_turn(conversation, "1"))
    await store.turns.record_submission(turn.id, HANDLE)
    assert (await store.conversations.get_conversation(conversation.id)).trim_notified_epoch is None
    other = await begin(store, new_turn(conversation, "2"))
    await store.turns.record_submission(other.id, HANDLE, SubmittedWith(trim_notified_epoch=0))
    assert (await store.conversations.get_conversation(conversation.id)).trim_notified_epoch == 0
    with pytest.raises(StorageError, match="no turn 4242"):
        await store.turns.record_submission(4242, HANDLE, SubmittedWith(trim_notified_epoch=1))
    assert (await store.conversations.get_conversation(conversation.id)).trim_notified_epoch == 0


async def test_stop_turn_only_stops_a_turn_still_running(
    store: Repositories, conversation: Conversation
) -> None:
    running = await begin(store, new_turn(conversation, "1300000000000000701"))
    assert await store.turns.stop_turn(running.id, "Ada")
    stopped = await store.turns.get_turn(running.id)
    assert (stopped.state, stopped.error) == (TurnState.STOPPED, "Ada")
    done = await begin(store, new_turn(conversation, "1300000000000000702"))
    await store.turns.complete_turn(
        done.id, reply(), [ChatMessage("user", "q"), ChatMessage("assistant", "a")]
    )
    assert not await store.turns.stop_turn(done.id, "Ada")  # answered meanwhile: stays in history
    assert (await store.turns.get_turn(done.id)).state is TurnState.COMPLETED


async def test_a_burst_starting_over_stores_its_prompt_once(
    store: Repositories, conversation: Conversation, engine: AsyncEngine
) -> None:
    """Each attempt of a burst holds every earlier message: the attempts it supersedes give
    up their prompt, so the stored text grows with the burst, not with its square."""
    message = "ten thousand characters of a pasted log " * 250
    prompt = message
    turn = await begin(store, new_turn(conversation, "1300000000000000900", prompt=prompt))
    for n in range(1, 10):
        prompt += "\n" + message
        turn = await begin(
            store,
            new_turn(conversation, f"13000000000000009{n:02d}", prompt=prompt, supersedes=turn.id),
        )
    async with engine.connect() as connection:
        stored = (await connection.execute(text("SELECT SUM(LENGTH(prompt)) FROM turns"))).scalar()
    assert stored == len(prompt)  # not the 55 messages' worth of ten attempts
    assert (await store.turns.get_turn(turn.id)).prompt == prompt
    assert (await store.turns.latest_turn(conversation.scope_id)) == turn


async def test_a_new_attempt_supersedes_the_old_one_atomically(
    store: Repositories, conversation: Conversation
) -> None:
    old = await begin(store, new_turn(conversation, "1300000000000000801"))
    new = await begin(
        store, new_turn(conversation, "1300000000000000801", attempt=1, supersedes=old.id)
    )
    assert (await store.turns.get_turn(old.id)).state is TurnState.SUPERSEDED
    assert new.attempt == 1
    # a failing insert (a duplicate attempt) leaves the turn it meant to supersede alone
    with pytest.raises(DuplicateMessage):
        await begin(
            store, new_turn(conversation, "1300000000000000801", attempt=1, supersedes=new.id)
        )
    assert (await store.turns.get_turn(new.id)).state is TurnState.PENDING


async def test_a_turns_context_reads_only_the_history_a_request_can_hold(
    engine: AsyncEngine, conversation: Conversation
) -> None:
    ada, bob = "1100000000000000001", "1100000000000000002"
    whole = sql_repositories(engine)
    for n in range(5):
        start = await whole.conversations.begin_turn(
            new_turn(conversation, f"13000000000000009{n}")
        )
        await whole.turns.complete_turn(start.turn.id, reply(), exchange(f"{n}"))
    stored = await whole.conversations.history(conversation.id, 0)
    per_turn = [a.tokens + b.tokens for a, b in zip(stored[::2], stored[1::2], strict=True)]
    budget = per_turn[-1] + per_turn[-2] + per_turn[-3] - 1  # two turns fit, three do not

    cut = sql_repositories(engine, history_tokens=budget)
    start = await cut.conversations.begin_turn(
        new_turn(conversation, "1300000000000000990", author_id=bob, author_name="Bob")
    )
    context = start.context
    assert [e.message for e in context.history] == [e.message for e in stored[-4:]]
    # Older turns were left out; the read stopped at the first (it does not count them).
    assert context.omitted_turns == 1
    # The speakers are those of the whole history, the omitted turns' authors included.
    assert [s.author_id for s in context.speakers] == [ada, bob]
    # The same for a resumed turn; and a budget too small for any turn reads none.
    assert await cut.conversations.turn_context(start.turn) == context
    nothing = sql_repositories(engine, history_tokens=per_turn[-1] - 1)
    context = await nothing.conversations.turn_context(start.turn)
    assert (context.history, context.omitted_turns) == ((), 1)
    assert [s.author_id for s in context.speakers] == [ada, bob]
