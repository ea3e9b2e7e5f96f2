"""Request counters for quotas: the SQL ``UsageStore``, shared by every process using the
database."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.models import Refusal
from bot.storage.database import Database
from bot.storage.tables import usage_events


def advisory_lock_id(key: str) -> int:
    """A stable signed 64-bit id for ``pg_advisory_xact_lock`` (Python's hash() is salted)."""
    digest = hashlib.blake2b(b"seed-bot usage:" + key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class SqlUsage:
    """``UsageStore`` on the shared transaction helper."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def try_consume(
        self, keys: Sequence[tuple[str, int, int]], *, now: datetime
    ) -> Refusal | None:
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("try_consume needs a timezone-aware `now`")
        limits: dict[str, int] = {}
        windows: dict[str, timedelta] = {}
        for key, limit, seconds in keys:
            if seconds <= 0:
                raise ValueError(f"window_seconds must be positive (for {key!r})")
            if limit < 1:
                raise ValueError(f"quota limit for {key!r} must be at least 1, not {limit}")
            limits[key] = min(limit, limits.get(key, limit))
            windows[key] = timedelta(seconds=seconds)
        if not limits:
            return None
        names = sorted(limits)
        order = list(dict.fromkeys(key for key, _, _ in keys))
        in_window = or_(
            *(and_(usage_events.c.key == k, usage_events.c.at > now - windows[k]) for k in names)
        )

        async def op(conn: AsyncConnection) -> Refusal | None:
            if self._db.postgres:
                # One lock per key, taken in a global order (left to right in one statement)
                # so that two requests sharing keys cannot deadlock; held until commit.
                # SQLite's BEGIN IMMEDIATE already serialises every writer.
                locks = sorted({advisory_lock_id(k) for k in names})
                await conn.execute(select(*(func.pg_advisory_xact_lock(i) for i in locks)))
            # A key is used with one window, so what left it is never needed again.
            await conn.execute(
                delete(usage_events).where(
                    or_(
                        *(
                            and_(usage_events.c.key == k, usage_events.c.at <= now - windows[k])
                            for k in names
                        )
                    )
                )
            )
            result = await conn.execute(
                select(usage_events.c.key, func.count())
                .where(in_window)
                .group_by(usage_events.c.key)
            )
            counts: dict[str, int] = {key: count for key, count in result}
            refused: list[str] = []
            retry_at: datetime | None = None
            for key in names:
                excess = counts.get(key, 0) - limits[key]
                if excess < 0:
                    continue
                # Allowed again once all but limit-1 of the counted requests have left the
                # window: when the (excess+1)-th oldest one does.
                oldest = await conn.scalar(
                    select(usage_events.c.at)
                    .where(usage_events.c.key == key, usage_events.c.at > now - windows[key])
                    .order_by(usage_events.c.at)
                    .offset(excess)
                    .limit(1)
                )
                assert oldest is not None
                free_at = oldest + windows[key]
                retry_at = free_at if retry_at is None else max(retry_at, free_at)
                refused.append(key)
            if retry_at is not None:
                return Refusal(tuple(k for k in order if k in refused), retry_at)
            await conn.execute(insert(usage_events), [{"key": k, "at": now} for k in names])
            return None

        return await self._db.run("try_consume", op, write=True)
