"""Storage fixtures: every store test runs on a fresh SQLite file and, when
``SEED_BOT_TEST_POSTGRES_URL`` is set, on a fresh PostgreSQL database."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from bot.domain.models import (
    ChatMessage,
    Conversation,
    HistoryEntry,
    ModelReply,
    NewConversation,
    NewTurn,
    RawJson,
    Turn,
)
from bot.storage import Repositories, create_engine, sql_repositories
from bot.storage.migrate import upgrade

POSTGRES_ENV = "SEED_BOT_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")


def postgres_base_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


async def _admin(base_url: str, statement: str) -> None:
    admin = create_async_engine(base_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await admin.dispose()


async def create_postgres_database(base_url: str, *, template: str | None = None) -> str:
    """The URL of a new database next to ``base_url``'s: empty, or a copy of the database
    ``template`` (which nobody may be connected to meanwhile)."""
    name = f"seed_bot_test_{uuid.uuid4().hex[:16]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    await _admin(base_url, f'CREATE DATABASE "{name}"{copy}')
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(base_url: str, url: str) -> None:
    """Drop the database of ``url``, made by ``create_postgres_database(base_url)``."""
    name = make_url(url).database
    await _admin(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def fresh_postgres_database(
    base_url: str, *, template: str | None = None
) -> AsyncIterator[str]:
    """A new database (see ``create_postgres_database``), dropped afterwards. A database per
    test isolates tests completely and lets migrations run from a plain URL."""
    url = await create_postgres_database(base_url, template=template)
    try:
        yield url
    finally:
        await drop_postgres_database(base_url, url)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "postgresql" and postgres_base_url() is None:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV} (e.g. postgresql+asyncpg://…/test)")
    return name


@pytest.fixture
async def db_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database (no schema) on the backend under test."""
    if backend == "sqlite":
        # A directory that does not exist yet: the engine factory creates it.
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'seed-bot.db'}"
        return
    base = postgres_base_url()
    assert base is not None
    async with fresh_postgres_database(base) as url:
        yield url


@pytest.fixture
async def migrated_url(db_url: str) -> str:
    await upgrade(db_url)
    return db_url


@pytest.fixture
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> Repositories:
    return sql_repositories(engine)


@pytest.fixture
async def other_store(migrated_url: str) -> AsyncIterator[Repositories]:
    """A store on its own engine and pool: another process sharing the database."""
    engine = create_engine(migrated_url)
    yield sql_repositories(engine)
    await engine.dispose()


@pytest.fixture
async def conversation(store: Repositories) -> Conversation:
    return await store.conversations.create_conversation(
        NewConversation(
            scope_id="1200000000000000001",
            owner_id="1100000000000000001",
            guild_id="1000000000000000001",
            parent_channel_id="1000000000000000002",
        )
    )


def new_turn(conversation: Conversation, source_id: str, **overrides: Any) -> NewTurn:
    turn = NewTurn(
        scope_id=conversation.scope_id,
        source_id=source_id,
        author_id="1100000000000000001",
        author_name="Ada",
        reply_channel_id=conversation.scope_id,
        prompt=f"prompt for {source_id}",
    )
    return replace(turn, **overrides)


def reply(output: str = "the answer", *, request_id: str = "req-1") -> ModelReply:
    return ModelReply(
        output=output,
        reasoning="because",
        messages=(),
        request_id=request_id,
        inference_time=1.5,
    )


def exchange(tag: str) -> list[ChatMessage]:
    """The two messages one turn adds: the user's and the assistant's."""
    return [
        ChatMessage(role="user", content=[{"type": "text", "text": f"question {tag}"}]),
        ChatMessage(role="assistant", content=f"answer {tag}"),
    ]


def utc(hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A time on one fixed day, for quota windows."""
    return datetime(2026, 1, 2, hour, minute, second, tzinfo=UTC)


async def begin(store: Repositories, new: NewTurn) -> Turn:
    """Store a turn in an existing conversation; the turn alone."""
    return (await store.conversations.begin_turn(new)).turn


def decoded(history: list[HistoryEntry]) -> list[ChatMessage]:
    """The history's messages with their stored JSON text decoded, to compare with what
    was stored."""
    out = []
    for entry in history:
        content = entry.message.content
        assert isinstance(content, RawJson), content
        out.append(ChatMessage(entry.message.role, json.loads(content.text)))
    return out


async def history_messages(
    store: Repositories, conversation_id: int, epoch: int
) -> list[ChatMessage]:
    return decoded(await store.conversations.history(conversation_id, epoch))
