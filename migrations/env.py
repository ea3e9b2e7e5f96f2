"""Alembic environment. ``bot.storage.migrate`` passes an open connection; run from the
``alembic`` CLI (``alembic -c migrations/alembic.ini …``) the URL comes from the
``SEED_BOT_DATABASE_URL`` environment variable."""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from bot.storage.migrate import CONNECTION_ATTRIBUTE, migration_connection
from bot.storage.tables import metadata
from bot.storage.types import UtcDateTime

config = context.config

if config.config_file_name is not None:
    # Only the CLI reads an ini file; the bot configures its own logging.
    fileConfig(config.config_file_name)


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("SEED_BOT_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: set SEED_BOT_DATABASE_URL or run `seed-bot migrate`")
    return url


def _render_item(type_: str, obj: object, autogen_context: AutogenContext) -> str | Literal[False]:
    # Scripts spell types with sqlalchemy alone, so they never import (and follow) app code.
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=metadata,
        compare_type=True,
        render_item=_render_item,
        # Scripts run on SQLite as well as PostgreSQL, so ALTERs are always rendered in batch
        # form, which SQLite needs and PostgreSQL runs as plain ALTERs.
        render_as_batch=True,
        **kwargs,
    )


def run_on(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    async with migration_connection(_url()) as conn:
        await conn.run_sync(run_on)


def run_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
elif (connection := config.attributes.get(CONNECTION_ATTRIBUTE)) is not None:
    run_on(connection)
else:
    asyncio.run(run_online())
