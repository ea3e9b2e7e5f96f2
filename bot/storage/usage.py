"""Request counters for quotas: the SQL ``UsageStore``, shared by every process using the
database."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    Delete,
    Label,
    Select,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
)

from bot.domain.models import Refusal
from bot.storage.database import Database
from bot.storage.tables import usage_events
from bot.storage.unit import Unit

e = usage_events.c
# The (excess+1)-th oldest request of a key still in its window.
_NTH_IN_WINDOW = (
    select(e.at)
    .where(e.key == bindparam("b_key"), e.at > bindparam("b_since"))
    .order_by(e.at)
    .offset(bindparam("b_excess"))
    .limit(1)
)
_COUNT_REQUEST = insert(usage_events)


def advisory_lock_id(key: str) -> int:
    """A stable signed 64-bit id for ``pg_advisory_xact_lock`` (Python's hash() is salted)."""
    digest = hashlib.blake2b(b"seed-bot usage:" + key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class _Consume:
    """The statements of one ``try_consume`` over ``n`` keys (``b_key{i}``, ``b_since{i}``:
    the start of key i's window, ``b_lock{i}``: the advisory locks in their order)."""

    lock: Select[tuple[object, ...]]
    forget: Delete
    count: Select[tuple[str, int]]


@functools.cache
def _consume(n: int) -> _Consume:
    def key(i: int) -> BindParameter[Any]:
        return bindparam(f"b_key{i}")

    def since(i: int) -> BindParameter[Any]:
        return bindparam(f"b_since{i}")

    def lock(i: int) -> Label[Any]:
        return func.pg_advisory_xact_lock(bindparam(f"b_lock{i}", type_=BigInteger)).label(f"l{i}")

    return _Consume(
        lock=select(*(lock(i) for i in range(n))),
        forget=delete(usage_events).where(
            or_(*(and_(e.key == key(i), e.at <= since(i)) for i in range(n)))
        ),
        count=select(e.key, func.count().label("requests"))
        .where(or_(*(and_(e.key == key(i), e.at > since(i)) for i in range(n))))
        .group_by(e.key),
    )


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
        statements = _consume(len(names))
        windowed: dict[str, object] = {}
        for i, name in enumerate(names):
            windowed[f"b_key{i}"] = name
            windowed[f"b_since{i}"] = now - windows[name]
        locks = {
            f"b_lock{i}": lock for i, lock in enumerate(sorted(advisory_lock_id(k) for k in names))
        }

        async def op(unit: Unit) -> Refusal | None:
            if unit.postgres:
                # One lock per key, taken in a global order (left to right in one statement)
                # so that two requests sharing keys cannot deadlock; held until commit.
                # SQLite's BEGIN IMMEDIATE already serialises every writer.
                await unit.execute(statements.lock, locks)
            counts = {key: count for key, count in await unit.values(statements.count, windowed)}
            refused: list[str] = []
            retry_at: datetime | None = None
            for key in names:
                excess = counts.get(key, 0) - limits[key]
                if excess < 0:
                    continue
                # Allowed again once all but limit-1 of the counted requests have left the
                # window: when the (excess+1)-th oldest one does.
                oldest = await unit.scalar(
                    _NTH_IN_WINDOW,
                    {"b_key": key, "b_since": now - windows[key], "b_excess": excess},
                )
                assert oldest is not None
                free_at = oldest + windows[key]
                retry_at = free_at if retry_at is None else max(retry_at, free_at)
                refused.append(key)
            if retry_at is not None:
                # A refusal writes nothing: a flood of refused messages costs no writes.
                return Refusal(tuple(k for k in order if k in refused), retry_at)
            # A key is used with one window, so what left it is never needed again.
            await unit.execute(statements.forget, windowed)
            await unit.insert_many(_COUNT_REQUEST, [{"key": k, "at": now} for k in names])
            return None

        return await self._db.run_unit("try_consume", op, write=True)
