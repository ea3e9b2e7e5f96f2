"""Per-conversation inboxes: messages of one conversation are answered one turn at a time,
in arrival order; a person's messages sent in quick succession (or waiting while an answer
is produced) become one turn."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)
class Item(Generic[T, R]):
    """One queued piece of work: ``batch_key`` groups consecutive items into one batch
    (``None``: never batched)."""

    payload: T
    batch_key: str | None
    arrived: float
    future: asyncio.Future[R] = field(repr=False)


@dataclass(eq=False)
class _Box(Generic[T, R]):
    items: deque[Item[T, R]] = field(default_factory=deque)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    busy: bool = False


class Inboxes(Generic[T, R]):
    """Runs ``handler`` on batches of items per key, one batch at a time per key.

    The caller whose item finds a key idle becomes its worker and drains it; the others wait
    for their item's result. A batch is the run of consecutive items at the head with the
    same ``batch_key``; the first batch waits until ``window`` seconds have passed since its
    newest item (at most ``4 * window`` in all), so messages sent in a burst travel together.
    Idle keys keep no state.
    """

    def __init__(
        self, handler: Callable[[Sequence[T]], Awaitable[R]], *, window: float = 0.0
    ) -> None:
        self._handler = handler
        self.window = window
        self._boxes: dict[str, _Box[T, R]] = {}

    def __len__(self) -> int:
        return len(self._boxes)

    def pending(self, key: str) -> int:
        box = self._boxes.get(key)
        return len(box.items) if box else 0

    async def submit(self, key: str, payload: T, batch_key: str | None) -> R:
        loop = asyncio.get_running_loop()
        box = self._boxes.setdefault(key, _Box())
        item: Item[T, R] = Item(payload, batch_key, loop.time(), loop.create_future())
        box.items.append(item)
        box.changed.set()
        if box.busy:
            return await item.future
        box.busy = True
        batch: list[Item[T, R]] = []
        try:
            while box.items:
                batch = await self._next_batch(box)
                if not batch:
                    continue
                try:
                    result = await self._handler([i.payload for i in batch])
                except Exception as exc:
                    for i in batch:
                        if not i.future.done():
                            i.future.set_exception(exc)
                    continue
                for i in batch:
                    if not i.future.done():
                        i.future.set_result(result)
        finally:
            box.busy = False
            # Unresolved futures remain only when the worker itself was cancelled (shutdown).
            for i in [*batch, *box.items]:
                if not i.future.done():
                    i.future.cancel()
            box.items.clear()
            if self._boxes.get(key) is box:
                del self._boxes[key]
        if not item.future.done():
            item.future.cancel()
        return await item.future

    async def _next_batch(self, box: _Box[T, R]) -> list[Item[T, R]]:
        loop = asyncio.get_running_loop()
        first = box.items[0]
        while self.window > 0 and first.batch_key is not None:
            run = self._head_run(box)
            now = loop.time()
            remaining = min(run[-1].arrived + self.window, first.arrived + 4 * self.window) - now
            if remaining <= 0:
                break
            box.changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await box.changed.wait()
            except TimeoutError:
                pass
        run = self._head_run(box)
        for _ in run:
            box.items.popleft()
        return [i for i in run if not i.future.cancelled()]

    @staticmethod
    def _head_run(box: _Box[T, R]) -> list[Item[T, R]]:
        first = box.items[0]
        if first.batch_key is None:
            return [first]
        run = []
        for item in box.items:
            if item.batch_key != first.batch_key:
                break
            run.append(item)
        return run
