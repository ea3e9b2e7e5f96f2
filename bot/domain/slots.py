"""The in-flight cap: at most ``capacity`` turns hold a slot (a model request being submitted
or waited on) at once; the others wait in arrival order, each knowing its place in line.

A turn shows work (typing, progress) only while it holds a slot, and a waiting turn shows
where it stands: that is why this is a line with places rather than a bare semaphore.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

#: Tells a turn that it waits for a slot; the argument gives its place in line when asked
#: (1 = next), None once it has left the line.
OnWait = Callable[[Callable[[], int | None]], Awaitable[None]]
#: Given, when a turn starts waiting, what takes it out of the line (see ``Slots.hold``).
InLine = Callable[[Callable[[], None]], None]


class Withdrawn(Exception):
    """The turn left the line before a slot was free (``Slots.hold``'s ``in_line``)."""


class Slots:
    """A first-come, first-served counting lock whose waiters can ask for their place."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._held = 0
        self.granted = 0
        """Slots handed out so far (a turn that ran)."""
        self._line: deque[asyncio.Future[None]] = deque()

    @property
    def held(self) -> int:
        return self._held

    @property
    def waiting(self) -> int:
        return sum(1 for waiter in self._line if not waiter.done())

    def resize(self, capacity: int) -> None:
        """Change the cap for the turns waiting and to come; a lower cap takes effect as the
        turns holding slots finish (none is interrupted)."""
        self._capacity = capacity
        self._admit()

    @asynccontextmanager
    async def hold(
        self, on_wait: OnWait | None = None, *, in_line: InLine | None = None
    ) -> AsyncIterator[None]:
        """Hold a slot for the body; when none is free, call ``on_wait`` first (once), then
        wait for one. ``in_line`` is then given a function that takes the turn out of the
        line at once (a Stop): its place is given up, those behind it move up, and the wait
        raises ``Withdrawn`` (the function does nothing once the turn has its slot)."""
        await self._acquire(on_wait, in_line)
        try:
            yield
        finally:
            self._held -= 1
            self._admit()

    async def _acquire(self, on_wait: OnWait | None, in_line: InLine | None) -> None:
        if self._held < self._capacity and not self._line:
            self._held += 1
            self.granted += 1
            return
        admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.append(admitted)

        def leave() -> None:
            # Done at once: ``_place`` and ``waiting`` skip it; the wait removes it.
            if not admitted.done():
                admitted.set_exception(Withdrawn())

        if in_line is not None:
            in_line(leave)
        try:
            if on_wait is not None:
                await on_wait(lambda: self._place(admitted))
            await admitted
        except BaseException:
            if admitted.done() and not admitted.cancelled() and admitted.exception() is None:
                # Admitted just as it was cancelled: the slot goes to the next in line.
                self._held -= 1
            else:
                admitted.cancel()
                with suppress(ValueError):
                    self._line.remove(admitted)
            self._admit()
            raise

    def _admit(self) -> None:
        while self._line and self._held < self._capacity:
            admitted = self._line.popleft()
            if not admitted.done():
                self._held += 1
                self.granted += 1
                admitted.set_result(None)

    def _place(self, waiter: asyncio.Future[None]) -> int | None:
        place = 0
        for other in self._line:
            if not other.done():
                place += 1
            if other is waiter:
                return place if not waiter.done() else None
        return None
