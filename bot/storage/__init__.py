"""Persistence: SQLAlchemy tables, engine setup, the repositories implementing the domain's
store ports (one per aggregate), and Alembic migration helpers."""

from bot.storage.engine import create_engine
from bot.storage.repositories import Repositories, sql_repositories

__all__ = ["Repositories", "create_engine", "sql_repositories"]
