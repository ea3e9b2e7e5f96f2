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
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import QueuePool

from bot.domain.errors import DuplicateMessage, SeedBotError, StorageError, StorageUnavailable
from bot.domain.outage import MAX_RETRY_DELAY, Outage, OutageFull
from bot.storage import aiosqlite_internals, sqlalchemy_internals
from bot.storage.engine import DRIVER_BEGIN, WRITE_OPTIONS
from bot.storage.unit import (
    CoreDriver,
    PostgresDriver,
    SqliteDriver,
    Statements,
    Unit,
    in_thread,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# SQLSTATEs worth another try on PostgreSQL: serialization failure, deadlock, lock timeout
# (a few tries), and the server going away or refusing connections for now (an outage,
# ridden out: admin/crash shutdown, cannot connect now, too many connections).
_CONFLICT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
_OUTAGE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})

Op = Callable[[AsyncConnection], Awaitable[T]]
UnitOp = Callable[[Unit], Coroutine[Any, Any, T]]
# Called once per transaction run (not per retry) with its name and whether it writes.
Observer = Callable[[str, bool], None]


class _OutOfTime(Exception):
    """Internal: a call queued behind an outage ran out of its tolerance."""


class Conflict(StorageError):
    """A constraint refused the write (unique or foreign key)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long a transaction keeps trying through transient failures. ``delay_after`` is
    the one place that decides: a conflict (serialization failure, deadlock) is tried
    ``retries`` more times; an unreachable database (refused or reset connections, a server
    starting up or shutting down, SQLite busy) is ridden out for ``outage_tolerance``
    seconds (0: it is tried ``retries`` more times, as a conflict)."""

    retries: int = 3
    delay: float = 0.05
    outage_tolerance: float = 0.0

    def delay_after(self, failures: int, elapsed: float, *, outage: bool = False) -> float | None:
        """Seconds to wait before the next attempt after ``failures`` transient failures
        (``elapsed`` seconds since the first attempt), or ``None`` to give up."""
        backoff = float(self.delay * 2 ** min(failures - 1, 30))
        if outage and self.outage_tolerance > 0:
            left = self.outage_tolerance - elapsed
            return min(backoff, MAX_RETRY_DELAY, left) if left > 0 else None
        if failures > self.retries:
            return None
        return backoff


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

    def try_acquire(self, priority: bool) -> bool:
        if self._free_for(priority) and not self._waiters[priority]:
            self._held += 1
            return True
        return False

    async def acquire(self, priority: bool) -> None:
        if self.try_acquire(priority):
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

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        policy: RetryPolicy | None = None,
        outage: Outage | None = None,
    ) -> None:
        self.engine = engine
        self.outage = outage or Outage()
        self.postgres = engine.dialect.name == "postgresql"
        # SQLite: every write unit of the store starts with a write statement, so the driver's
        # BEGIN IMMEDIATE (before that statement) takes the lock up front just as an explicit
        # BEGIN IMMEDIATE would, one statement sooner; a one-statement read needs no BEGIN.
        self._driver_begins = engine.execution_options(**DRIVER_BEGIN)
        # A unit of work (``run_unit``) may read before it writes (the quota counter):
        # on SQLite it takes the write lock before its first statement.
        self._immediate = engine.execution_options(**WRITE_OPTIONS)
        # PostgreSQL: one statement is atomic by itself, so it runs without BEGIN and
        # COMMIT (two round trips fewer). SQLite keeps explicit transactions: a thread hop,
        # not a round trip, and BEGIN IMMEDIATE is what orders writers across processes.
        self._autocommit = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self.postgres else None
        )
        self.policy = policy or RetryPolicy()
        self.statements = Statements(engine.dialect)
        # Units of work run on the driver's own connection when the libraries' private parts
        # are the ones checked (probed here, once per process); else through SQLAlchemy.
        self.driver_path = sqlalchemy_internals.usable() and (
            self.postgres or aiosqlite_internals.usable()
        )
        self.observers: list[Observer] = []
        # Called with the seconds each transaction took on its connection (each attempt,
        # gate waits left out): the database's own latency, for the metrics.
        self.timers: list[Callable[[float], None]] = []
        self._write_gate: _Gate | None = None
        self._gate: _Gate | None = None
        if engine.dialect.name == "sqlite":
            self._write_gate = _Gate(1)
        elif isinstance(engine.pool, QueuePool):
            connections = engine.pool.size() + sqlalchemy_internals.max_overflow(engine.pool)
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

        async def attempt() -> T:
            return await self._transaction(op, write=write, single=single)

        return await self._retrying(
            what, attempt, write=write, priority=priority, duplicate=duplicate
        )

    async def run_unit(
        self,
        what: str,
        op: UnitOp[T],
        *,
        write: bool,
        priority: bool = False,
        single: bool = False,
        duplicate: tuple[str, ...] = (),
    ) -> T:
        """``run`` for a unit of work written against ``Unit``: its statements run on the
        driver's connection (bot/storage/unit.py), the hot path of a turn. Same rules,
        retries and errors as ``run``."""

        async def attempt() -> T:
            return await self._unit_transaction(op, write=write, single=single)

        return await self._retrying(
            what, attempt, write=write, priority=priority, duplicate=duplicate
        )

    async def _retrying(
        self,
        what: str,
        attempt: Callable[[], Awaitable[T]],
        *,
        write: bool,
        priority: bool,
        duplicate: tuple[str, ...],
    ) -> T:
        for observe in self.observers:
            observe(what, write)
        started = time.monotonic()
        failures = 0
        with contextlib.ExitStack() as held:
            holding = False  # counted among the calls waiting through an outage

            def hold() -> None:
                nonlocal holding
                if not holding:
                    held.enter_context(self.outage.holding_call())
                    holding = True

            while True:
                try:
                    result = await self._once(
                        attempt, write=write, priority=priority, hold=(hold, started)
                    )
                except _OutOfTime:
                    raise StorageUnavailable(
                        f"{what}: database unavailable: waited {time.monotonic() - started:.0f}s "
                        f"({self.outage.error})"
                    ) from None
                except OutageFull as full:
                    raise StorageUnavailable(f"{what}: {full}") from None
                except sa_exc.IntegrityError as e:
                    self.outage.succeeded(write=write)
                    message = str(e.orig)
                    if any(marker in message for marker in duplicate):
                        raise DuplicateMessage(f"{what}: already stored: {_describe(e)}") from e
                    raise Conflict(f"{what}: constraint violated: {e.orig}") from e
                except (sa_exc.SQLAlchemyError, OSError) as e:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        # A unit of work cancelled mid-statement (shutdown) can surface as
                        # the driver's error instead (SQLAlchemy invalidates the connection,
                        # then its rollback raises PendingRollbackError): it is the
                        # cancellation, not an outage to wait out.
                        raise asyncio.CancelledError from e
                    kind = _failure_kind(e)
                    if kind is None:
                        raise StorageError(f"{what}: database error: {_describe(e)}") from e
                    failures += 1
                    outage = kind == "outage"
                    delay = self.policy.delay_after(
                        failures, time.monotonic() - started, outage=outage
                    )
                    if outage and self.policy.outage_tolerance > 0:
                        self.outage.failed(_describe(e), write=write)
                    if delay is None:
                        raise StorageUnavailable(
                            f"{what}: database unavailable after {failures} attempts: "
                            f"{_describe(e)}"
                        ) from e
                    log.debug(
                        "storage: %s failed (%s), retry %d in %.2fs",
                        what,
                        _describe(e),
                        failures,
                        delay,
                    )
                    if outage and self.outage.down:
                        try:
                            hold()
                        except OutageFull as full:
                            raise StorageUnavailable(f"{what}: {full}") from e
                        await self.outage.wait_back(delay)
                    else:
                        await asyncio.sleep(delay)
                    continue
                self.outage.succeeded(write=write)
                return result

    async def _once(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        write: bool,
        priority: bool,
        hold: tuple[Callable[[], None], float],
    ) -> T:
        gate = self._write_gate if write else None
        gate = gate or self._gate
        if gate is None:
            return await self._timed(attempt)
        await self._acquire(gate, priority, *hold)
        try:
            return await self._timed(attempt)
        finally:
            gate.release()

    async def _timed(self, attempt: Callable[[], Awaitable[T]]) -> T:
        if not self.timers:
            return await attempt()
        started = time.monotonic()
        try:
            return await attempt()
        finally:
            took = time.monotonic() - started
            for timer in self.timers:
                timer(took)

    async def _acquire(
        self, gate: _Gate, priority: bool, hold: Callable[[], None], since: float
    ) -> None:
        """Take ``gate``; a call queued there when an outage begins (behind the one trying
        the database) waits through it too: ``hold`` counts it, and tells its turn. It waits
        no longer than the tolerance (from ``since``), then raises ``_OutOfTime``."""
        if gate.try_acquire(priority):
            return
        acquiring = asyncio.ensure_future(gate.acquire(priority))
        try:
            while not acquiring.done():
                if self.outage.down:
                    hold()
                    tolerance = self.policy.outage_tolerance
                    left = max(0.0, tolerance - (time.monotonic() - since)) if tolerance else None
                    try:
                        async with asyncio.timeout(left):
                            await asyncio.shield(acquiring)
                    except TimeoutError:
                        raise _OutOfTime from None
                    break
                down = asyncio.ensure_future(self.outage.wait_down())
                try:
                    await asyncio.wait({acquiring, down}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    down.cancel()
            acquiring.result()
        except BaseException:
            if acquiring.done() and not acquiring.cancelled() and acquiring.exception() is None:
                gate.release()  # granted as we gave up: hand it on
            else:
                acquiring.cancel()
            raise

    async def _transaction(self, op: Op[T], *, write: bool, single: bool) -> T:
        if single and self._autocommit is not None:
            async with self._autocommit.connect() as conn:
                return await op(conn)
        engine = self._driver_begins if write or single else self.engine
        async with engine.connect() as conn, conn.begin():
            return await op(conn)

    async def _unit_transaction(self, op: UnitOp[T], *, write: bool, single: bool) -> T:
        """One transaction on the driver's connection. SQLite: the whole unit runs in the
        connection's thread; a write unit begins IMMEDIATE before its first statement (it may
        read first), a read of several statements begins one itself, a single read needs
        none. PostgreSQL: BEGIN and COMMIT unless single. Without the driver path: the
        same transactions, their statements through SQLAlchemy."""
        if not self.driver_path:

            async def core(conn: AsyncConnection) -> T:
                return await op(Unit(CoreDriver(conn), self.statements, postgres=self.postgres))

            if write and not self.postgres:
                async with self._immediate.connect() as conn, conn.begin():
                    return await core(conn)
            return await self._transaction(core, write=write, single=single)
        async with self.engine.connect() as conn:
            fairy = await conn.get_raw_connection()
            driver: Any = fairy.driver_connection
            try:
                if self.postgres:
                    unit = Unit(PostgresDriver(driver), self.statements, postgres=True)
                    if single:
                        return await op(unit)
                    async with driver.transaction():
                        return await op(unit)

                def whole(sqlite: sqlite3.Connection) -> T:
                    unit = Unit(SqliteDriver(sqlite), self.statements, postgres=False)
                    if write:
                        sqlite.execute("BEGIN IMMEDIATE")
                    elif not single:
                        sqlite.execute("BEGIN")
                    try:
                        result = in_thread(op(unit))
                        if sqlite.in_transaction:
                            sqlite.commit()
                        return result
                    except BaseException:
                        if sqlite.in_transaction:
                            sqlite.rollback()
                        raise

                return await aiosqlite_internals.run_in_thread(driver, whole)
            except Exception as e:
                error = self._translated(e, fairy)
                if isinstance(error, OSError) or (
                    isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated
                ):
                    # As SQLAlchemy does on a disconnect: this connection is dropped, and
                    # the pool's older ones are replaced as they are next checked out.
                    sqlalchemy_internals.invalidate_older(self.engine.sync_engine.pool, fairy, e)
                    await conn.invalidate(e)
                if error is e:
                    raise
                raise error from e

    def _translated(self, e: Exception, fairy: Any) -> Exception:
        """A driver's error as SQLAlchemy would have raised it (``DBAPIError`` subclasses,
        ``connection_invalidated`` set on a disconnect); other errors as they are."""
        if isinstance(e, SeedBotError):
            return e  # the unit's own (no such turn…), not the driver's
        dialect = self.engine.dialect
        dbapi = dialect.loaded_dbapi
        orig: Exception = e
        if not isinstance(e, dbapi.Error):
            mapped = sqlalchemy_internals.as_dbapi_error(fairy, e, dbapi.Error)
            if not isinstance(mapped, dbapi.Error):
                return e
            orig = mapped
        invalidated = dialect.is_disconnect(orig, fairy.dbapi_connection, None)  # type: ignore[arg-type]
        return sa_exc.DBAPIError.instance(
            None, None, orig, dbapi.Error, connection_invalidated=invalidated
        )


def _describe(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    return f"{type(orig or e).__name__}: {orig or e}".splitlines()[0]


def _failure_kind(e: BaseException) -> str | None:
    """``"outage"`` when the database is unreachable (or busy) for now, ``"conflict"`` when
    the transaction lost a race worth another try, ``None`` when trying again cannot help."""
    if isinstance(e, OSError | TimeoutError | sa_exc.TimeoutError):
        return "outage"  # connection refused or reset, a timeout; pool exhausted
    if isinstance(e, sa_exc.PendingRollbackError):
        return "outage"  # the connection was lost mid-transaction
    if isinstance(e, sa_exc.DBAPIError):
        if e.connection_invalidated:
            return "outage"
        orig = e.orig
        if isinstance(orig, OSError | TimeoutError):
            return "outage"
        message = str(orig).lower()
        if "database is locked" in message or "database is busy" in message:
            return "outage"
        if "connection was closed" in message or "connection is closed" in message:
            return "outage"
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if isinstance(sqlstate, str):
            if sqlstate in _OUTAGE_SQLSTATES or sqlstate.startswith("08"):
                return "outage"
            if sqlstate in _CONFLICT_SQLSTATES:
                return "conflict"
    return None


def now_utc() -> datetime:
    return datetime.now(UTC)
