"""The interactions running turns answer through: the SQL ``InteractionStore``. A row holds
a sealed token (only the Discord layer can open it) for at most Discord's 15 minutes."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.models import StoredInteraction
from bot.storage.database import Database, now_utc
from bot.storage.rows import interaction_from
from bot.storage.tables import interactions


class SqlInteractions:
    """``InteractionStore`` on the shared transaction helper."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def keep_interaction(self, stored: StoredInteraction) -> None:
        # Expired rows go too: one whose drop failed never outlives the next keep.
        stale = or_(
            interactions.c.interaction_id == stored.interaction_id,
            interactions.c.expires_at <= now_utc(),
        )

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(delete(interactions).where(stale))
            await conn.execute(insert(interactions).values(**asdict(stored)))

        await self._db.run("keep_interaction", op, write=True)

    async def stored_interaction(self, interaction_id: str) -> StoredInteraction | None:
        async def op(conn: AsyncConnection) -> StoredInteraction | None:
            query = select(interactions).where(interactions.c.interaction_id == interaction_id)
            row = (await conn.execute(query)).one_or_none()
            return None if row is None else interaction_from(row)

        return await self._db.run("stored_interaction", op, write=False)

    async def drop_interaction(self, interaction_id: str) -> None:
        async def op(conn: AsyncConnection) -> None:
            await conn.execute(
                delete(interactions).where(interactions.c.interaction_id == interaction_id)
            )

        await self._db.run("drop_interaction", op, write=True)

    async def drop_expired_interactions(self, now: datetime) -> int:
        async def op(conn: AsyncConnection) -> int:
            result = await conn.execute(
                delete(interactions)
                .where(interactions.c.expires_at <= now)
                .returning(interactions.c.interaction_id)
            )
            return len(result.all())

        return await self._db.run("drop_expired_interactions", op, write=True)
