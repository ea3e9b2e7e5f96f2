"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Integer
from sqlalchemy.engine import Dialect
from sqlalchemy.types import DateTime, TypeDecorator

# SQLite only auto-increments an ``INTEGER PRIMARY KEY`` (the rowid alias), so the 64-bit type
# is spelt INTEGER there; SQLite integers are 64-bit anyway.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL keeps ``timestamptz``. SQLite has no time zones: SQLAlchemy would silently drop
    ``tzinfo`` and hand back naive values, so we store naive UTC (whose fixed-width text form
    sorts chronologically) and re-attach UTC on the way out. Naive input is refused rather
    than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: storage takes timezone-aware values")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# PostgreSQL's text cannot hold a NUL ('invalid byte sequence for encoding "UTF8": 0x00') and
# its jsonb refuses the escape \u0000, while SQLite stores both. So no stored text carries
# one, on either database (both store the same): every string a statement is given has each
# NUL replaced by U+FFFD, the replacement character. Unlike dropping it, that keeps the
# text's length and leaves a visible mark where something unstorable was, without joining
# the words on either side. The rule is applied where parameters go to the driver (both
# paths: bot/storage/engine.py, bot/storage/unit.py), so it covers every column, present and
# future, and raw SQL too; JSON text gets it where it is written (``engine.json_text``).
NUL = "\x00"
NUL_REPLACEMENT = "\ufffd"


def without_nul(value: str) -> str:
    return value.replace(NUL, NUL_REPLACEMENT) if NUL in value else value


def arguments_without_nul(arguments: Any) -> Any:
    """A statement's parameters (a sequence or a mapping) with no NUL in their strings; the
    same object when there is none, which is nearly always."""
    if isinstance(arguments, Mapping):
        if any(isinstance(v, str) and NUL in v for v in arguments.values()):
            return {k: _clean(v) for k, v in arguments.items()}
        return arguments
    if isinstance(arguments, Sequence) and any(isinstance(v, str) and NUL in v for v in arguments):
        cleaned = [_clean(v) for v in arguments]
        return tuple(cleaned) if isinstance(arguments, tuple) else cleaned
    return arguments


def _clean(value: object) -> object:
    return without_nul(value) if isinstance(value, str) else value
