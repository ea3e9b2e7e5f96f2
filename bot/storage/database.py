"""The one transaction helper every store class shares: a connection per unit of work,
the retry of transient failures, and the translation of database errors to the domain's.

SQLite has one writer at a time per file. This process's writes queue on an asyncio lock
instead of on SQLite's busy timeout (no busy-waiting between our own writes), and the lock
has a priority lane: a ``priority`` transaction (storing fal's request id) goes before every
waiting ordinary one. Reads use pooled connections of their own (WAL: readers do not block
the writer). On PostgreSQL the pool's last connection is kept for priority transactions, so
one never waits for a connection behind ordinary ones.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import QueuePool

from bot.domain.errors import DuplicateMessage, StorageError, StorageUnavailable
from bot.storage.engine import DRIVER_BEGIN

log = logging.getLogger(__name__)

T = TypeVar("T")

# SQLSTATEs worth another try on PostgreSQL: serialization failure, deadlock, lock timeout,
# and the server going away or refusing connections for now.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"})

Op = Callable[[AsyncConnection], Awaitable[T]]
# Called once per transaction run (not per retry) with its name and whether it writes.
Observer = Callable[[str, bool], None]


class Conflict(StorageError):
    """A constraint refused the write (unique or foreign key)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long a transaction keeps trying through transient failures. ``delay_after`` is
    the one place that decides (e.g. to ride out a database outage for N seconds)."""

    retries: int = 3
    delay: float = 0.05

    def delay_after(self, failures: int, elapsed: float) -> float | None:
        """Seconds to wait before the next attempt after ``failures`` transient failures
        (``elapsed`` seconds since the first attempt), or ``None`` to give up."""
        if failures > self.retries:
            return None
        return float(self.delay * 2 ** (failures - 1))


class _Gate:
    """``capacity`` holders at once, ``reserved`` of them for priority holders only; a
    priority waiter is served before every ordinary one."""

    def __init__(self, capacity: int, reserved: int = 0) -> None:
        self._capacity = capacity
        self._ordinary_capacity = capacity - reserved
        self._held = 0
        self._waiters: dict[bool, collections.deque[asyncio.Future[None]]] = {
            True: collections.deque(),
            False: collections.deque(),
        }

    def _free_for(self, priority: bool) -> bool:
        if priority:
            return self._held < self._capacity
        return self._held < self._ordinary_capacity and not self._waiters[True]

    async def acquire(self, priority: bool) -> None:
        if self._free_for(priority) and not self._waiters[priority]:
            self._held += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[priority].append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as we were cancelled: hand it on
            else:
                self._waiters[priority].remove(waiter)
            raise

    def release(self) -> None:
        self._held -= 1
        for priority in (True, False):
            queue = self._waiters[priority]
            while queue and self._free_for(priority):
                waiter = queue.popleft()
                if not waiter.done():
                    self._held += 1
                    waiter.set_result(None)


class Database:
    """Runs units of work on ``engine`` (SQLite or PostgreSQL). The caller owns the engine."""

    def __init__(self, engine: AsyncEngine, *, policy: RetryPolicy | None = None) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        # SQLite: every write unit of the store starts with a write statement, so the driver's
        # BEGIN IMMEDIATE (before that statement) takes the lock up front just as an explicit
        # BEGIN IMMEDIATE would, one statement sooner; a one-statement read needs no BEGIN.
        self._driver_begins = engine.execution_options(**DRIVER_BEGIN)
        # PostgreSQL: one statement is atomic by itself, so it runs without BEGIN and
        # COMMIT (two round trips fewer). SQLite keeps explicit transactions: a thread hop,
        # not a round trip, and BEGIN IMMEDIATE is what orders writers across processes.
        self._autocommit = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self.postgres else None
        )
        self.policy = policy or RetryPolicy()
        self.observers: list[Observer] = []
        self._write_gate: _Gate | None = None
        self._gate: _Gate | None = None
        if engine.dialect.name == "sqlite":
            self._write_gate = _Gate(1)
        elif isinstance(engine.pool, QueuePool):
            connections = engine.pool.size() + max(0, engine.pool._max_overflow)
            if connections >= 2:
                self._gate = _Gate(connections, reserved=1)

    async def run(
        self,
        what: str,
        op: Op[T],
        *,
        write: bool,
        priority: bool = False,
        single: bool = False,
        duplicate: tuple[str, ...] = (),
    ) -> T:
        """Run ``op`` in one transaction on a connection of its own, retrying transient
        failures per the policy, then raising ``StorageUnavailable``. A ``write`` unit must
        start with a write statement (on SQLite that is where the write lock is taken);
        ``single`` promises that ``op`` runs one statement. A ``priority`` unit goes before
        every waiting ordinary one. A constraint failure whose message names one of
        ``duplicate`` raises ``DuplicateMessage``, any other ``Conflict``; other database
        errors raise ``StorageError``."""
        for observe in self.observers:
            observe(what, write)
        started = time.monotonic()
        failures = 0
        while True:
            try:
                return await self._once(op, write=write, priority=priority, single=single)
            except sa_exc.IntegrityError as e:
                message = str(e.orig)
                if any(marker in message for marker in duplicate):
                    raise DuplicateMessage(f"{what}: already stored: {_describe(e)}") from e
                raise Conflict(f"{what}: constraint violated: {e.orig}") from e
            except (sa_exc.SQLAlchemyError, OSError) as e:
                if not _is_transient(e):
                    raise StorageError(f"{what}: database error: {_describe(e)}") from e
                failures += 1
                delay = self.policy.delay_after(failures, time.monotonic() - started)
                if delay is None:
                    raise StorageUnavailable(
                        f"{what}: database unavailable after {failures} attempts: {_describe(e)}"
                    ) from e
                log.warning(
                    "storage: %s failed (%s), retry %d in %.2fs",
                    what,
                    _describe(e),
                    failures,
                    delay,
                )
            await asyncio.sleep(delay)

    async def _once(self, op: Op[T], *, write: bool, priority: bool, single: bool) -> T:
        gate = self._write_gate if write else None
        gate = gate or self._gate
        if gate is None:
            return await self._transaction(op, write=write, single=single)
        await gate.acquire(priority)
        try:
            return await self._transaction(op, write=write, single=single)
        finally:
            gate.release()

    async def _transaction(self, op: Op[T], *, write: bool, single: bool) -> T:
        if single and self._autocommit is not None:
            async with self._autocommit.connect() as conn:
                return await op(conn)
        engine = self._driver_begins if write or single else self.engine
        async with engine.connect() as conn, conn.begin():
            return await op(conn)


def _describe(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    return f"{type(orig or e).__name__}: {orig or e}".splitlines()[0]


def _is_transient(e: BaseException) -> bool:
    if isinstance(e, OSError | sa_exc.TimeoutError):
        return True  # connection refused or reset; pool exhausted
    if isinstance(e, sa_exc.DBAPIError):
        if e.connection_invalidated:
            return True
        orig = e.orig
        if isinstance(orig, OSError):
            return True
        message = str(orig).lower()
        if "database is locked" in message or "database is busy" in message:
            return True
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if isinstance(sqlstate, str) and (
            sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith("08")
        ):
            return True
    return False


def now_utc() -> datetime:
    return datetime.now(UTC)
