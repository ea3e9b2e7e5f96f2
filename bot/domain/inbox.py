"""Per-conversation inboxes: messages of one conversation are answered one turn at a time,
in arrival order; a person's messages waiting while an answer is produced become one turn.
Nothing waits here: an idle conversation's message is taken up at once."""

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
    future: asyncio.Future[None] = field(repr=False)


@dataclass(eq=False)
class _Box(Generic[T]):
    items: deque[_Item[T]] = field(default_factory=deque)
    busy: bool = False


class Inboxes(Generic[T]):
    """Runs ``handler`` on batches of items per key, one batch at a time per key.

    The caller whose item finds a key idle becomes its worker and drains it; the others wait
    until their item's batch is handled (its exception, if any, is raised to each of them).
    A batch is the run of consecutive items at the head with the same ``batch_key``. Idle
    keys keep no state.
    """

    def __init__(self, handler: Callable[[Sequence[T]], Awaitable[None]]) -> None:
        self._handler = handler
        self._boxes: dict[str, _Box[T]] = {}

    async def submit(self, key: str, payload: T, batch_key: str | None) -> None:
        loop = asyncio.get_running_loop()
        box = self._boxes.setdefault(key, _Box())
        item: _Item[T] = _Item(payload, batch_key, loop.create_future())
        box.items.append(item)
        if box.busy:
            return await item.future
        box.busy = True
        batch: list[_Item[T]] = []
        try:
            while box.items:
                batch = self._next_batch(box)
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

    def _next_batch(self, box: _Box[T]) -> list[_Item[T]]:
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
