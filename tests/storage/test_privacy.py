"""People's data in the store: the retention sweep (also two processes at once), export,
forget and purge, on SQLite and PostgreSQL. Whatever is not selected must stay untouched."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from bot.domain.models import (
    Conversation,
    GenerationSettings,
    NewConversation,
    SettingsScope,
    Turn,
    TurnState,
)
from bot.domain.ports import SettingsChange
from bot.domain.privacy import Removed, export_files
from bot.storage import Repositories
from bot.storage.privacy import SqlPrivacy
from bot.storage.tables import conversations, messages, turns, usage_events

from .conftest import begin, exchange, new_turn, reply

GUILD_A, GUILD_B = "1000000000000000001", "1000000000000000002"
ADA, BOB = "1100000000000000001", "1100000000000000002"
NOW = datetime.now(UTC)
LONG_AGO = NOW - timedelta(days=40)
CUT = NOW - timedelta(days=30)

_scopes = iter(range(1200000000000000001, 1300000000000000000))
_sources = iter(range(1400000000000000001, 1500000000000000000))


async def conversation_in(
    store: Repositories, guild: str | None, owner: str = ADA, parent: str = "1000000000000000099"
) -> Conversation:
    return await store.conversations.create_conversation(
        NewConversation(
            scope_id=str(next(_scopes)),
            owner_id=owner,
            guild_id=guild,
            parent_channel_id=parent if guild else None,
        )
    )


async def answered(store: Repositories, conversation: Conversation, author: str = ADA) -> Turn:
    """A turn answered and delivered: two messages in the history."""
    source = str(next(_sources))
    turn = await begin(
        store, new_turn(conversation, source, author_id=author, image_urls=("https://x/a.png",))
    )
    await store.turns.complete_turn(turn.id, reply(f"answer {source}"), exchange(source))
    await store.turns.record_delivery(turn.id, ["1"])
    return await store.turns.get_turn(turn.id)


async def age(store: Repositories, turn_ids: Sequence[int], when: datetime = LONG_AGO) -> None:
    """Make turns (and their conversations' last activity) look ``when`` old."""
    async with store.db.engine.begin() as conn:
        await conn.execute(update(turns).where(turns.c.id.in_(turn_ids)).values(created_at=when))
        owning = select(turns.c.conversation_id).where(turns.c.id.in_(turn_ids))
        await conn.execute(
            update(conversations).where(conversations.c.id.in_(owning)).values(updated_at=when)
        )


async def turn_ids(store: Repositories) -> set[int]:
    async with store.db.engine.connect() as conn:
        return set((await conn.scalars(select(turns.c.id))).all())


async def message_turns(store: Repositories) -> set[int]:
    async with store.db.engine.connect() as conn:
        return set((await conn.scalars(select(messages.c.turn_id))).all())


async def count(store: Repositories, table: object) -> int:
    async with store.db.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)  # type: ignore[arg-type]


# -- the sweep -----------------------------------------------------------------------------


async def test_sweep_deletes_exactly_what_is_older(store: Repositories) -> None:
    privacy = SqlPrivacy(store.db)
    mixed = await conversation_in(store, GUILD_A)
    old = [await answered(store, mixed) for _ in range(3)]
    recent = [await answered(store, mixed) for _ in range(2)]
    await age(store, [t.id for t in old])
    # The conversation itself was active just now (its recent turns touched it).
    async with store.db.engine.begin() as conn:
        await conn.execute(
            update(conversations).where(conversations.c.id == mixed.id).values(updated_at=NOW)
        )
    gone = await conversation_in(store, GUILD_B)
    gone_turn = await answered(store, gone)
    await age(store, [gone_turn.id])

    preview = await privacy.remove_older(CUT, CUT, dry_run=True)
    assert preview == Removed(turns=4, messages=8, conversations=1)
    assert await turn_ids(store) == {t.id for t in [*old, *recent, gone_turn]}

    removed = await privacy.remove_older(CUT, CUT)

    assert removed == Removed(turns=4, messages=8, conversations=1)
    assert await turn_ids(store) == {t.id for t in recent}
    assert await message_turns(store) == {t.id for t in recent}
    assert await store.conversations.conversation_for_scope(gone.scope_id) is None
    # The thread goes on: its next turn sees the shorter history.
    history = await store.conversations.history(mixed.id, 0)
    assert sorted({e.turn_id for e in history}) == [t.id for t in recent]
    nxt = await store.conversations.begin_turn(new_turn(mixed, str(next(_sources))))
    assert {e.turn_id for e in nxt.context.history} == {t.id for t in recent}
    # A second sweep finds nothing more.
    assert await privacy.remove_older(CUT, CUT) == Removed()


