"""SQLAlchemy's private parts, named here only. The driver path of a unit of work
(``Database.run_unit`` on the DBAPI driver's own connection, ``bot/storage/unit.py``) needs
three: the pool's ``_invalidate`` (a disconnect retires the pool's older connections, as
SQLAlchemy does for its own statements), the async adapters' ``_handle_exception`` (a
driver's error mapped to the DBAPI error SQLAlchemy would raise), and ``QueuePool``'s
``_max_overflow`` (how many connections the pool may open, for the priority gate).

When :func:`usable` is False (see ``bot/internals.py``) units of work run through
SQLAlchemy's public API (``AsyncConnection.execute``), which translates and invalidates by
itself, and the gate counts the pool's ``size()`` only.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any

from sqlalchemy.pool import Pool
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.compiler import ExpandedState, SQLCompiler

from bot.internals import Checked, probe

#: The releases the probe was checked against; pyproject.toml bounds SQLAlchemy so too.
CHECKED = Checked("sqlalchemy", (2, 0, 30), (2, 2))

# The async adapters' connection classes, by module: their ``_handle_exception``.
_ADAPTERS = (
    ("sqlalchemy.dialects.postgresql.asyncpg", "AsyncAdapt_asyncpg_connection"),
    ("sqlalchemy.dialects.sqlite.aiosqlite", "AsyncAdapt_aiosqlite_connection"),
)

#: The numeric types' common base (2.1 made ``Float`` no ``Numeric``; 2.0 has no such base).
NUMERIC: type[Any] = getattr(sqltypes, "NumericCommon", sqltypes.Numeric)


def problem() -> str | None:
    """What the driver path needs and this SQLAlchemy lacks, or None."""
    invalidate = getattr(Pool, "_invalidate", None)
    if not callable(invalidate) or "_checkin" not in inspect.signature(invalidate).parameters:
        return "Pool._invalidate(connection, exception, _checkin) is gone"
    for module, name in _ADAPTERS:
        try:
            adapter = getattr(importlib.import_module(module), name, None)
        except ImportError as e:
            return f"{module} cannot be imported ({e})"
        if not callable(getattr(adapter, "_handle_exception", None)):
            return f"{module}.{name}._handle_exception is gone"
    if not callable(getattr(SQLCompiler, "construct_expanded_state", None)):
        return "SQLCompiler.construct_expanded_state is gone"
    if not {"statement", "positiontup", "processors", "parameters"} <= set(
        getattr(ExpandedState, "_fields", ())
    ):
        return "ExpandedState lacks statement, positiontup, processors or parameters"
    return None


@functools.cache
def usable() -> bool:
    """Whether units of work may run on the driver's connection (probed once, at start-up)."""
    return probe(
        "sqlalchemy", CHECKED, problem, fallback="units of work run through its public API (slower)"
    )


def max_overflow(pool: Pool) -> int:
    """How many connections ``pool`` opens beyond its size (0 when that cannot be known)."""
    value = getattr(pool, "_max_overflow", None) if usable() else None
    return max(0, value) if isinstance(value, int) else 0


def invalidate_older(pool: Pool, fairy: Any, error: BaseException) -> None:
    """After a disconnect on ``fairy`` (a checked-out connection): the pool's connections
    older than now are replaced as they are next checked out. Only when :func:`usable`."""
    pool._invalidate(fairy, error, _checkin=False)


def as_dbapi_error(fairy: Any, error: Exception, dbapi_error: type[Exception]) -> Exception:
    """``error`` (a driver's) as the adapter maps it to a ``dbapi_error``; ``error`` itself
    when the adapter does not map it (it raises it again). Only when :func:`usable`."""
    try:
        fairy.dbapi_connection._handle_exception(error)
    except dbapi_error as mapped:
        return mapped
    except type(error) as same:
        return same
    return error
