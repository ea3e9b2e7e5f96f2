"""A database outage as the bot lives through it: when the store finds the database
unreachable, its calls wait (up to the tolerance) instead of failing; this module keeps the
one story of that outage: when it began, who waited, when it ended.

The store (bot/storage/database.py) reports every failure that means "unreachable" and the
first success after them; the service names the turn a store call waits for (``waiting_as``),
so the turn's status message can say so; /readyz and the metrics read the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

log = logging.getLogger(__name__)

# How long a store call rides out an unreachable database before it gives up (config:
# database.outage_tolerance_seconds).
DEFAULT_OUTAGE_TOLERANCE = 120.0
# At most this many store calls wait on an unreachable database at once (each one a turn or a
# message waiting); one more fails at once, and its message is told the database is away.
HOLD_LIMIT = 1000
# The longest pause between two attempts during an outage (the first success wakes them all).
MAX_RETRY_DELAY = 1.0


@dataclass(frozen=True, slots=True)
class Waiter:
    """Who a store call works for: ``key`` names the turn (or message), ``on_wait`` is
    called once when that call starts waiting on the outage (it must not block)."""

    key: str
    on_wait: Callable[[], None]


_WAITER: ContextVar[Waiter | None] = ContextVar("seed_bot_outage_waiter", default=None)

# Observers of the state: called with True when an outage begins, False when it ends.
Listener = Callable[[bool], None]


class OutageFull(Exception):
    """Internal to the store: the hold limit is reached, the call must not wait."""


class Outage:
    """The database's reachability as the store meets it."""

    def __init__(self, *, hold_limit: int = HOLD_LIMIT) -> None:
        self.hold_limit = hold_limit
        self.outages = 0
        self.error = ""
        self._since: float | None = None
        self._writes_failed = False
        self._holding = 0
        self._waited: set[str] = set()
        self._back = asyncio.Event()
        self._back.set()
        self._down = asyncio.Event()
        self.listeners: list[Listener] = []

    @property
    def down(self) -> bool:
        return self._since is not None

    @property
    def holding(self) -> int:
        """Store calls waiting on the database now."""
        return self._holding

    def down_for(self) -> float:
        return 0.0 if self._since is None else time.monotonic() - self._since

    def failed(self, error: str, *, write: bool) -> None:
        """A store call (a ``write`` or a read) found the database unreachable (``error``:
        what it met)."""
        self.error = error
        self._writes_failed = self._writes_failed or write
        if self._since is not None:
            return
        self._since = time.monotonic()
        self.outages += 1
        self._waited.clear()
        self._back.clear()
        self._down.set()
        log.warning(
            "database unreachable (%s): turns wait for it to come back, each up to its tolerance",
            error,
        )
        for listener in self.listeners:
            listener(True)

    def succeeded(self, *, write: bool) -> None:
        """A store call (a ``write`` or a read) went through: an outage under way is over,
        unless writes failed and this is a read (SQLite locked by another process still
        lets readers in)."""
        if self._since is None or (self._writes_failed and not write):
            return
        self._writes_failed = False
        away = time.monotonic() - self._since
        self._since = None
        self._down.clear()
        self._back.set()
        log.info("database back after %.1fs; %d turns waited for it", away, len(self._waited))
        for listener in self.listeners:
            listener(False)

    @contextlib.contextmanager
    def holding_call(self) -> Iterator[None]:
        """Count one store call waiting through the outage; raise ``OutageFull`` when the
        hold limit is reached. Tells the call's waiter (once) that it waits."""
        if self._holding >= self.hold_limit:
            raise OutageFull(f"{self._holding} calls already wait for the database")
        self._holding += 1
        waiter = _WAITER.get()
        if waiter is not None:
            if waiter.key not in self._waited:
                self._waited.add(waiter.key)
            waiter.on_wait()
        try:
            yield
        finally:
            self._holding -= 1

    async def wait_down(self) -> None:
        """Return when an outage begins (at once during one)."""
        await self._down.wait()

    async def wait_back(self, timeout: float) -> None:
        """Return when the database is back or after ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._back.wait()


@contextlib.contextmanager
def waiting_as(key: str, on_wait: Callable[[], None]) -> Iterator[None]:
    """Store calls made in this context (and the tasks it starts) work for ``key``."""
    token = _WAITER.set(Waiter(key, on_wait))
    try:
        yield
    finally:
        _WAITER.reset(token)
