"""Statements run on the driver's own connection: the lean path a turn's units of work take.

The statements are still written with SQLAlchemy Core, against the tables the migrations
are checked against. Each is compiled once per dialect (``Prepared``): its SQL text, the
order of its parameters, and its types' own bind and result processors, taken from
SQLAlchemy, so a value is written and read back exactly as SQLAlchemy would. Executing it
is then a call on the DBAPI driver's connection with a tuple of arguments, with no
per-statement execution context, parameter dictionary or result object: on asyncpg one
query; on SQLite a plain sqlite3 call, the whole unit of work running in aiosqlite's thread
(one hand-off for the unit, where SQLAlchemy's adapter makes four per statement: cursor,
execute, fetch, close). ``Database.run_unit`` owns the transaction and the
translation of driver errors into SQLAlchemy's, so retries and outages work as they do for
the Core path.
"""

from __future__ import annotations

import collections
import sqlite3
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.types import TypeEngine

from bot.domain.cache import Lru
from bot.storage.sqlalchemy_internals import NUMERIC
from bot.storage.types import NUL, without_nul

T = TypeVar("T")
STATEMENTS_CACHED = 256
# The arguments a statement takes: by the names of its ``bindparam``s.
Params = Mapping[str, Any]
_Processor = Callable[[Any], Any]


