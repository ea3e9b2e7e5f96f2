"""Turn costs: the SQL ``CostStore`` (reservations and settled costs of turns, the budgets'
spending) and the operator's report, shared by every process using the database."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Double,
    String,
    bindparam,
    cast,
    delete,
    desc,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.costs import EPSILON_USD, RESERVATION_TTL, Budget, SpendFilter, Spending
from bot.domain.models import Cost, Reservation, Settlement
from bot.storage.database import Database
from bot.storage.dialects import PerDialect
from bot.storage.tables import conversations, turn_costs, turns
from bot.storage.unit import Unit
from bot.storage.usage import advisory_lock_id

ReportBy = Literal["guild", "user", "day"]

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


# The statements of a turn's two ends, prepared once: the conversation store runs them in
# the transactions of the submission and of the answer, the cost store in its own.
_UNRESERVE = delete(turn_costs).where(c.turn_id == bindparam("b_turn"))
_RESERVED = dict(
    turn_id=bindparam("b_turn"),
    user_id=bindparam("b_user"),
    guild_id=bindparam("b_guild"),
    scope_id=bindparam("b_scope"),
    at=bindparam("b_at"),
    input_tokens=bindparam("b_input"),
    units=bindparam("b_units"),
    usd=bindparam("b_usd"),
    estimated=True,
    settled=False,
)
_RESERVE = insert(turn_costs).values(**_RESERVED)
# Held with the submission: one statement, replacing the turn's earlier reservation (a turn
# submitted again after a restart holds one, not two).
_REPLACE_RESERVATION = PerDialect(
    lambda insert: (
        insert(turn_costs)
        .values(**_RESERVED)
        .on_conflict_do_update(
            index_elements=[c.turn_id],
            set_={k: v for k, v in _RESERVED.items() if k != "turn_id"},
        )
    )
)
_MARK_SETTLED = (
    update(turn_costs)
    .where(c.turn_id == bindparam("b_turn"), c.settled == false())
    .values(settled=True)
    .returning(c.input_tokens)
)
_SETTLE_REPORTED = (
    update(turn_costs)
    .where(c.turn_id == bindparam("b_turn"), c.settled == false())
    .values(
        settled=True,
        units=bindparam("b_units"),
        usd=bindparam("b_usd"),
        estimated=bindparam("b_est"),
    )
    .returning(c.turn_id)
)
# A turn that reached fal without a reservation (its request id restored from the journal
# after a kill between fal's answer and the commit that would have held it) is settled by a
# row made from the turn and its conversation; a turn that never reached fal gets none.
_SETTLE_UNRESERVED = PerDialect(
    lambda insert: (
        insert(turn_costs)
        .from_select(
            [
                c.turn_id,
                c.user_id,
                c.guild_id,
                c.scope_id,
                c.at,
                c.input_tokens,
                c.units,
                c.usd,
                c.estimated,
                c.settled,
            ],
            select(
                turns.c.id,
                turns.c.author_id,
                conversations.c.guild_id,
                conversations.c.scope_id,
                turns.c.created_at,
                literal(0),
                bindparam("b_units", type_=BigInteger),
                bindparam("b_usd", type_=Double),
                bindparam("b_est", type_=Boolean),
                true(),
            )
            .join(conversations, conversations.c.id == turns.c.conversation_id)
            .where(turns.c.id == bindparam("b_turn"), turns.c.request_id.is_not(None)),
        )
        .on_conflict_do_nothing(index_elements=[c.turn_id])
        .returning(c.turn_id)
    )
)
_SET_COST = (
    update(turn_costs)
    .where(c.turn_id == bindparam("b_turn"))
    .values(units=bindparam("b_units"), usd=bindparam("b_usd"), estimated=bindparam("b_est"))
)


async def store_reservation(unit: Unit, reservation: Reservation) -> None:
    """Hold ``reservation`` (replacing the turn's earlier one, if any), in ``unit``'s
    transaction; no budget is checked."""
    await unit.execute(_REPLACE_RESERVATION.on(unit.postgres), _reserved(reservation))


async def _hold(conn: AsyncConnection, reservation: Reservation) -> None:
    await conn.execute(_RESERVE, _reserved(reservation))


def _reserved(reservation: Reservation) -> dict[str, object]:
    payer = reservation.payer
    return {
        "b_turn": reservation.turn_id,
        "b_user": payer.user_id,
        "b_guild": payer.guild_id,
        "b_scope": payer.scope_id,
        "b_at": reservation.at,
        "b_input": reservation.input_tokens,
        "b_units": reservation.units,
        "b_usd": reservation.usd,
    }


async def settle_in(unit: Unit, turn_id: int, settlement: Settlement) -> Cost | None:
    """Replace the turn's reservation with its final cost, in ``unit``'s transaction; None
    when there is nothing to settle (already settled, or the turn never reached fal). One
    statement when fal reported the cost, two when it is estimated from the reservation;
    one more for a turn that reached fal without a reservation (its row is made then)."""
    if (cost := settlement.reported) is not None:
        settled = await unit.scalar(_SETTLE_REPORTED, _cost_values(turn_id, cost))
        if settled is not None:
            return cost
    else:
        input_tokens = await unit.scalar(_MARK_SETTLED, {"b_turn": turn_id})
        if input_tokens is not None:
            cost = settlement.cost(int(input_tokens))
            await unit.execute(_SET_COST, _cost_values(turn_id, cost))
            return cost
        cost = settlement.cost(0)  # no reservation: no input estimate either
    # No reservation to settle: already settled (nothing inserted), or never held.
    inserted = await unit.scalar(_SETTLE_UNRESERVED.on(unit.postgres), _cost_values(turn_id, cost))
    return None if inserted is None else cost


def _cost_values(turn_id: int, cost: Cost) -> dict[str, object]:
    return {"b_turn": turn_id, "b_units": cost.units, "b_usd": cost.usd, "b_est": cost.estimated}


class SqlCosts:
    """``CostStore`` on the shared transaction helper."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def reserve(
        self, reservation: Reservation, budgets: Sequence[Budget], *, now: datetime
    ) -> Budget | None:
        async def op(conn: AsyncConnection) -> Budget | None:
            if self._db.postgres and budgets:
                # Two processes reserving against one budget take turns (SQLite's write
                # lock already serialises every writer); locks in one global order.
                locks = sorted({advisory_lock_id(b.key) for b in budgets})
                await conn.execute(select(*(func.pg_advisory_xact_lock(i) for i in locks)))
            # A turn submitted again (a restart before its request reached fal) holds one
            # reservation, not two: its earlier one does not count against it.
            await conn.execute(_UNRESERVE, {"b_turn": reservation.turn_id})
            for budget in budgets:
                spent = await conn.scalar(
                    select(func.coalesce(func.sum(c.usd), 0.0)).where(*_counting(budget, now))
                )
                if float(spent or 0.0) + reservation.usd > budget.limit_usd + EPSILON_USD:
                    return budget
            await _hold(conn, reservation)
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
        async def op(unit: Unit) -> Cost | None:
            return await settle_in(unit, turn_id, settlement)

        return await self._db.run_unit("settle_cost", op, write=True)

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
