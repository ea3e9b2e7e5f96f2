from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.models import Refusal
from bot.storage import Repositories
from bot.storage.tables import usage_events

from .conftest import utc

HOUR = 3600


async def consume(
    store: Repositories, keys: list[tuple[str, int]], window: int, now: datetime
) -> datetime | None:
    """Count one request against ``keys`` sharing one window; when refused, the time at
    which it would be allowed."""
    refusal = await store.usage.try_consume([(k, limit, window) for k, limit in keys], now=now)
    return None if refusal is None else refusal.retry_at


async def test_requests_under_the_limit_are_counted_then_refused(store: Repositories) -> None:
    for minute in range(3):
        assert await consume(store, [("user:1", 3)], HOUR, utc(10, minute)) is None
    # The oldest of the three leaves the window at 11:00.
    assert await consume(store, [("user:1", 3)], HOUR, utc(10, 30)) == (utc(11, 0))
    # Other keys are counted apart.
    assert await consume(store, [("user:2", 3)], HOUR, utc(10, 30)) is None


async def test_the_window_slides(store: Repositories) -> None:
    key = [("guild:7", 2)]
    assert await consume(store, key, 60, utc(10, 0, 0)) is None
    assert await consume(store, key, 60, utc(10, 0, 10)) is None
    assert await consume(store, key, 60, utc(10, 0, 59)) == utc(10, 1, 0)
    # A refused request is not recorded: the retry time does not move.
    assert await consume(store, key, 60, utc(10, 0, 59)) == utc(10, 1, 0)
    # At exactly 60 s the first request has left the window.
    assert await consume(store, key, 60, utc(10, 1, 0)) is None
    assert await consume(store, key, 60, utc(10, 1, 5)) == utc(10, 1, 10)
    assert await consume(store, key, 60, utc(10, 1, 10)) is None


async def test_all_keys_must_allow_and_a_refusal_records_nothing(store: Repositories) -> None:
    assert await consume(store, [("guild:1", 1)], HOUR, utc(9)) is None
    both = [("user:1", 5), ("guild:1", 1)]
    assert await consume(store, both, HOUR, utc(9, 10)) == utc(10)
    # user:1 was not charged for the refused request: it still has all 5.
    for minute in range(5):
        assert await consume(store, [("user:1", 5)], HOUR, utc(9, 20 + minute)) is None
    assert await consume(store, [("user:1", 5)], HOUR, utc(9, 30)) == (utc(10, 20))


async def test_the_retry_time_is_when_every_key_allows(store: Repositories) -> None:
    assert await consume(store, [("user:1", 1)], HOUR, utc(9, 0)) is None
    assert await consume(store, [("guild:1", 1)], HOUR, utc(9, 30)) is None
    keys = [("user:1", 1), ("guild:1", 1)]
    assert await consume(store, keys, HOUR, utc(9, 40)) == utc(10, 30)
    assert await consume(store, keys, HOUR, utc(10, 30)) is None


async def test_a_lowered_limit_waits_for_enough_requests_to_leave(store: Repositories) -> None:
    for minute in range(4):
        assert await consume(store, [("user:1", 10)], HOUR, utc(9, minute)) is None
    # Limit now 2 with 4 in the window: 3 must leave, the third at 9:02 + 1 h.
    assert await consume(store, [("user:1", 2)], HOUR, utc(9, 30)) == (utc(10, 2))


async def test_a_key_given_twice_counts_once_with_the_smaller_limit(store: Repositories) -> None:
    keys = [("user:1", 3), ("user:1", 2)]
    assert await consume(store, keys, HOUR, utc(9, 0)) is None
    assert await consume(store, keys, HOUR, utc(9, 1)) is None
    assert await consume(store, keys, HOUR, utc(9, 2)) == utc(10, 0)


async def test_events_that_left_the_window_are_pruned(
    store: Repositories, engine: AsyncEngine
) -> None:
    for minute in range(5):
        await consume(store, [("user:1", 100)], 60, utc(9, minute))

    async def stored() -> int | None:
        async with engine.connect() as conn:
            return await conn.scalar(select(func.count()).select_from(usage_events))

    # Each call prunes its keys' old events before recording: only 9:04 and nothing older
    # than a minute remains.
    assert await stored() == 1
    await consume(store, [("user:1", 100)], 60, utc(9, 4, 30))
    assert await stored() == 2


async def test_times_in_other_zones_are_the_same_instants(store: Repositories) -> None:
    plus_two = timezone(timedelta(hours=2))
    at = datetime(2026, 1, 2, 11, 0, tzinfo=plus_two)  # 09:00 UTC
    assert await consume(store, [("user:1", 1)], HOUR, at) is None
    retry = await consume(store, [("user:1", 1)], HOUR, utc(9, 30))
    assert retry == utc(10, 0)
    assert retry is not None
    assert retry.utcoffset() == timedelta(0)


async def test_nothing_to_count(store: Repositories) -> None:
    assert await consume(store, [], HOUR, utc(9)) is None


async def test_invalid_arguments(store: Repositories) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await consume(store, [("user:1", 1)], HOUR, datetime(2026, 1, 2))
    with pytest.raises(ValueError, match="at least 1"):
        await consume(store, [("user:1", 0)], HOUR, utc(9))
    with pytest.raises(ValueError, match="window_seconds"):
        await consume(store, [("user:1", 1)], 0, utc(9))


async def test_a_refusal_names_the_keys_used_up(store: Repositories) -> None:
    keys = [("user:1", 5, HOUR), ("guild:1", 1, 60)]
    assert await store.usage.try_consume(keys, now=utc(9)) is None
    # The server's key (its own one-minute window) is used up, the user's is not.
    refusal = await store.usage.try_consume(keys, now=utc(9, 0, 30))
    assert refusal == Refusal(("guild:1",), utc(9, 1))
    assert await store.usage.try_consume(keys, now=utc(9, 1)) is None
    assert await store.usage.try_consume(
        [("user:1", 2, HOUR), ("guild:1", 1, 60)], now=utc(9, 1)
    ) == (Refusal(("user:1", "guild:1"), utc(10)))


async def test_a_refusal_writes_nothing(store: Repositories, engine: AsyncEngine) -> None:
    """Not even the pruning of events that left the window: a flood of refused requests
    costs the database no writes (the next admitted request prunes)."""
    assert await consume(store, [("user:1", 2)], 60, utc(9, 0, 0)) is None
    assert await consume(store, [("user:1", 2)], 60, utc(9, 0, 50)) is None

    async def rows() -> list[datetime]:
        async with engine.connect() as conn:
            return list(await conn.scalars(select(usage_events.c.at).order_by(usage_events.c.at)))

    # 9:00 has left the window, 9:00:50 is in it: refused with a limit of 1
    assert await consume(store, [("user:1", 1)], 60, utc(9, 1, 20)) == utc(9, 1, 50)
    assert await rows() == [utc(9, 0, 0), utc(9, 0, 50)]
    assert await consume(store, [("user:1", 2)], 60, utc(9, 2, 0)) is None
    assert await rows() == [utc(9, 2, 0)]
