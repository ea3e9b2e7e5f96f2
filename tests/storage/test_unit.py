"""Statements on the driver's connection (bot/storage/unit.py, ``Database.run_unit``): values
go in and come out as SQLAlchemy Core writes and reads them, a failed unit leaves nothing,
and the driver's errors reach the store as SQLAlchemy's would."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from bot.domain.errors import StorageError
from bot.domain.models import Conversation, Payer, Reservation
from bot.internals import forced_public
from bot.storage import Repositories
from bot.storage.costs import store_reservation
from bot.storage.database import Conflict
from bot.storage.engine import sqlite_path
from bot.storage.tables import turn_costs, turns, usage_events
from bot.storage.unit import Unit, in_thread

from .conftest import begin, new_turn

_COST = select(turn_costs).where(turn_costs.c.turn_id == bindparam("b_turn"))
_TURN_IDS = select(turns.c.id).where(turns.c.conversation_id == bindparam("b_id"))


def reservation(turn_id: int) -> Reservation:
    payer = Payer(user_id="1100000000000000001", guild_id=None, scope_id="1200000000000000001")
    at = datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC)
    return Reservation(turn_id=turn_id, payer=payer, at=at, input_tokens=7, units=12, usd=0.25)


async def test_values_written_on_the_driver_read_back_as_core_reads_them(
    store: Repositories, engine: AsyncEngine
) -> None:
    held = reservation(41)

    async def write(unit: Unit) -> None:
        await store_reservation(unit, held)

    await store.db.run_unit("write", write, write=True)
    async with engine.connect() as conn:
        core = (await conn.execute(_COST, {"b_turn": 41})).one()

    async def read(unit: Unit) -> object:
        return await unit.first(_COST, {"b_turn": 41})

    driver = await store.db.run_unit("read", read, write=False, single=True)
    assert tuple(driver) == tuple(core)  # type: ignore[arg-type]
    assert core.at == held.at and core.at.tzinfo is not None  # an aware UTC time, both ways
    assert (core.guild_id, core.estimated, core.settled, core.usd) == (None, True, False, 0.25)


async def test_a_unit_that_fails_leaves_nothing(
    store: Repositories, conversation: Conversation
) -> None:
    turn = await begin(store, new_turn(conversation, "1300000000000000001"))

    async def half(unit: Unit) -> None:
        await store_reservation(unit, reservation(turn.id))
        raise RuntimeError("the unit fails after its first statement")

    with pytest.raises(RuntimeError):
        await store.db.run_unit("half", half, write=True)
    assert await store.costs.turn_cost(turn.id) is None

    async def ids(unit: Unit) -> list[object]:
        return [row.id for row in await unit.rows(_TURN_IDS, {"b_id": conversation.id})]

    # The connection went back clean: the next units on it work.
    assert await store.db.run_unit("ids", ids, write=False, single=True) == [turn.id]


async def test_a_constraint_the_driver_reports_is_a_conflict(store: Repositories) -> None:
    async def orphan(unit: Unit) -> None:
        await unit.execute(
            insert(turns).values(
                conversation_id=bindparam("b_conversation"),
                epoch=0,
                source_id="1300000000000000002",
                attempt=0,
                author_id="1",
                author_name="a",
                reply_channel_id="1",
                prompt="p",
                image_urls=[],
                video_urls=[],
                warnings=[],
                state="pending",
                reply_message_ids=[],
                created_at=datetime.now(UTC),
                updated_at=datetime.now(UTC),
            ),
            {"b_conversation": 999_999},
        )

    with pytest.raises(Conflict) as raised:
        await store.db.run_unit("orphan", orphan, write=True)
    assert isinstance(raised.value, StorageError)
    assert "constraint" in str(raised.value)


def test_units_of_work_take_the_driver_path_unless_forced_off(store: Repositories) -> None:
    # The probes (tests/test_internals.py) pass on the installed libraries, so only the
    # switch takes the public API: the suite run with it set (test_public_api.py) is that.
    assert store.db.driver_path is not forced_public()


async def test_a_sqlite_unit_may_not_await_anything_but_its_statements() -> None:
    async def waits() -> None:
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="awaited something other"):
        in_thread(waits())

    async def answers() -> int:
        return 42

    assert in_thread(answers()) == 42


async def test_a_unit_cancelled_mid_statement_leaves_the_pool_usable(
    store: Repositories, engine: AsyncEngine
) -> None:
    if engine.dialect.name == "postgresql":
        slow = select(func.pg_sleep(30).label("slept"))
    else:  # counts to ten million in SQLite's own thread: seconds, not minutes
        slow = select(
            text(
                "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                " WHERE i < 10000000) SELECT count(*) FROM n) AS counted"
            )
        )
    began = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def sleeps(unit: Unit) -> None:
        loop.call_soon_threadsafe(began.set)  # on SQLite this runs in the driver's thread
        await unit.execute(slow, {})

    running = asyncio.create_task(store.db.run_unit("sleeps", sleeps, write=False, single=True))
    await began.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    async def ids(unit: Unit) -> list[object]:
        return [row.id for row in await unit.rows(_TURN_IDS, {"b_id": 1})]

    # More units than the pool has connections: the cancelled one's connection is among them.
    pool = engine.pool.size() if isinstance(engine.pool, QueuePool) else 1
    for _ in range(pool + 2):
        assert await store.db.run_unit("ids", ids, write=False, single=True) == []


async def test_a_sqlite_write_unit_holds_the_write_lock_from_its_first_read(
    store: Repositories, engine: AsyncEngine, backend: str
) -> None:
    # A write unit may read before it writes (the quota counter counts, then records): no
    # other process may write in between, or two processes both see room for one more.
    if backend != "sqlite":
        pytest.skip("PostgreSQL's units lock what they count (advisory locks)")
    path = sqlite_path(str(engine.url))
    assert path is not None
    other: list[str] = []

    def another_process_writes() -> None:
        conn = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            conn.execute("DELETE FROM usage_events WHERE key = 'nobody'")
            other.append("wrote")
        except sqlite3.OperationalError as e:
            other.append(str(e))
        finally:
            conn.close()

    async def counts_then_writes(unit: Unit) -> None:
        await unit.scalar(select(func.count().label("n")).select_from(usage_events), {})
        another_process_writes()  # between this unit's read and its write
        await unit.insert_many(insert(usage_events), [{"key": "k", "at": datetime.now(UTC)}])

    await store.db.run_unit("counts then writes", counts_then_writes, write=True)
    assert other == ["database is locked"]
