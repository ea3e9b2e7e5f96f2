"""INSERT … ON CONFLICT, which SQLAlchemy builds per dialect (``sqlite.insert``,
``postgresql.insert``): the one place the choice between the two is made."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

S = TypeVar("S")
Insert = sqlite.Insert | postgresql.Insert
MakeInsert = Callable[[Table], Insert]


def insert_for(postgres: bool) -> MakeInsert:
    """The dialect's ``insert``, for a statement built per call."""
    return postgresql.insert if postgres else sqlite.insert


class PerDialect(Generic[S]):
    """A statement built once for each dialect by ``build`` (given the dialect's
    ``insert``); ``on`` picks the one a unit or the database runs on."""

    __slots__ = ("_built",)

    def __init__(self, build: Callable[[MakeInsert], S]) -> None:
        self._built = (build(insert_for(False)), build(insert_for(True)))

    def on(self, postgres: bool) -> S:
        return self._built[postgres]
