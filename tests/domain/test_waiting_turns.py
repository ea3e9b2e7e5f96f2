"""The in-flight cap counts the turns waiting for it (the metrics' seed_bot_turns_waiting)."""

from __future__ import annotations

import asyncio

from bot.domain.service import _Slots


async def test_the_slots_count_who_waits() -> None:
    slots = _Slots(1)
    async with slots:
        assert slots.waiting == 0  # a free slot is taken without waiting
        waiters = [asyncio.ensure_future(slots.acquire()) for _ in range(2)]
        await asyncio.sleep(0)  # one loop pass: both are blocked in acquire now
        assert slots.waiting == 2
        waiters[0].cancel()
        await asyncio.gather(waiters[0], return_exceptions=True)
        assert slots.waiting == 1  # a cancelled waiter leaves the count
    await waiters[1]
    assert slots.waiting == 0
    slots.release()