async def test_sweep_keeps_a_turn_still_being_answered(store: Repositories) -> None:
    privacy = SqlPrivacy(store.db)
    conversation = await conversation_in(store, GUILD_A)
    pending = await begin(store, new_turn(conversation, str(next(_sources))))
    await age(store, [pending.id])

    removed = await privacy.remove_older(CUT, CUT)

    assert removed == Removed(kept_unfinished=1)
    assert (await store.turns.get_turn(pending.id)).state is TurnState.PENDING
    assert await store.conversations.conversation_for_scope(conversation.scope_id) is not None


async def test_sweep_deletes_usage_events_before_their_own_cut(store: Repositories) -> None:
    privacy = SqlPrivacy(store.db)
    await store.usage.try_consume([("user:1", 100, 86400 * 90)], now=NOW - timedelta(days=60))
    await store.usage.try_consume([("user:1", 100, 86400 * 90)], now=NOW - timedelta(days=20))
    await store.usage.try_consume([("user:1", 100, 86400 * 90)], now=NOW)

    removed = await privacy.remove_older(CUT, CUT)

    assert removed == Removed(usage_events=1)
    assert await count(store, usage_events) == 2


async def test_two_processes_sweeping_at_once_delete_each_old_turn_once(
    store: Repositories, other_store: Repositories
) -> None:
    old: list[Turn] = []
    recent: list[Turn] = []
    for _ in range(4):
        conversation = await conversation_in(store, GUILD_A)
        old += [await answered(store, conversation) for _ in range(12)]
        recent += [await answered(store, conversation) for _ in range(3)]
    await age(store, [t.id for t in old])
    async with store.db.engine.begin() as conn:
        await conn.execute(update(conversations).values(updated_at=NOW))
    # Small batches, so the two runs interleave over many transactions.
    sweepers = [SqlPrivacy(store.db, batch=5), SqlPrivacy(other_store.db, batch=5)]

    results = await asyncio.gather(*(s.remove_older(CUT, CUT) for s in sweepers))

    assert sum(r.turns for r in results) == len(old)
    assert await turn_ids(store) == {t.id for t in recent}
    assert await message_turns(store) == {t.id for t in recent}
    assert await count(store, conversations) == 4


# -- export ----------------------------------------------------------------------------------


async def test_export_holds_every_stored_turn_in_order(store: Repositories) -> None:
    privacy = SqlPrivacy(store.db)
    conversation = await conversation_in(store, GUILD_A)
    stored = [await answered(store, conversation, author) for author in (ADA, BOB, ADA)]
    await answered(store, await conversation_in(store, GUILD_A))  # another thread's

    found = await privacy.export(conversation.scope_id)

    assert found is not None
    assert found.conversation.id == conversation.id
    assert found.turns == tuple(stored)
    assert await privacy.export("1999999999999999999") is None


async def test_a_personal_export_holds_only_that_persons_turns(store: Repositories) -> None:
    privacy = SqlPrivacy(store.db)
    conversation = await conversation_in(store, GUILD_A)
    first = await answered(store, conversation, ADA)
    await answered(store, conversation, BOB)
    await answered(store, conversation, BOB)
    failed = await begin(
        store,
        new_turn(
            conversation,
            str(next(_sources)),
            prompt="(In reply to a message from Bob:)\n> bob's private words\n\nwhat he said",
        ),
    )
    await store.turns.finish_turn(
        failed.id, TurnState.FAILED, "ClientError at http://10.0.0.7:5000"
    )

    found = await privacy.export(conversation.scope_id)
    assert found is not None
    mine = found.for_person(ADA)

    assert [t.id for t in mine.turns] == [first.id, failed.id]
    assert mine.left_out == 2
    files = export_files(mine, exported_at=NOW)
    document = json.loads(files["conversation.json"])
    assert document["messages_of_others_left_out"] == 2
    assert document["turns"][1]["prompt"] == (
        "(In reply to a message from Bob; its text is left out)\n\nwhat he said"
    )
    for text in files.values():
        assert "10.0.0.7" not in text and "bob's private words" not in text
        assert "answer " + found.turns[1].source_id not in text
    assert "2 messages of other people left out" in files["conversation.md"]


# -- forget -----------------------------------------------------------------------------------


@dataclass
class Spread:
    """Ada and Bob talking in two servers and Ada in a DM."""

    thread_a: Conversation
    ada_in_a: list[Turn]
    bob_in_a: list[Turn]
    ada_in_b: Turn
    ada_in_dm: Turn


