"""What PostgreSQL refuses and SQLite takes, on both: scope keys longer than a snowflake
(``interaction:<id>``) in every column a scope lands in, and NUL bytes in any stored text."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import get_args

from sqlalchemy import String, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.chat.interaction_delivery import interaction_scope
from bot.domain.costs import SpendFilter
from bot.domain.models import (
    ChatMessage,
    Cost,
    Effort,
    GenerationSettings,
    ModelReply,
    NewConversation,
    NewTurn,
    Payer,
    RawJson,
    RequestHandle,
    Reservation,
    SettingsScope,
    Settlement,
    Thinking,
    TurnState,
)
from bot.domain.ports import SettingsChange, SubmittedWith
from bot.domain.privacy import guild_usage_key, user_usage_key
from bot.domain.stopping import MERGED
from bot.storage import Repositories
from bot.storage.tables import conversations, interactions, metadata, turn_costs, turns

from .conftest import decoded, history_messages

USER, GUILD = "1100000000000000001", "1000000000000000001"
# The longest interaction scope: a snowflake is at most 20 digits.
LONGEST_SCOPE = interaction_scope(2**64 - 1)
NUL, REPLACED = "\x00", "\ufffd"


def turn_in(scope: str, source: str, **fields: object) -> NewTurn:
    values: dict[str, object] = {
        "scope_id": scope,
        "source_id": source,
        "author_id": USER,
        "author_name": "Ada",
        "reply_channel_id": scope,
        "prompt": "hi",
        **fields,
    }
    return NewTurn(**values)  # type: ignore[arg-type]


async def test_an_interaction_scope_fits_every_column_a_scope_lands_in(store: Repositories) -> None:
    assert len(LONGEST_SCOPE) == 32
    start = await store.conversations.begin_turn(
        turn_in(LONGEST_SCOPE, "1300000000000000001"),
        conversation=NewConversation(scope_id=LONGEST_SCOPE, owner_id=USER, guild_id=GUILD),
    )
    turn = start.turn
    at = datetime.now(UTC)
    await store.turns.record_submission(
        turn.id,
        RequestHandle("req-1"),
        SubmittedWith(
            reservation=Reservation(turn.id, Payer(USER, GUILD, LONGEST_SCOPE), 10, 100, 0.5, at)
        ),
    )
    settled = Settlement(reported=Cost(100, 0.25, False))
    reply = ModelReply("answer", None, (), "req-1")
    await store.turns.complete_turn(turn.id, reply, [], settlement=settled)
    await store.settings.update_settings(
        SettingsScope.THREAD,
        LONGEST_SCOPE,
        SettingsChange(GenerationSettings(system_prompt="be brief")),
    )

    conversation = await store.conversations.conversation_for_scope(LONGEST_SCOPE)
    assert conversation is not None and conversation.scope_id == LONGEST_SCOPE
    assert (await store.turns.get_turn(turn.id)).reply_channel_id == LONGEST_SCOPE
    layers = await store.settings.settings_layers(
        thread_id=LONGEST_SCOPE, channel_id=None, guild_id=None
    )
    assert layers[SettingsScope.THREAD].system_prompt == "be brief"
    spent = await store.costs.spending(SpendFilter(scope_id=LONGEST_SCOPE), since=None, until=None)
    assert (spent.turns, spent.usd) == (1, 0.25)


async def test_no_stored_text_carries_a_nul(store: Repositories, engine: AsyncEngine) -> None:
    """A person's text, file names and warnings, the model's text and messages, a stop's
    author: every NUL becomes U+FFFD, on both databases alike (PostgreSQL refuses a NUL in
    text, and \\u0000 in jsonb). An escaped backslash before "u0000" is text, kept as it is."""
    scope = "1200000000000000001"
    start = await store.conversations.begin_turn(
        turn_in(
            scope,
            "1300000000000000001",
            author_name=f"A{NUL}da",
            prompt=f"look{NUL}here",
            image_urls=("https://cdn.example/a.png",),
            image_names=(f"a{NUL}.png",),
            warnings=(f"skipped{NUL}.exe",),
        ),
        conversation=NewConversation(scope_id=scope, owner_id=USER),
    )
    turn = start.turn
    messages = [
        ChatMessage("user", [{"type": "text", "text": f"look{NUL}here"}]),
        # Stored as the text it holds: a NUL escape, and a backslash followed by "u0000".
        ChatMessage("assistant", RawJson('"out\\u0000put \\\\u0000 kept"')),
    ]
    reply = ModelReply(f"out{NUL}put", f"why{NUL}", tuple(messages), "req-1")
    await store.turns.complete_turn(turn.id, reply, messages)

    stored = await store.turns.get_turn(turn.id)
    assert stored.author_name == f"A{REPLACED}da"
    assert stored.prompt == f"look{REPLACED}here"
    assert stored.image_names == (f"a{REPLACED}.png",)
    assert stored.warnings == (f"skipped{REPLACED}.exe",)
    assert (stored.output, stored.reasoning) == (f"out{REPLACED}put", f"why{REPLACED}")
    assert await history_messages(store, start.conversation.id, 0) == [
        ChatMessage("user", [{"type": "text", "text": f"look{REPLACED}here"}]),
        ChatMessage("assistant", f"out{REPLACED}put \\u0000 kept"),
    ]

    second = await store.conversations.begin_turn(turn_in(scope, "1300000000000000002"))
    assert await store.turns.stop_turn(second.turn.id, f"Bo{NUL}b")
    assert (await store.turns.get_turn(second.turn.id)).error == f"Bo{REPLACED}b"
    await store.settings.update_settings(
        SettingsScope.THREAD,
        scope,
        SettingsChange(GenerationSettings(system_prompt=f"be{NUL}brief")),
    )
    layers = await store.settings.settings_layers(thread_id=scope, channel_id=None, guild_id=None)
    assert layers[SettingsScope.THREAD].system_prompt == f"be{REPLACED}brief"

    async with engine.begin() as conn:
        # The rule holds for any statement, raw SQL included, not only for the columns of
        # today's tables.
        await conn.execute(
            text("UPDATE turns SET error = :error WHERE id = :id"),
            {"error": f"raw{NUL}sql", "id": turn.id},
        )
        if engine.dialect.name == "postgresql":
            # Every JSON value the bot stored is valid jsonb as well.
            for column, table in (("content", "messages"), ("image_names", "turns")):
                as_jsonb = f"SELECT count(CAST({column} AS jsonb)) FROM {table}"
                valid = await conn.scalar(text(as_jsonb))
                assert valid == 2
    assert (await store.turns.get_turn(turn.id)).error == f"raw{REPLACED}sql"
    history = decoded(await store.conversations.history(start.conversation.id, 0))
    assert json.dumps([m.content for m in history]).count("\\u0000") == 1  # the kept one


async def test_a_turn_a_burst_merged_away_reads_back_as_merged(store: Repositories) -> None:
    """A follow-up joining a burst stops the attempt in flight with the MERGED marker; when
    that stop raced the answer, the marker is read back from the store, and must still be
    recognised (or the person would be told their turn was stopped by someone)."""
    scope = "1200000000000000001"
    start = await store.conversations.begin_turn(
        turn_in(scope, "1300000000000000001"),
        conversation=NewConversation(scope_id=scope, owner_id=USER),
    )
    assert await store.turns.stop_turn(start.turn.id, MERGED)
    assert (await store.turns.get_turn(start.turn.id)).error == MERGED


def test_every_value_a_bounded_column_takes_fits_its_length() -> None:
    """The declared lengths against the longest value the bot writes into each column (a
    new state, scope or key that outgrew its column would fail on PostgreSQL alone)."""
    snowflake = str(2**64 - 1)
    longest = {
        "turns.state": [s.value for s in TurnState],
        "settings.scope": [s.value for s in SettingsScope],
        "settings.thinking": list(get_args(Thinking)),
        "settings.effort": list(get_args(Effort)),
        "usage_events.key": [user_usage_key(snowflake), guild_usage_key(snowflake)],
        "conversations.scope_id": [LONGEST_SCOPE, snowflake],
        "turns.reply_channel_id": [LONGEST_SCOPE, snowflake],
        "settings.scope_id": [LONGEST_SCOPE, snowflake],
        "turn_costs.scope_id": [LONGEST_SCOPE, snowflake],
        **{
            f"{column.table.name}.{column.name}": [snowflake]
            for column in (
                conversations.c.guild_id,
                conversations.c.parent_channel_id,
                conversations.c.owner_id,
                turns.c.source_id,
                turns.c.author_id,
                turns.c.status_message_id,
                turn_costs.c.user_id,
                turn_costs.c.guild_id,
                interactions.c.interaction_id,
                interactions.c.application_id,
                interactions.c.user_id,
            )
        },
    }
    for name, values in longest.items():
        table, column = name.split(".")
        declared = metadata.tables[table].c[column].type
        assert isinstance(declared, String) and declared.length is not None, name
        assert max(len(v) for v in values) <= declared.length, name
