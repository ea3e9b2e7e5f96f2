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


@dataclass(eq=False)
class _Item(Generic[T]):
    """One queued piece of work: ``batch_key`` groups consecutive items into one batch
    (``None``: never batched)."""

    payload: T
    batch_key: str | None
    arrived: float
    future: asyncio.Future[None] = field(repr=False)


@dataclass(eq=False)
class _Box(Generic[T]):
    items: deque[_Item[T]] = field(default_factory=deque)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    busy: bool = False


class Inboxes(Generic[T]):
    """Runs ``handler`` on batches of items per key, one batch at a time per key.

    The caller whose item finds a key idle becomes its worker and drains it; the others wait
    until their item's batch is handled (its exception, if any, is raised to each of them).
    A batch is the run of consecutive items at the head with the same ``batch_key``; the
    first batch waits until ``window`` seconds have passed since its newest item (at most
    ``4 * window`` in all), so messages sent in a burst travel together. Idle keys keep no
    state.
    """

    def __init__(
        self, handler: Callable[[Sequence[T]], Awaitable[None]], *, window: float = 0.0
    ) -> None:
        self._handler = handler
        self.window = window
        self._boxes: dict[str, _Box[T]] = {}

    async def submit(self, key: str, payload: T, batch_key: str | None) -> None:
        loop = asyncio.get_running_loop()
        box = self._boxes.setdefault(key, _Box())
        item: _Item[T] = _Item(payload, batch_key, loop.time(), loop.create_future())
        box.items.append(item)
        box.changed.set()
        if box.busy:
            return await item.future
        box.busy = True
        batch: list[_Item[T]] = []
        try:
            while box.items:
                batch = await self._next_batch(box)
                if not batch:
                    continue
                try:
                    await self._handler([i.payload for i in batch])
                except Exception as exc:
                    for i in batch:
                        if not i.future.done():
                            i.future.set_exception(exc)
                    continue
                for i in batch:
                    if not i.future.done():
                        i.future.set_result(None)
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

    async def _next_batch(self, box: _Box[T]) -> list[_Item[T]]:
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
    def _head_run(box: _Box[T]) -> list[_Item[T]]:
        first = box.items[0]
        if first.batch_key is None:
            return [first]
        run = []
        for item in box.items:
            if item.batch_key != first.batch_key:
                break
            run.append(item)
        return run
