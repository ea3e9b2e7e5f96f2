"""Alembic migrations run from code: the URL comes from the caller (the bot's
``database.url``), never from an ini file."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import event, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.errors import StorageError, StorageUnavailable
from bot.ops.logs import describe_exception
from bot.storage.engine import WRITE_OPTIONS, create_engine
from bot.urls import mask_password

log = logging.getLogger(__name__)

# Set in Config.attributes: env.py then migrates on this connection instead of its own.
CONNECTION_ATTRIBUTE = "connection"
# pg_advisory_xact_lock key serialising migrations ("seedbot" in ASCII).
MIGRATION_LOCK_ID = 0x7365_6564_626F_74


class SchemaOutOfDate(StorageError):
    """The database is not at the schema this version of the bot needs."""

    def __init__(self, current: str | None, head: str) -> None:
        super().__init__(
            f"database schema is out of date (at {current or 'base'}, need {head}):"
            " run `seed-bot migrate`"
        )
        self.current = current
        self.head = head


def migrations_dir() -> Path:
    """The Alembic script directory: the repository's top-level ``migrations/`` in a source
    checkout, else ``bot/_migrations`` as shipped inside the installed package."""
    package = Path(__file__).resolve().parent.parent  # .../bot
    root = package.parent
    candidates = []
    # Only a source checkout counts: in site-packages, a stray top-level "migrations" could
    # belong to another distribution.
    if (root / "pyproject.toml").is_file():
        candidates.append(root / "migrations")
    candidates.append(package / "_migrations")
    for candidate in candidates:
        if (candidate / "env.py").is_file() and (candidate / "versions").is_dir():
            return candidate
    raise StorageError(
        "migrations not found (looked in " + ", ".join(str(c) for c in candidates) + ")"
    )


def alembic_config(url: str | None = None) -> Config:
    """A programmatic Alembic config for ``url`` (no ini file, so logging is left alone)."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        # ConfigParser interpolates '%': an escaped password must survive it.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise StorageError("no migrations found")
    return head


@asynccontextmanager
async def migration_connection(url: str) -> AsyncIterator[AsyncConnection]:
    """One connection in one write transaction for migrating ``url``; committed when the
    block ends without error. Disposes of its engine afterwards.

    On SQLite, foreign keys are off for the migration: batch operations rebuild a table by
    copying and dropping it, and with foreign keys on, dropping the old table would cascade
    deletes into the rows referencing it. The keys are checked before committing instead.
    """
    engine = create_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:

        @event.listens_for(engine.sync_engine, "connect")
        def _foreign_keys_off(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA foreign_keys=OFF")
            finally:
                cursor.close()

    try:
        async with engine.execution_options(**WRITE_OPTIONS).begin() as conn:
            if engine.dialect.name == "postgresql":
                # Processes starting together take turns; the later ones then find the
                # schema migrated. (SQLite's BEGIN IMMEDIATE already makes them queue.)
                await conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_ID)))
            yield conn
            if sqlite:
                await conn.run_sync(_check_foreign_keys)
    finally:
        await engine.dispose()


def _check_foreign_keys(conn: Connection) -> None:
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise StorageError(f"migration left {len(broken)} rows with broken foreign keys")


async def _run_command(url: str, name: str, *args: Any, **kwargs: Any) -> None:
    config = alembic_config(url)

    def run(conn: Connection) -> None:
        config.attributes[CONNECTION_ATTRIBUTE] = conn
        getattr(command, name)(config, *args, **kwargs)

    try:
        async with migration_connection(url) as conn:
            await conn.run_sync(run)
    except CommandError as e:
        raise StorageError(f"migration failed: {e}") from e


async def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (the newest by default)."""
    log.info("migrating database up to %s", revision)
    await _run_command(url, "upgrade", revision)


async def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the database at ``url`` down to ``revision`` (an empty schema by default)."""
    log.info("migrating database down to %s", revision)
    await _run_command(url, "downgrade", revision)


def unreachable(url: str, exc: BaseException) -> StorageUnavailable:
    """The one line for a database that cannot be reached: where (password masked), the
    reason's category (the driver's own text may name addresses) and what to check."""
    return StorageUnavailable(
        f"cannot reach the database {mask_password(url)} ({describe_exception(exc)}): check "
        "database.url and that the database server is running"
    )


async def current_revision(url: str) -> str | None:
    """The database's schema revision; ``None`` for a database never migrated. Every command
    reads it first: a database it cannot reach raises :func:`unreachable`'s error."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    except (SQLAlchemyError, OSError) as exc:
        raise unreachable(url, exc) from exc
    finally:
        await engine.dispose()


async def ensure_schema(url: str, *, auto_migrate: bool) -> None:
    """Make sure the database is at the schema this code needs: migrate it when
    ``auto_migrate``, else raise ``SchemaOutOfDate``. A database at a revision this code does
    not know (migrated by a newer version) is refused either way."""
    head = head_revision()
    current = await current_revision(url)
    if current == head:
        return
    if current is not None:
        try:
            ScriptDirectory.from_config(alembic_config()).get_revision(current)
        except CommandError as e:
            raise StorageError(
                f"database schema is at revision {current}, unknown to this version of"
                f" seed-bot (which needs {head}): is a newer version using it?"
            ) from e
    if not auto_migrate:
        raise SchemaOutOfDate(current, head)
    await upgrade(url)
