"""Persistence: SQLAlchemy tables, engine setup, the repository implementing the domain's
store protocols, and Alembic migration helpers."""

from bot.storage.engine import create_engine
from bot.storage.repository import SqlStore

__all__ = ["SqlStore", "create_engine"]
