"""The store rides out a database outage (issue 18), on a real cut: PostgreSQL behind a
proxy that resets and refuses connections, SQLite locked by another connection past its busy
timeout. The outage's story (one WARNING, one INFO), /readyz's check and the metric."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.domain.errors import StorageUnavailable
from bot.domain.models import NewConversation
from bot.domain.outage import MAX_RETRY_DELAY, Outage
from bot.ops.health import DATABASE_UNAVAILABLE, database_check
from bot.ops.metrics import Metrics
from bot.storage import Repositories, sql_repositories
from bot.storage.database import RetryPolicy
from bot.storage.engine import create_engine, sqlite_path
from tests.fakes.dbproxy import DatabaseProxy, SqliteLock


def test_an_outage_is_ridden_out_for_the_tolerance_and_a_conflict_for_a_few_tries() -> None:
    policy = RetryPolicy(retries=3, delay=0.05, outage_tolerance=30.0)
    assert policy.delay_after(1, 0.0, outage=True) == 0.05
    assert policy.delay_after(40, 29.5, outage=True) == 0.5  # what is left of the tolerance
    assert policy.delay_after(12, 10.0, outage=True) == MAX_RETRY_DELAY
    assert policy.delay_after(100, 30.0, outage=True) is None
    assert policy.delay_after(3, 0.0) == 0.2
    assert policy.delay_after(4, 0.0) is None
    # Without a tolerance an outage gets the few tries a conflict gets.
    assert RetryPolicy(retries=1).delay_after(2, 0.0, outage=True) is None


@dataclass
class Cuttable:
    store: Repositories
    cut: DatabaseProxy | SqliteLock
    events: list[bool]


@pytest.fixture
async def cuttable(backend: str, migrated_url: str, tmp_path: Path) -> AsyncIterator[Cuttable]:
    events: list[bool] = []
    outage = Outage(hold_limit=1)
    outage.listeners.append(events.append)
    if backend == "sqlite":
        path = sqlite_path(migrated_url)
        assert path is not None
        lock = SqliteLock(path)
        engine = create_engine(migrated_url, busy_timeout_ms=50)
        try:
            yield Cuttable(
                sql_repositories(engine, outage_tolerance=20, outage=outage), lock, events
            )
        finally:
            lock.close()
            await engine.dispose()
        return
    proxy = DatabaseProxy.for_url(migrated_url)
    await proxy.start()
    engine = create_engine(proxy.url(migrated_url))
    try:
        yield Cuttable(sql_repositories(engine, outage_tolerance=20, outage=outage), proxy, events)
    finally:
        await engine.dispose()
        await proxy.close()


async def wait_down(outage: Outage) -> None:
    async with asyncio.timeout(10):
        await outage.wait_down()


async def test_a_store_call_waits_through_a_cut_and_the_outage_is_told_once(
    cuttable: Cuttable, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")
    store, outage = cuttable.store, cuttable.store.outage
    metrics = Metrics()
    metrics.watch_outage(outage)
    await store.conversations.create_conversation(
        NewConversation(scope_id="1", owner_id="2")
    )  # connected
    await cuttable.cut.cut()
    writing = asyncio.create_task(
        store.conversations.create_conversation(NewConversation(scope_id="3", owner_id="4"))
    )
    await wait_down(outage)
    assert not writing.done()
    problems = await database_check(store.db.engine, outage=outage)()
    assert problems["database"].startswith(f"{DATABASE_UNAVAILABLE} for ")
    assert "1 calls waiting" in problems["database"]
    assert "seed_bot_database_outages_total 1.0" in metrics.render().decode()
    await cuttable.cut.restore()
    created = await writing
    assert created == await store.conversations.conversation_for_scope("3")
    assert cuttable.events == [True, False]
    assert await database_check(store.db.engine, outage=outage)() == {}
    told = [r for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith("bot")]
    assert [(r.levelname, r.getMessage().split(" (")[0].split(";")[0]) for r in told] == [
        ("WARNING", "database unreachable"),
        ("WARNING", "readiness: database unreachable"),  # the probe's reason, logged once
        ("INFO", f"database back after {outage_seconds(told[2].getMessage())}s"),
    ]
    # The retries themselves are DEBUG lines.
    assert any("retry" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


def outage_seconds(message: str) -> str:
    return message.split("after ")[1].split("s;")[0]


async def test_past_the_tolerance_a_call_fails_and_beyond_the_hold_bound_at_once(
    cuttable: Cuttable,
) -> None:
    store = cuttable.store
    store.db.policy = RetryPolicy(outage_tolerance=1.0)
    await store.conversations.create_conversation(NewConversation(scope_id="1", owner_id="2"))
    await cuttable.cut.cut()
    try:
        waiting = asyncio.create_task(
            store.conversations.create_conversation(NewConversation("10", "2"))
        )
        # The failing call counts itself among the waiting before it first waits.
        await wait_down(store.outage)
        assert store.outage.holding == 1
        # One call waits (the bound in this test): another is refused at once.
        with pytest.raises(StorageUnavailable, match="already wait for the database"):
            async with asyncio.timeout(0.9):
                await store.conversations.create_conversation(NewConversation("11", "2"))
        with pytest.raises(StorageUnavailable, match="database unavailable"):
            await waiting
    finally:
        await cuttable.cut.restore()
    assert await store.conversations.conversation_for_scope("10") is None
