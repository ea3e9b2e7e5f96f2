"""aiosqlite's private parts, named here only: running a function in a connection's own
thread (``Connection._execute``, as aiosqlite's own ``execute`` and ``commit`` do) on the
``sqlite3`` connection behind it (``Connection._conn``).

``Database.run_unit`` runs a whole SQLite unit of work so: one hand-off to the thread for all
its statements, where the public API makes one per call. When :func:`usable` is False (see
``bot/internals.py``) the unit runs through SQLAlchemy's public API instead.
"""

from __future__ import annotations

import functools
import inspect
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import aiosqlite

from bot.internals import Checked, probe

T = TypeVar("T")

#: The releases the probe was checked against; pyproject.toml bounds aiosqlite so too.
CHECKED = Checked("aiosqlite", (0, 20), (0, 23))


def problem() -> str | None:
    """What this module reaches into and this aiosqlite lacks, or None."""
    execute = getattr(aiosqlite.Connection, "_execute", None)
    if not inspect.iscoroutinefunction(execute):
        return "aiosqlite.Connection._execute is not a coroutine function"
    parameters = list(inspect.signature(execute).parameters.values())
    if len(parameters) < 2 or parameters[1].name != "fn":
        return "aiosqlite.Connection._execute does not take a function first"
    if not isinstance(inspect.getattr_static(aiosqlite.Connection, "_conn", None), property):
        return "aiosqlite.Connection._conn is not a property"
    return None


@functools.cache
def usable() -> bool:
    """Whether to run units of work in aiosqlite's thread (probed once, at start-up)."""
    return probe(
        "aiosqlite",
        CHECKED,
        problem,
        fallback="units of work run through SQLAlchemy's public API (slower)",
    )


async def run_in_thread(connection: Any, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn(the sqlite3 connection)`` run in ``connection``'s (an ``aiosqlite.Connection``)
    own thread, queued behind its other calls. Only when :func:`usable`."""

    def call() -> T:
        return fn(connection._conn)

    return await connection._execute(call)  # type: ignore[no-any-return]
