from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.storage import SqlStore
from bot.storage.tables import UsageEventRow

from .conftest import utc

HOUR = 3600


async def test_requests_under_the_limit_are_counted_then_refused(store: SqlStore) -> None:
    for minute in range(3):
        assert (
            await store.try_consume([("user:1", 3)], window_seconds=HOUR, now=utc(10, minute))
            is None
        )
    # The oldest of the three leaves the window at 11:00.
    assert await store.try_consume([("user:1", 3)], window_seconds=HOUR, now=utc(10, 30)) == (
        utc(11, 0)
    )
    # Other keys are counted apart.
    assert await store.try_consume([("user:2", 3)], window_seconds=HOUR, now=utc(10, 30)) is None


async def test_the_window_slides(store: SqlStore) -> None:
    key = [("guild:7", 2)]
    assert await store.try_consume(key, window_seconds=60, now=utc(10, 0, 0)) is None
    assert await store.try_consume(key, window_seconds=60, now=utc(10, 0, 10)) is None
    assert await store.try_consume(key, window_seconds=60, now=utc(10, 0, 59)) == utc(10, 1, 0)
    # A refused request is not recorded: the retry time does not move.
    assert await store.try_consume(key, window_seconds=60, now=utc(10, 0, 59)) == utc(10, 1, 0)
    # At exactly 60 s the first request has left the window.
    assert await store.try_consume(key, window_seconds=60, now=utc(10, 1, 0)) is None
    assert await store.try_consume(key, window_seconds=60, now=utc(10, 1, 5)) == utc(10, 1, 10)
    assert await store.try_consume(key, window_seconds=60, now=utc(10, 1, 10)) is None


async def test_all_keys_must_allow_and_a_refusal_records_nothing(store: SqlStore) -> None:
    assert await store.try_consume([("guild:1", 1)], window_seconds=HOUR, now=utc(9)) is None
    both = [("user:1", 5), ("guild:1", 1)]
    assert await store.try_consume(both, window_seconds=HOUR, now=utc(9, 10)) == utc(10)
    # user:1 was not charged for the refused request: it still has all 5.
    for minute in range(5):
        assert (
            await store.try_consume([("user:1", 5)], window_seconds=HOUR, now=utc(9, 20 + minute))
            is None
        )
    assert await store.try_consume([("user:1", 5)], window_seconds=HOUR, now=utc(9, 30)) == (
        utc(10, 20)
    )


async def test_the_retry_time_is_when_every_key_allows(store: SqlStore) -> None:
    assert await store.try_consume([("user:1", 1)], window_seconds=HOUR, now=utc(9, 0)) is None
    assert await store.try_consume([("guild:1", 1)], window_seconds=HOUR, now=utc(9, 30)) is None
    keys = [("user:1", 1), ("guild:1", 1)]
    assert await store.try_consume(keys, window_seconds=HOUR, now=utc(9, 40)) == utc(10, 30)
    assert await store.try_consume(keys, window_seconds=HOUR, now=utc(10, 30)) is None


async def test_a_lowered_limit_waits_for_enough_requests_to_leave(store: SqlStore) -> None:
    for minute in range(4):
        assert (
            await store.try_consume([("user:1", 10)], window_seconds=HOUR, now=utc(9, minute))
            is None
        )
    # Limit now 2 with 4 in the window: 3 must leave, the third at 9:02 + 1 h.
    assert await store.try_consume([("user:1", 2)], window_seconds=HOUR, now=utc(9, 30)) == (
        utc(10, 2)
    )


async def test_a_key_given_twice_counts_once_with_the_smaller_limit(store: SqlStore) -> None:
    keys = [("user:1", 3), ("user:1", 2)]
    assert await store.try_consume(keys, window_seconds=HOUR, now=utc(9, 0)) is None
    assert await store.try_consume(keys, window_seconds=HOUR, now=utc(9, 1)) is None
    assert await store.try_consume(keys, window_seconds=HOUR, now=utc(9, 2)) == utc(10, 0)


async def test_events_that_left_the_window_are_pruned(store: SqlStore, engine: AsyncEngine) -> None:
    for minute in range(5):
        await store.try_consume([("user:1", 100)], window_seconds=60, now=utc(9, minute))

    async def stored() -> int | None:
        async with engine.connect() as conn:
            return await conn.scalar(select(func.count()).select_from(UsageEventRow))

    # Each call prunes its keys' old events before recording: only 9:04 and nothing older
    # than a minute remains.
    assert await stored() == 1
    await store.try_consume([("user:1", 100)], window_seconds=60, now=utc(9, 4, 30))
    assert await stored() == 2


async def test_times_in_other_zones_are_the_same_instants(store: SqlStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    at = datetime(2026, 1, 2, 11, 0, tzinfo=plus_two)  # 09:00 UTC
    assert await store.try_consume([("user:1", 1)], window_seconds=HOUR, now=at) is None
    retry = await store.try_consume([("user:1", 1)], window_seconds=HOUR, now=utc(9, 30))
    assert retry == utc(10, 0)
    assert retry is not None
    assert retry.utcoffset() == timedelta(0)


async def test_nothing_to_count(store: SqlStore) -> None:
    assert await store.try_consume([], window_seconds=HOUR, now=utc(9)) is None


async def test_invalid_arguments(store: SqlStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.try_consume([("user:1", 1)], window_seconds=HOUR, now=datetime(2026, 1, 2))
    with pytest.raises(ValueError, match="at least 1"):
        await store.try_consume([("user:1", 0)], window_seconds=HOUR, now=utc(9))
    with pytest.raises(ValueError, match="window_seconds"):
        await store.try_consume([("user:1", 1)], window_seconds=0, now=utc(9))
