"""The per-conversation inbox: arrival order, bursts batched by key, one batch at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from bot.domain.inbox import Inboxes


class Handler:
    """Records each batch; a batch waits for ``release`` when it is given one."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.running = 0
        self.most_at_once = 0
        self.release: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.two_at_once = asyncio.Event()

    async def __call__(self, batch: Sequence[str]) -> None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        if self.running == 2:
            self.two_at_once.set()
        self.batches.append(list(batch))
        self.started.set()
        try:
            if self.release is not None:
                await self.release.wait()
            if "boom" in batch:
                raise ValueError("boom")
        finally:
            self.running -= 1


async def test_items_of_one_key_run_one_batch_at_a_time_in_arrival_order() -> None:
    handler = Handler()
    inbox: Inboxes[str] = Inboxes(handler)
    handler.release = asyncio.Event()
    first = asyncio.create_task(inbox.submit("a", "1", None))
    await handler.started.wait()
    rest = [asyncio.create_task(inbox.submit("a", str(i), None)) for i in (2, 3)]
    await asyncio.sleep(0)  # one loop pass: the new tasks run up to their first await
    handler.release.set()
    await asyncio.gather(first, *rest)
    assert handler.batches == [["1"], ["2"], ["3"]]
    assert handler.most_at_once == 1


async def test_waiting_items_of_one_author_become_one_batch() -> None:
    handler = Handler()
    inbox: Inboxes[str] = Inboxes(handler)
    handler.release = asyncio.Event()
    first = asyncio.create_task(inbox.submit("a", "q1", "alice"))
    await handler.started.wait()
    later = [
        asyncio.create_task(inbox.submit("a", text, author))
        for text, author in (("q2", "alice"), ("q3", "alice"), ("b1", "bob"), ("q4", "alice"))
    ]
    await asyncio.sleep(0)  # one loop pass: the new tasks run up to their first await
    handler.release.set()
    await asyncio.gather(first, *later)
    assert handler.batches == [["q1"], ["q2", "q3"], ["b1"], ["q4"]]


async def test_different_keys_run_concurrently() -> None:
    handler = Handler()
    inbox: Inboxes[str] = Inboxes(handler)
    handler.release = asyncio.Event()
    tasks = [asyncio.create_task(inbox.submit(key, key, None)) for key in ("a", "b")]
    await handler.two_at_once.wait()  # both started without waiting for each other
    handler.release.set()
    await asyncio.gather(*tasks)
    assert handler.most_at_once == 2


async def test_a_failing_batch_raises_to_its_callers_and_the_inbox_goes_on() -> None:
    handler = Handler()
    inbox: Inboxes[str] = Inboxes(handler)
    with pytest.raises(ValueError, match="boom"):
        await inbox.submit("a", "boom", None)
    await inbox.submit("a", "fine", None)
    assert handler.batches == [["boom"], ["fine"]]


async def test_an_idle_inbox_keeps_nothing() -> None:
    handler = Handler()
    inbox: Inboxes[str] = Inboxes(handler)
    await inbox.submit("a", "x", None)
    assert inbox._boxes == {}
