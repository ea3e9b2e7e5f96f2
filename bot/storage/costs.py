"""Turn costs: the SQL ``CostStore`` (reservations and settled costs of turns, the budgets'
spending) and the operator's report, shared by every process using the database."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import (
    ColumnElement,
    String,
    cast,
    delete,
    desc,
    false,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.costs import (
    RESERVATION_TTL,
    Budget,
    Cost,
    Reservation,
    Settlement,
    SpendFilter,
    Spending,
)
from bot.storage.database import Database
from bot.storage.tables import turn_costs
from bot.storage.usage import advisory_lock_id

ReportBy = Literal["guild", "user", "day"]
# Float sums of many small costs: a budget is exceeded by more than rounding noise.
_EPSILON_USD = 1e-9

c = turn_costs.c


def _selecting(counts: SpendFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if counts.user_id is not None:
        where.append(c.user_id == counts.user_id)
    if counts.guild_id is not None:
        where.append(c.guild_id == counts.guild_id)
    if counts.scope_id is not None:
        where.append(c.scope_id == counts.scope_id)
    return where


def _counting(budget: Budget, now: datetime) -> list[ColumnElement[bool]]:
    """What a budget counts: settled costs and live reservations since its period began."""
    live = or_(c.settled == true(), c.at > now - RESERVATION_TTL)
    return [*_selecting(budget.counts), c.at >= budget.since, live]


def _totals(turns: int | None, units: int | None, usd: float | None) -> Spending:
    return Spending(int(turns or 0), int(units or 0), float(usd or 0.0))


@dataclass(frozen=True, slots=True)
class StoredCost:
    """A turn's row: its cost so far (the reservation's worst case until ``settled``)."""

    units: int
    usd: float
    estimated: bool
    settled: bool
    input_tokens: int


class SqlCosts:
    """``CostStore`` on the shared transaction helper."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def reserve(
        self, reservation: Reservation, budgets: Sequence[Budget], *, now: datetime
    ) -> Budget | None:
        payer = reservation.payer

        async def op(conn: AsyncConnection) -> Budget | None:
            if self._db.postgres and budgets:
                # Two processes reserving against one budget take turns (SQLite's write
                # lock already serialises every writer); locks in one global order.
                locks = sorted({advisory_lock_id(b.key) for b in budgets})
                await conn.execute(select(*(func.pg_advisory_xact_lock(i) for i in locks)))
            # A turn submitted again (a restart before its request reached fal) holds one
            # reservation, not two.
            await conn.execute(delete(turn_costs).where(c.turn_id == reservation.turn_id))
            for budget in budgets:
                spent = await conn.scalar(
                    select(func.coalesce(func.sum(c.usd), 0.0)).where(*_counting(budget, now))
                )
                if float(spent or 0.0) + reservation.usd > budget.limit_usd + _EPSILON_USD:
                    return budget
            await conn.execute(
                insert(turn_costs).values(
                    turn_id=reservation.turn_id,
                    user_id=payer.user_id,
                    guild_id=payer.guild_id,
                    scope_id=payer.scope_id,
                    at=reservation.at,
                    input_tokens=reservation.input_tokens,
                    units=reservation.units,
                    usd=reservation.usd,
                    estimated=True,
                    settled=False,
                )
            )
            return None

        return await self._db.run("reserve_cost", op, write=True)

    async def spent(self, budgets: Sequence[Budget], *, now: datetime) -> list[float]:
        async def op(conn: AsyncConnection) -> list[float]:
            out = []
            for budget in budgets:
                spent = await conn.scalar(
                    select(func.coalesce(func.sum(c.usd), 0.0)).where(*_counting(budget, now))
                )
                out.append(float(spent or 0.0))
            return out

        return await self._db.run("budget_spent", op, write=False)

    async def settle(self, turn_id: int, settlement: Settlement) -> Cost | None:
        async def op(conn: AsyncConnection) -> Cost | None:
            input_tokens = await conn.scalar(
                update(turn_costs)
                .where(c.turn_id == turn_id, c.settled == false())
                .values(settled=True)
                .returning(c.input_tokens)
            )
            if input_tokens is None:
                return None
            cost = settlement(int(input_tokens))
            await conn.execute(
                update(turn_costs)
                .where(c.turn_id == turn_id)
                .values(units=cost.units, usd=cost.usd, estimated=cost.estimated)
            )
            return cost

        return await self._db.run("settle_cost", op, write=True)

    async def turn_cost(self, turn_id: int) -> StoredCost | None:
        """One turn's stored cost (reports and tests)."""

        async def op(conn: AsyncConnection) -> StoredCost | None:
            row = (
                await conn.execute(
                    select(c.units, c.usd, c.estimated, c.settled, c.input_tokens).where(
                        c.turn_id == turn_id
                    )
                )
            ).first()
            if row is None:
                return None
            return StoredCost(int(row[0]), float(row[1]), bool(row[2]), bool(row[3]), int(row[4]))

        return await self._db.run("turn_cost", op, write=False, single=True)

    async def spending(
        self, counts: SpendFilter, *, since: datetime | None, until: datetime | None
    ) -> Spending:
        where = [c.settled == true(), *_selecting(counts), *_period(since, until)]

        async def op(conn: AsyncConnection) -> Spending:
            result = await conn.execute(
                select(func.count(), func.sum(c.units), func.sum(c.usd)).where(*where)
            )
            row = result.one()
            return _totals(row[0], row[1], row[2])

        return await self._db.run("spending", op, write=False)

    async def top_users(
        self, guild_id: str, *, since: datetime, until: datetime, limit: int
    ) -> list[tuple[str, Spending]]:
        rows = await self.report(since=since, until=until, by="user", guild_id=guild_id)
        return rows[:limit]

    async def report(
        self,
        *,
        since: datetime | None,
        until: datetime | None,
        by: ReportBy,
        guild_id: str | None = None,
    ) -> list[tuple[str, Spending]]:
        """Settled costs in [since, until) per server (DMs as ``""``), per user or per UTC
        day (``YYYY-MM-DD``); the biggest first, by day oldest first."""
        key: ColumnElement[str]
        if by == "guild":
            key = func.coalesce(c.guild_id, "")
        elif by == "user":
            key = c.user_id
        elif self._db.postgres:
            key = func.to_char(func.timezone("UTC", c.at), "YYYY-MM-DD")
        else:
            # SQLite keeps naive UTC as ISO text: its first ten characters are the day.
            key = func.substr(cast(c.at, String), 1, 10)
        where = [c.settled == true(), *_period(since, until)]
        if guild_id is not None:
            where.append(c.guild_id == guild_id)
        total = func.sum(c.usd)
        order = key if by == "day" else desc(total)
        query = (
            select(key, func.count(), func.sum(c.units), total)
            .where(*where)
            .group_by(key)
            .order_by(order, key)
        )

        async def op(conn: AsyncConnection) -> list[tuple[str, Spending]]:
            result = await conn.execute(query)
            return [(str(r[0]), _totals(r[1], r[2], r[3])) for r in result.all()]

        return await self._db.run("cost_report", op, write=False)


def _period(since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if since is not None:
        where.append(c.at >= since)
    if until is not None:
        where.append(c.at < until)
    return where
