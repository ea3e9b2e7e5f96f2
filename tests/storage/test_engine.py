from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.domain.errors import StorageUnavailable
from bot.domain.models import NewConversation
from bot.storage import create_engine, sql_repositories
from bot.storage.engine import SQLITE_BEGIN, WRITE_OPTIONS, sqlite_path
from bot.storage.migrate import upgrade
from bot.storage.tables import usage_events
from bot.storage.types import UtcDateTime


async def sqlite_store_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    await upgrade(url)
    return url


async def test_sqlite_connections_are_configured(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    try:
        async with engine.connect() as conn:
            pragmas = {
                name: await conn.scalar(text(f"PRAGMA {name}"))
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            }
    finally:
        await engine.dispose()
    # synchronous: 1 is NORMAL.
    assert pragmas == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": 5000,
        "synchronous": 1,
    }


async def test_the_sqlite_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "bot.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        assert path.parent.is_dir()
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
        assert path.is_file()
    finally:
        await engine.dispose()


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask, so that only the bot's own choice of modes protects its
    files (a restrictive umask would hide a missing one)."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def wal_and_shm_in_use(url: str, path: Path) -> dict[str, int]:
    """The modes of the database and its WAL and shared-memory files while a connection
    that wrote holds them open."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE IF NOT EXISTS t (x TEXT)"))
            await conn.execute(text("INSERT INTO t VALUES ('secret')"))
        async with engine.connect() as conn:
            assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"
            return {
                suffix: mode(path.with_name(path.name + suffix)) for suffix in ("", "-wal", "-shm")
            }
    finally:
        await engine.dispose()


@pytest.mark.usefixtures("open_umask")
async def test_the_sqlite_files_and_new_directories_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "bot.db"
    before = mode(tmp_path)
    modes = await wal_and_shm_in_use(f"sqlite+aiosqlite:///{path}", path)
    assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
    assert (mode(tmp_path / "a"), mode(tmp_path / "a" / "b")) == (0o700, 0o700)
    assert mode(tmp_path) == before  # a directory that was there is not the bot's to change


@pytest.mark.usefixtures("open_umask")
async def test_an_existing_directory_is_kept_and_an_older_readable_database_made_owner_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database an older version left readable by everyone is made owner-only, with a
    warning naming it; the directory it is in (maybe shared) keeps its mode."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    path = shared / "bot.db"
    sqlite3.connect(path).close()
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="bot.storage.engine"):
        modes = await wal_and_shm_in_use(f"sqlite+aiosqlite:///{path}", path)
    assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
    assert mode(shared) == 0o755
    assert [r.getMessage() for r in caplog.records] == [
        f"database file {path} was open to other users (mode 644): made owner-only (600)"
    ]


def test_sqlite_path() -> None:
    assert sqlite_path("sqlite+aiosqlite:///data/bot.db") == Path("data/bot.db")
    assert sqlite_path("sqlite+aiosqlite:////abs/bot.db") == Path("/abs/bot.db")
    assert sqlite_path("sqlite+aiosqlite://") is None
    assert sqlite_path("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_path("postgresql+asyncpg://u@h/db") is None


async def test_in_memory_sqlite_works(tmp_path: Path) -> None:
    engine = create_engine("sqlite+aiosqlite:///:memory:")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
            assert await conn.scalar(text("SELECT count(*) FROM t")) == 1
    finally:
        await engine.dispose()


async def test_sqlite_reads_run_in_a_transaction(tmp_path: Path) -> None:
    """The driver alone would not BEGIN before a SELECT; ours does, so a read transaction
    sees one snapshot."""
    url = await sqlite_store_url(tmp_path)
    engine = create_engine(url)
    try:
        async with engine.connect() as reader, reader.begin():
            count = select(func.count()).select_from(usage_events)
            assert await reader.scalar(count) == 0
            async with engine.begin() as writer:
                await writer.execute(insert(usage_events).values(key="k", at=datetime.now(UTC)))
            assert await reader.scalar(count) == 0
        async with engine.connect() as reader:
            assert await reader.scalar(count) == 1
    finally:
        await engine.dispose()


async def _read_then_write(conn: AsyncConnection, key: str) -> None:
    async with conn.begin():
        await conn.scalar(select(func.count()).select_from(usage_events))
        await conn.execute(insert(usage_events).values(key=key, at=datetime.now(UTC)))


@pytest.mark.parametrize("mode", ["IMMEDIATE", "DEFERRED"])
async def test_write_transactions_take_the_lock_up_front(tmp_path: Path, mode: str) -> None:
    """Two read-then-write transactions at once. With BEGIN IMMEDIATE the second waits for
    the first to commit and both succeed. Deferred, the first's read snapshot goes stale when
    the second commits, and SQLite refuses its write at once, busy_timeout or not: the
    deferred case shows why write transactions begin IMMEDIATE."""
    url = await sqlite_store_url(tmp_path)
    engine = create_engine(url).execution_options(**{SQLITE_BEGIN: mode})
    try:
        async with engine.connect() as first, engine.connect() as second:
            tx = await first.begin()
            await first.scalar(select(func.count()).select_from(usage_events))
            other = asyncio.create_task(_read_then_write(second, "second"))
            await asyncio.sleep(0.2)
            if mode == "DEFERRED":
                assert other.done()
                with pytest.raises(OperationalError, match="database is locked"):
                    await first.execute(
                        insert(usage_events).values(key="first", at=datetime.now(UTC))
                    )
                await tx.rollback()
            else:
                assert not other.done()
                await first.execute(insert(usage_events).values(key="first", at=datetime.now(UTC)))
                await tx.commit()
            await other
        async with engine.connect() as conn:
            keys = (await conn.scalars(select(usage_events.c.key))).all()
        assert sorted(keys) == (["second"] if mode == "DEFERRED" else ["first", "second"])
    finally:
        await engine.dispose()


def test_write_options_ask_for_immediate() -> None:
    assert WRITE_OPTIONS == {SQLITE_BEGIN: "IMMEDIATE"}


async def test_a_locked_sqlite_database_becomes_storage_unavailable(tmp_path: Path) -> None:
    url = await sqlite_store_url(tmp_path)
    engine = create_engine(url, busy_timeout_ms=50)
    store = sql_repositories(engine, retries=2, retry_delay=0.01)
    holder = sqlite3.connect(tmp_path / "bot.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StorageUnavailable, match="after 3 attempts"):
            await store.conversations.create_conversation(
                NewConversation(scope_id="1", owner_id="2")
            )
        # WAL: readers are not blocked by the writer.
        assert await store.conversations.conversation_for_scope("1") is None
        holder.execute("ROLLBACK")
        created = await store.conversations.create_conversation(
            NewConversation(scope_id="1", owner_id="2")
        )
        assert await store.conversations.conversation_for_scope("1") == created
    finally:
        holder.close()
        await engine.dispose()


async def test_an_unreachable_postgresql_becomes_storage_unavailable() -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    store = sql_repositories(engine, retries=1, retry_delay=0.01)
    try:
        with pytest.raises(StorageUnavailable, match="after 2 attempts"):
            await store.conversations.conversation_for_scope("1")
    finally:
        await engine.dispose()


async def test_datetimes_come_back_aware_and_in_utc(engine: AsyncEngine) -> None:
    plus_five = timezone(timedelta(hours=5, minutes=30))
    local = datetime(2026, 3, 4, 10, 11, 12, 123456, tzinfo=plus_five)
    async with engine.begin() as conn:
        await conn.execute(insert(usage_events).values(key="k", at=local))
    async with engine.connect() as conn:
        back = await conn.scalar(select(usage_events.c.at))
        # Comparisons are made in UTC on both backends.
        assert (
            await conn.scalar(
                select(func.count())
                .select_from(usage_events)
                .where(usage_events.c.at > datetime(2026, 3, 4, 4, 41, 12, tzinfo=UTC))
            )
            == 1
        )
    assert back == local
    assert back is not None
    assert back.tzinfo is UTC
    assert back == datetime(2026, 3, 4, 4, 41, 12, 123456, tzinfo=UTC)


def test_naive_datetimes_are_refused() -> None:
    for url in ("sqlite+aiosqlite://", "postgresql+asyncpg://u@h/db"):
        dialect = create_engine(url).dialect  # no connection is made
        with pytest.raises(ValueError, match="naive datetime"):
            UtcDateTime().process_bind_param(datetime(2026, 1, 1), dialect)


async def test_postgresql_plans_every_statement_with_its_values(engine: AsyncEngine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL setting")
    async with engine.connect() as conn:
        assert await conn.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"
