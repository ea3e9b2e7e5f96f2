"""Settings overrides per thread, channel and server: the SQL ``SettingsStore``."""

from __future__ import annotations

from sqlalchemy import and_, bindparam, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.models import GenerationSettings, SettingsScope
from bot.domain.ports import SettingsChange
from bot.storage.database import Database, now_utc
from bot.storage.dialects import insert_for
from bot.storage.rows import settings_from
from bot.storage.tables import settings
from bot.storage.unit import Unit

# The layers of one place in one statement: a NULL id (no channel, a DM) matches nothing.
_LAYERS = select(settings).where(
    or_(
        *(
            and_(settings.c.scope == scope.value, settings.c.scope_id == bindparam(scope.value))
            for scope in SettingsScope
        )
    )
)


async def load_layers(
    unit: Unit, *, thread_id: str | None, channel_id: str | None, guild_id: str | None
) -> dict[SettingsScope, GenerationSettings]:
    """The stored overrides of a thread, its channel and its server (absent ones left out)."""
    if thread_id is None and channel_id is None and guild_id is None:
        return {}
    rows = await unit.rows(
        _LAYERS,
        {
            SettingsScope.THREAD.value: thread_id,
            SettingsScope.CHANNEL.value: channel_id,
            SettingsScope.SERVER.value: guild_id,
        },
    )
    return {SettingsScope(row.scope): settings_from(row) for row in rows}


class SqlSettings:
    """``SettingsStore`` on the shared transaction helper."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def settings_layers(
        self, *, thread_id: str | None, channel_id: str | None, guild_id: str | None
    ) -> dict[SettingsScope, GenerationSettings]:
        async def op(unit: Unit) -> dict[SettingsScope, GenerationSettings]:
            return await load_layers(
                unit, thread_id=thread_id, channel_id=channel_id, guild_id=guild_id
            )

        return await self._db.run_unit("settings_layers", op, write=False, single=True)

    async def update_settings(
        self, scope: SettingsScope, scope_id: str, change: SettingsChange
    ) -> GenerationSettings:
        values = change.stored_values()
        scope = SettingsScope(scope)
        insert_ = insert_for(self._db.postgres)

        async def op(conn: AsyncConnection) -> GenerationSettings:
            key = (settings.c.scope == scope.value, settings.c.scope_id == scope_id)
            if values:
                now = now_utc()
                stmt = insert_(settings).values(
                    scope=scope.value, scope_id=scope_id, updated_at=now, **values
                )
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[settings.c.scope, settings.c.scope_id],
                        set_={**values, "updated_at": now},
                    )
                )
            row = (await conn.execute(select(settings).where(*key))).one_or_none()
            if row is None:
                return GenerationSettings()
            result = settings_from(row)
            if result.is_empty():
                # An all-unset layer is no layer: settings_layers leaves it out.
                await conn.execute(delete(settings).where(*key))
            return result

        return await self._db.run("update_settings", op, write=bool(values))
