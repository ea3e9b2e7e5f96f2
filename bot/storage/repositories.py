"""The repositories of one database, each the port of its aggregate (conversations, turns,
settings, usage, costs, interactions, privacy), built over one shared transaction helper.
The entry point hands each consumer exactly the ports it uses; the bundle has no methods
of its own, so a store change is made once, in its repository. The caller owns the engine
and disposes of it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.outage import Outage
from bot.storage.conversations import SqlConversations
from bot.storage.costs import SqlCosts
from bot.storage.database import Database, RetryPolicy
from bot.storage.interactions import SqlInteractions
from bot.storage.privacy import SqlPrivacy
from bot.storage.settings import SqlSettings
from bot.storage.turns import SqlTurns
from bot.storage.usage import SqlUsage


@dataclass(frozen=True)
class Repositories:
    db: Database
    conversations: SqlConversations
    turns: SqlTurns
    settings: SqlSettings
    usage: SqlUsage
    costs: SqlCosts
    interactions: SqlInteractions
    privacy: SqlPrivacy

    @property
    def outage(self) -> Outage:
        return self.db.outage


def sql_repositories(
    engine: AsyncEngine,
    *,
    retries: int = 3,
    retry_delay: float = 0.05,
    outage_tolerance: float = 0.0,
    outage: Outage | None = None,
    history_tokens: int | None = None,
) -> Repositories:
    """The repositories over ``engine``. Transient failures (SQLite busy past its timeout,
    lost connections, PostgreSQL serialisation failures) are retried ``retries`` times with
    exponential backoff from ``retry_delay`` seconds, then raised as ``StorageUnavailable``;
    an unreachable database is ridden out for ``outage_tolerance`` seconds first (``outage``
    tells the story). Anything else the database raises becomes ``StorageError``. A turn's
    context holds at most ``history_tokens`` of history (the newest whole turns: the
    context budget; None reads the whole epoch)."""
    policy = RetryPolicy(retries=retries, delay=retry_delay, outage_tolerance=outage_tolerance)
    db = Database(engine, policy=policy, outage=outage)
    return Repositories(
        db=db,
        conversations=SqlConversations(db, history_tokens=history_tokens),
        turns=SqlTurns(db),
        settings=SqlSettings(db),
        usage=SqlUsage(db),
        costs=SqlCosts(db),
        interactions=SqlInteractions(db),
        privacy=SqlPrivacy(db),
    )
