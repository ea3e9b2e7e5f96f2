"""Engine setup: SQLite pragmas, transaction control and owner-only files, PostgreSQL pool
settings, and the NUL rule (bot/storage/types.py) on every statement's parameters."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import stat
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState

from bot.domain import jsontext
from bot.storage.types import NUL_REPLACEMENT, arguments_without_nul

log = logging.getLogger(__name__)

# Execution option read by the ``begin`` hook: how a SQLite transaction starts.
SQLITE_BEGIN = "seed_bot_sqlite_begin"
# A write transaction takes SQLite's write lock up front (BEGIN IMMEDIATE). A deferred
# transaction that reads and then writes cannot wait for the lock in WAL mode once another
# writer committed after its snapshot: SQLite fails it at once with "database is locked",
# busy_timeout notwithstanding. Taking the lock first makes writers queue on busy_timeout.
WRITE_OPTIONS: dict[str, Any] = {SQLITE_BEGIN: "IMMEDIATE"}
# No BEGIN statement: the driver begins IMMEDIATE by itself right before the first write
# statement (INSERT, UPDATE, DELETE), and a read alone runs outside a transaction. For units
# of work that write first, or read one statement only, this is the same transaction as
# above minus one statement (three aiosqlite thread hops).
DRIVER_BEGIN: dict[str, Any] = {SQLITE_BEGIN: "DRIVER"}

_BEGIN_MODES = frozenset({"DEFERRED", "IMMEDIATE", "EXCLUSIVE", "DRIVER"})

DEFAULT_BUSY_TIMEOUT_MS = 5000

# asyncpg prepares every statement, and after five runs PostgreSQL may switch a prepared
# statement to a generic plan that it then keeps for the connection's life. One chosen while
# the tables were small (a new deployment) can be a disaster later: history() planned as a
# loop over turns with a scan of messages inside took 130 ms for a 1,000-turn conversation
# instead of 9 ms. Our queries are small and cheap to plan, so plan each with its values.
POSTGRES_SETTINGS = {"plan_cache_mode": "force_custom_plan"}
POSTGRES_CONNECT_TIMEOUT = 10.0


# A \u0000 escape in JSON text (see ``without_nul``): preceded by an even number of
# backslashes, each pair an escaped backslash, and not by an escaped "\" then "u0000".
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def json_text(value: object) -> str:
    """The engine's ``json_serializer``: the domain's JSON text (a ``RawJson`` as it is),
    with a NUL in its strings replaced as in any other stored text (``without_nul``)."""
    text = jsontext.dumps(value).decode()
    if "\\u0000" in text:
        text = _JSON_NUL.sub(r"\1" + NUL_REPLACEMENT, text)  # the character, as orjson writes
    return text


def _store_no_nul(engine: AsyncEngine) -> None:
    """Every statement run through SQLAlchemy (the units of work's lean path applies the
    same rule itself: bot/storage/unit.py)."""

    @event.listens_for(engine.sync_engine, "before_cursor_execute", retval=True)
    def _before(
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> tuple[str, Any]:
        if executemany:
            return statement, [arguments_without_nul(row) for row in parameters]
        return statement, arguments_without_nul(parameters)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or ``None`` for in-memory and URI databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    if parsed.query.get("mode") == "memory":
        return None
    return Path(database)


def create_engine(
    url: str, *, echo: bool = False, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
) -> AsyncEngine:
    """An async engine for ``url`` (``sqlite+aiosqlite:///…`` or ``postgresql+asyncpg://…``).

    SQLite gets WAL, foreign keys, ``busy_timeout`` and ``synchronous=NORMAL`` on every
    connection, and SQLAlchemy, not the driver, emits BEGIN: deferred for reads, IMMEDIATE on
    engines derived with ``engine.execution_options(**WRITE_OPTIONS)``. The directory of a
    SQLite file is created when missing. JSON columns are written by ``json_text`` (so a
    ``RawJson`` is stored as the text it holds). Nothing connects until first use.
    """
    if is_sqlite(url):
        engine = _sqlite_engine(url, echo=echo, busy_timeout_ms=busy_timeout_ms)
    else:
        engine = _postgres_engine(url, echo=echo)
    _store_no_nul(engine)
    return engine


def _postgres_engine(url: str, *, echo: bool) -> AsyncEngine:
    return create_async_engine(
        url,
        echo=echo,
        json_serializer=json_text,
        # No pre-ping (a round trip before every unit of work): a connection lost to a
        # PostgreSQL restart fails its first statement as "connection invalidated", which
        # invalidates the whole pool and is retried by the store (bot/storage/database.py).
        # asyncpg waits 60 s for a connection by default; fail over to our retries sooner.
        connect_args={"server_settings": POSTGRES_SETTINGS, "timeout": POSTGRES_CONNECT_TIMEOUT},
    )


def _sqlite_engine(url: str, *, echo: bool, busy_timeout_ms: int) -> AsyncEngine:
    path = sqlite_path(url)
    if path is not None:
        _owner_only_database(path)
    # No rollback when a connection goes back to the pool unless a transaction is open:
    # every unit of work ends its own transaction, so the pool's blanket rollback would only
    # cost one more thread hop per unit of work (the reset hook below does the rest).
    engine = create_async_engine(
        url, echo=echo, json_serializer=json_text, pool_reset_on_return=None
    )

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(
        dbapi_connection: Any, record: ConnectionPoolEntry, state: PoolResetState
    ) -> None:
        driver = record.driver_connection  # aiosqlite's: in_transaction reads a flag
        if state.asyncio_safe and not state.terminate_only and driver and driver.in_transaction:
            dbapi_connection.rollback()

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # BEGIN is emitted by the begin hook below, except in DRIVER mode, where the driver
        # emits BEGIN IMMEDIATE before the first write statement.
        dbapi_connection.isolation_level = "IMMEDIATE"
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            _use_wal(cursor)
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # The driver's own transaction control begins only before DML, so SELECTs would run
        # outside any transaction and DDL would autocommit; emit BEGIN ourselves instead
        # (unless asked to leave it to the driver).
        mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        if mode not in _BEGIN_MODES:
            raise ValueError(f"unknown SQLite BEGIN mode {mode!r}")
        if mode != "DRIVER":
            conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


# The database holds every conversation: its file, and the WAL and shared-memory files SQLite
# keeps beside it, are the owner's alone, whatever the process umask.
OWNER_ONLY_DIRECTORY = 0o700
OWNER_ONLY_FILE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _owner_only_database(path: Path) -> None:
    """Prepare a SQLite file's place so that only its owner can read it.

    The directories missing on the way are created owner-only (0700). A directory that
    exists is left as it is: it may be shared (a working directory, a volume), and the files
    in it are protected by their own modes. The database file is created owner-only (0600)
    before SQLite opens it, which SQLite then gives its WAL and shared-memory files too. Our
    own files that an older version (or a loose umask) left readable by others are made
    owner-only, with a warning.
    """
    _make_owner_only_directories(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY_FILE)
    except FileExistsError:
        pass  # an existing database (or another process just made it): checked below
    else:
        try:
            os.fchmod(fd, OWNER_ONLY_FILE)  # the umask may have taken more than group/other
        finally:
            os.close(fd)
    for file in (path, *(path.with_name(path.name + side) for side in SQLITE_SIDE_FILES)):
        _restrict(file)


def _make_owner_only_directories(directory: Path) -> None:
    missing = []
    while not directory.exists():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=OWNER_ONLY_DIRECTORY)
        except FileExistsError:
            continue  # made meanwhile by another process, which chose its mode
        created.chmod(OWNER_ONLY_DIRECTORY)  # mkdir's mode is filtered by the umask


def _restrict(file: Path) -> None:
    try:
        info = file.stat()
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077 or not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        return
    try:
        file.chmod(mode & 0o700)
    except OSError as e:
        log.warning("database file %s is readable by others and stays so: %s", file, e)
        return
    log.warning(
        "database file %s was open to other users (mode %o): made owner-only (%o)",
        file,
        mode,
        mode & 0o700,
    )


def _use_wal(cursor: Any) -> None:
    """Switch the database file to WAL (a property of the file: only a new one switches)."""
    cursor.execute("PRAGMA journal_mode")
    if str(cursor.fetchone()[0]).lower() == "wal":
        return
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as e:
        # Switching needs the file to itself, and SQLite refuses at once, without waiting,
        # while another connection uses it: typically another one switching the same new
        # file. This connection works in the old mode meanwhile; a later one switches.
        if "locked" not in str(e) and "busy" not in str(e):
            raise
        log.debug("SQLite journal mode not switched to WAL yet: %s", e)