async def spread(store: Repositories) -> Spread:
    thread_a = await conversation_in(store, GUILD_A)
    ada_in_a = [await answered(store, thread_a, ADA)]
    bob_in_a = [await answered(store, thread_a, BOB)]
    ada_in_a.append(await answered(store, thread_a, ADA))
    ada_in_b = await answered(store, await conversation_in(store, GUILD_B), ADA)
    ada_in_dm = await answered(store, await conversation_in(store, None), ADA)
    return Spread(thread_a, ada_in_a, bob_in_a, ada_in_b, ada_in_dm)


async def test_forget_removes_only_that_users_turns_in_that_server(store: Repositories) -> None:
    privacy = SqlPrivacy(store.db)
    s = await spread(store)
    everything = await turn_ids(store)

    preview = await privacy.forget(ADA, GUILD_A, dry_run=True)
    assert preview == Removed(turns=2, messages=4)
    assert await turn_ids(store) == everything

    removed = await privacy.forget(ADA, GUILD_A)

    assert removed == Removed(turns=2, messages=4)
    kept = everything - {t.id for t in s.ada_in_a}
    assert await turn_ids(store) == kept
    assert await message_turns(store) == kept
    history = await store.conversations.history(s.thread_a.id, 0)
    assert {e.turn_id for e in history} == {s.bob_in_a[0].id}
    # The conversation stays bound (Ada started it): the thread goes on.
    assert await store.conversations.conversation_for_scope(s.thread_a.scope_id) is not None
    assert await privacy.forget(ADA, GUILD_A) == Removed()


async def test_forget_in_a_dm_removes_the_dm_turns_only(store: Repositories) -> None:
    privacy = SqlPrivacy(store.db)
    s = await spread(store)

    assert await privacy.forget(ADA, None) == Removed(turns=1, messages=2)

    assert s.ada_in_dm.id not in await turn_ids(store)
    assert {s.ada_in_b.id, *(t.id for t in s.ada_in_a)} <= await turn_ids(store)


async def test_forget_leaves_a_turn_being_answered(store: Repositories) -> None:
    privacy = SqlPrivacy(store.db)
    conversation = await conversation_in(store, GUILD_A)
    done = await answered(store, conversation)
    running = await begin(store, new_turn(conversation, str(next(_sources))))

    assert await privacy.forget(ADA, GUILD_A) == Removed(turns=1, messages=2, kept_unfinished=1)
    assert await turn_ids(store) == {running.id}
    assert done.id not in await message_turns(store)


# -- purge -----------------------------------------------------------------------------------


async def test_purge_user_everywhere_with_a_dry_run_first(store: Repositories) -> None:
    privacy = SqlPrivacy(store.db)
    s = await spread(store)
    await store.usage.try_consume([(f"user:{ADA}", 10, 3600), (f"user:{BOB}", 10, 3600)], now=NOW)
    before = await turn_ids(store)

    preview = await privacy.purge_user(ADA, dry_run=True)
    # Ada's 4 turns; the server-B and DM conversations are left empty; thread A keeps Bob's.
    assert preview == Removed(turns=4, messages=8, conversations=2, usage_events=1)
    assert await turn_ids(store) == before

    assert await privacy.purge_user(ADA) == preview
    assert await turn_ids(store) == {s.bob_in_a[0].id}
    assert await count(store, conversations) == 1
    assert await count(store, usage_events) == 1


async def test_purge_guild_removes_its_conversations_and_settings_only(store: Repositories) -> None:
    privacy = SqlPrivacy(store.db)
    s = await spread(store)
    changes = GenerationSettings(system_prompt="be brief")
    await store.settings.update_settings(SettingsScope.SERVER, GUILD_A, SettingsChange(changes))
    await store.settings.update_settings(
        SettingsScope.THREAD, s.thread_a.scope_id, SettingsChange(changes)
    )
    await store.settings.update_settings(SettingsScope.SERVER, GUILD_B, SettingsChange(changes))
    await store.usage.try_consume([(f"guild:{GUILD_A}", 10, 3600)], now=NOW)

    preview = await privacy.purge_guild(GUILD_A, dry_run=True)
    assert preview == Removed(turns=3, messages=6, conversations=1, usage_events=1, settings=2)

    assert await privacy.purge_guild(GUILD_A) == preview
    assert await turn_ids(store) == {s.ada_in_b.id, s.ada_in_dm.id}
    assert await store.conversations.conversation_for_scope(s.thread_a.scope_id) is None
    layers = await store.settings.settings_layers(thread_id=None, channel_id=None, guild_id=GUILD_B)
    assert layers[SettingsScope.SERVER].system_prompt == "be brief"
    assert await privacy.purge_guild(GUILD_A) == Removed()