class Prepared:
    """One Core statement compiled for one dialect, ready to run on the driver."""

    __slots__ = ("_plan", "_results", "_row", "columns", "sql")

    def __init__(
        self,
        statement: ClauseElement,
        dialect: Dialect,
        column_keys: Sequence[str] | None = None,
    ) -> None:
        # ``column_keys``: the columns an INSERT without ``values()`` is given (its
        # parameters are then named after them).
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        if not isinstance(compiled, SQLCompiler):
            raise TypeError(f"not a SQL statement: {statement!r}")
        required = {name: None for name, bind in compiled.binds.items() if bind.required}
        # Expands IN lists of constants into one parameter per value, as execution would.
        expanded = compiled.construct_expanded_state(required)
        self.sql: str = expanded.statement
        processors: dict[str, _Processor | None] = {
            name: _bind_processor(bind.type, dialect) for name, bind in compiled.binds.items()
        }
        processors.update(expanded.processors)
        plan: list[tuple[str, bool, Any]] = []
        for name in expanded.positiontup or ():
            process = processors.get(name)
            if name in required:
                plan.append((name, True, process))
            else:  # a constant of the statement: processed once, here
                value = expanded.parameters[name]
                value = value if process is None else process(value)
                plan.append((name, False, without_nul(value) if isinstance(value, str) else value))
        self._plan = tuple(plan)
        columns = list(getattr(statement, "exported_columns", ()))
        names = tuple(column.key for column in columns)
        if any(name is None for name in names):
            raise ValueError(f"label every column of {self.sql!r}")
        self.columns: tuple[str, ...] = tuple(str(name) for name in names)
        results = tuple(_result_processor(column.type, dialect) for column in columns)
        self._results = results if any(p is not None for p in results) else None
        self._row: Any = collections.namedtuple("Row", self.columns) if self.columns else None

    def arguments(self, params: Params) -> tuple[Any, ...]:
        """The positional arguments for ``params`` (every required name must be given)."""
        out = []
        for name, needed, process_or_value in self._plan:
            if not needed:
                out.append(process_or_value)
                continue
            value = params[name]
            if process_or_value is not None:
                value = process_or_value(value)
            if isinstance(value, str) and NUL in value:
                value = without_nul(value)  # the storage rule for text (bot/storage/types.py)
            out.append(value)
        return tuple(out)

    def values(self, raw: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
        """The driver's rows with the result processors applied, as plain sequences."""
        results = self._results
        if results is None:
            return list(raw)
        return [
            tuple(v if p is None else p(v) for p, v in zip(results, row, strict=True))
            for row in raw
        ]

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[Any]:
        """The driver's rows as named tuples (attribute access by column key)."""
        if self._row is None:
            return []
        make = self._row._make
        return [make(row) for row in self.values(raw)]


def _bind_processor(type_: TypeEngine[Any], dialect: Dialect) -> _Processor | None:
    return type_.dialect_impl(dialect).bind_processor(dialect)


def _result_processor(type_: TypeEngine[Any], dialect: Dialect) -> _Processor | None:
    impl = type_.dialect_impl(dialect)
    if isinstance(impl, NUMERIC) and not impl.asdecimal:
        return None  # both drivers hand back floats for floats
    return impl.result_processor(dialect, None)


# A statement's identity, and the columns it was compiled for (an INSERT without values).
_Key = tuple[int, tuple[str, ...] | None]


class Statements:
    """The prepared form of each statement, made on first use and kept. The store's
    statements are module or instance constants (a few dozen); the bound only matters for
    a caller that builds statements per call, which then pays a compile each time."""

    def __init__(self, dialect: Dialect, size: int = STATEMENTS_CACHED) -> None:
        self._dialect = dialect
        # Each entry holds its statement, so the id it is found by is not reused meanwhile.
        self._prepared: Lru[_Key, tuple[ClauseElement, Prepared]] = Lru(size)
        # SQLite units run in their connections' threads, several at once.
        self._lock = threading.Lock()

    def get(self, statement: ClauseElement, column_keys: tuple[str, ...] | None = None) -> Prepared:
        key = (id(statement), column_keys)
        with self._lock:
            held = self._prepared.get(key)
        if held is None:
            held = (statement, Prepared(statement, self._dialect, column_keys))
            with self._lock:
                self._prepared.put(key, held)
        return held[1]


class Driver(Protocol):
    """What a unit of work needs of the driver connection (adapters below)."""

    async def fetch(self, sql: str, args: tuple[Any, ...]) -> Sequence[Sequence[Any]]: ...

    async def many(self, sql: str, args: list[tuple[Any, ...]]) -> None: ...


class SqliteDriver:
    """sqlite3, called directly. Only inside ``in_thread``: the whole unit of work runs in
    aiosqlite's thread (the connection's own), one hand-off for all its statements."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, args: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        return self._conn.execute(sql, args).fetchall()

    async def many(self, sql: str, args: list[tuple[Any, ...]]) -> None:
        self._conn.executemany(sql, args)


def in_thread(unit_of_work: Coroutine[Any, Any, T]) -> T:
    """Run ``unit_of_work`` to its end in this thread. Its statements go to a
    ``SqliteDriver``, which never suspends, so the coroutine finishes without yielding;
    one that awaits anything else (a timer, the network) is a programming error."""
    try:
        unit_of_work.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    unit_of_work.close()
    raise RuntimeError("a SQLite unit of work awaited something other than its statements")


class PostgresDriver:
    """asyncpg: one query per call (its own statement cache prepares each text once)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch(self, sql: str, args: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        return list(await self._conn.fetch(sql, *args))

    async def many(self, sql: str, args: list[tuple[Any, ...]]) -> None:
        await self._conn.executemany(sql, args)


class CoreDriver:
    """SQLAlchemy's public API, the fallback when a library's probe failed (bot/internals.py):
    the same SQL and arguments through ``AsyncConnection.exec_driver_sql``, which translates
    errors and invalidates on a disconnect by itself. Slower (an execution context and a
    result per statement, on SQLite four thread hand-offs), the same rows."""

    __slots__ = ("_conn",)

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, args: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        result = await self._conn.exec_driver_sql(sql, args)
        return list(result.all()) if result.returns_rows else []

    async def many(self, sql: str, args: list[tuple[Any, ...]]) -> None:
        await self._conn.exec_driver_sql(sql, args)


class Unit:
    """One unit of work's statements, on one driver connection inside the transaction
    ``Database.run_unit`` opened. Statements are Core constructs whose every value is a
    ``bindparam`` or a constant; ``params`` name the ``bindparam``s."""

    __slots__ = ("_driver", "_statements", "postgres")

    def __init__(self, driver: Driver, statements: Statements, *, postgres: bool) -> None:
        self._driver = driver
        self._statements = statements
        self.postgres = postgres

    async def rows(self, statement: ClauseElement, params: Params) -> list[Any]:
        """Every row, as named tuples."""
        prepared = self._statements.get(statement)
        return prepared.rows(await self._driver.fetch(prepared.sql, prepared.arguments(params)))

    async def values(self, statement: ClauseElement, params: Params) -> list[Sequence[Any]]:
        """Every row, as plain sequences (cheaper for many rows read by position)."""
        prepared = self._statements.get(statement)
        return prepared.values(await self._driver.fetch(prepared.sql, prepared.arguments(params)))

    async def first(self, statement: ClauseElement, params: Params) -> Any | None:
        """The first row as a named tuple, or ``None``."""
        rows = await self.rows(statement, params)
        return rows[0] if rows else None

    async def scalar(self, statement: ClauseElement, params: Params) -> Any | None:
        """The first column of the first row, or ``None``."""
        rows = await self.values(statement, params)
        return rows[0][0] if rows else None

    async def execute(self, statement: ClauseElement, params: Params) -> None:
        prepared = self._statements.get(statement)
        await self._driver.fetch(prepared.sql, prepared.arguments(params))

    async def insert(self, statement: ClauseElement, params: Params) -> Any | None:
        """An INSERT without ``values()`` of the columns ``params`` names; its first
        RETURNING value, if it has any."""
        prepared = self._statements.get(statement, tuple(params))
        rows = await self._driver.fetch(prepared.sql, prepared.arguments(params))
        return prepared.values(rows)[0][0] if rows else None

    async def insert_many(self, statement: ClauseElement, params: Sequence[Params]) -> None:
        """An INSERT without ``values()`` of several rows, each naming the same columns."""
        if not params:
            return
        prepared = self._statements.get(statement, tuple(params[0]))
        await self._driver.many(prepared.sql, [prepared.arguments(p) for p in params])
