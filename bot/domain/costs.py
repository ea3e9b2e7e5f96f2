"""What turns cost: fal's billable units priced in dollars, the estimate when fal reports
nothing, and budgets in dollars per user, server and the whole bot, per UTC day and month.

A budget is enforced before a submit, atomically across processes: the turn's worst case
(its input estimate plus ``max_completion_tokens`` of output) is reserved, and settled to
the actual cost when the turn ends. A reservation whose turn never ends (its process died
and no restart took it up) stops counting after ``RESERVATION_TTL``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from bot.domain.cache import Lru
from bot.domain.conversation import estimate_tokens
from bot.domain.errors import BudgetExceeded, ModelError, StorageError
from bot.domain.models import Cost, ModelReply, Payer, Reservation, Settlement

log = logging.getLogger(__name__)

# fal's published price for this endpoint (fal-protocol.md, "Pricing on fal"): $0.0001 per
# 1,000 units; an input token is 1 unit and an output token (reasoning included) 4, both
# doubling past 128K tokens.
DEFAULT_USD_PER_UNIT = 1e-7  # $0.0001 per 1,000 units
INPUT_UNITS_PER_TOKEN = 1
OUTPUT_UNITS_PER_TOKEN = 4
LONG_CONTEXT_TOKENS = 128_000
RESERVATION_TTL = timedelta(hours=1)
# Budgets remembered as too short for a turn: bounded, whatever a flood of accounts sends.
SHORT_BUDGETS_CAPACITY = 20_000
# Float sums of many small costs: a budget is exceeded by more than rounding noise.
EPSILON_USD = 1e-9

Period = Literal["daily", "monthly"]
BudgetScope = Literal["user", "server", "bot"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _tiered(tokens: int, per_token: int) -> int:
    return per_token * (tokens + max(0, tokens - LONG_CONTEXT_TOKENS))


def estimate_units(input_tokens: int, output_tokens: int) -> int:
    """fal's units for token counts (input 1 a token, output 4, doubled past 128K)."""
    return _tiered(input_tokens, INPUT_UNITS_PER_TOKEN) + _tiered(
        output_tokens, OUTPUT_UNITS_PER_TOKEN
    )


@dataclass(frozen=True, slots=True)
class Pricing:
    usd_per_unit: float = DEFAULT_USD_PER_UNIT

    def usd(self, units: int) -> float:
        return units * self.usd_per_unit


def period_bounds(period: Period, now: datetime) -> tuple[datetime, datetime]:
    """The UTC day or month ``now`` falls in: its start and the start of the next one."""
    now = now.astimezone(UTC)
    if period == "daily":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return start, following


@dataclass(frozen=True, slots=True)
class BudgetRules:
    """Dollar budgets; 0 means none."""

    user_daily_usd: float = 0.0
    user_monthly_usd: float = 0.0
    guild_daily_usd: float = 0.0
    guild_monthly_usd: float = 0.0
    total_monthly_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Spending:
    """What a filter selects: turns counted, fal units and dollars."""

    turns: int = 0
    units: int = 0
    usd: float = 0.0


@dataclass(frozen=True, slots=True)
class SpendFilter:
    """Costs of one user, one server, one conversation, or (all None) the whole bot."""

    user_id: str | None = None
    guild_id: str | None = None
    scope_id: str | None = None


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget as it applies now: what it counts, its size and its period."""

    scope: BudgetScope
    period: Period
    limit_usd: float
    counts: SpendFilter
    since: datetime
    resets_at: datetime

    @property
    def key(self) -> str:
        """What the budget counts, as a lock name shared by every process."""
        who = self.counts.user_id or self.counts.guild_id or "all"
        return f"budget:{self.scope}:{who}"


def budgets_for(rules: BudgetRules, payer: Payer, now: datetime) -> list[Budget]:
    """The budgets that apply to ``payer`` at ``now`` (those set, i.e. above 0)."""
    wanted: list[tuple[BudgetScope, Period, float, SpendFilter]] = [
        ("user", "daily", rules.user_daily_usd, SpendFilter(user_id=payer.user_id)),
        ("user", "monthly", rules.user_monthly_usd, SpendFilter(user_id=payer.user_id)),
    ]
    if payer.guild_id is not None:
        server = SpendFilter(guild_id=payer.guild_id)
        wanted += [
            ("server", "daily", rules.guild_daily_usd, server),
            ("server", "monthly", rules.guild_monthly_usd, server),
        ]
    wanted.append(("bot", "monthly", rules.total_monthly_usd, SpendFilter()))
    budgets = []
    for scope, period, limit, counts in wanted:
        if limit > 0:
            since, resets_at = period_bounds(period, now)
            budgets.append(Budget(scope, period, limit, counts, since, resets_at))
    return budgets


@dataclass(frozen=True, slots=True)
class BudgetLeft:
    """One budget for /usage: its size, what is spent (live reservations included)."""

    budget: Budget
    spent_usd: float

    @property
    def left_usd(self) -> float:
        return max(0.0, self.budget.limit_usd - self.spent_usd)


class CostStore(Protocol):
    """The costs of turns, shared by every process using the database."""

    async def reserve(
        self, reservation: Reservation, budgets: Sequence[Budget], *, now: datetime
    ) -> Budget | None:
        """Atomically: when every budget's spending (settled costs and live reservations
        since its period began) plus the reservation stays within it, store the reservation
        and return None; otherwise store nothing and return the first budget it would
        exceed. Reservations older than ``now - RESERVATION_TTL`` count nothing."""
        ...

    async def spent(self, budgets: Sequence[Budget], *, now: datetime) -> list[float]:
        """Each budget's spending so far, live reservations included."""
        ...

    async def settle(self, turn_id: int, settlement: Settlement) -> Cost | None:
        """Replace a turn's reservation with its final cost; None when there is nothing to
        settle (already settled, or the turn never reached fal). A turn that reached fal
        without a reservation (its request id restored after a crash) gets its row then."""
        ...

    async def spending(
        self, counts: SpendFilter, *, since: datetime | None, until: datetime | None
    ) -> Spending:
        """Settled costs of what ``counts`` selects, in [since, until)."""
        ...

    async def top_users(
        self, guild_id: str, *, since: datetime, until: datetime, limit: int
    ) -> list[tuple[str, Spending]]:
        """The biggest spenders of a server in [since, until), biggest first."""
        ...


class TurnCosts(Protocol):
    """What the service asks of costs: the two ends of a turn's model call."""

    async def reserve(
        self, turn_id: int, payer: Payer, *, input_tokens: int, max_output_tokens: int
    ) -> Reservation | None:
        """Before the submit. When a budget applies to ``payer``, hold the turn's worst case
        against it now (raising ``BudgetExceeded`` when it does not fit) and return None;
        when none does, return the reservation for the submission to store (nothing to
        check, so no transaction of its own). None when costs are off."""
        ...

    def settlement(self, outcome: ModelReply | Exception | None) -> Settlement | None:
        """How the turn's final cost follows from how it ended, for the store to apply in
        the transaction that stores the answer; None when costs are off."""
        ...

    def settled(self, turn_id: int, cost: Cost | None) -> None:
        """The store applied the settlement: ``cost`` is what the turn cost (None: it held
        no reservation)."""
        ...

    async def settle(self, turn_id: int, outcome: ModelReply | Exception | None) -> None:
        """When the turn ends without its answer being stored now: its reply (stored
        earlier), the error it ended with, or None (stopped). In a transaction of its own;
        never raises for lack of a figure or of the database."""
        ...


class _NoCosts:
    async def reserve(
        self, turn_id: int, payer: Payer, *, input_tokens: int, max_output_tokens: int
    ) -> Reservation | None:
        return None

    def settlement(self, outcome: ModelReply | Exception | None) -> Settlement | None:
        return None

    def settled(self, turn_id: int, cost: Cost | None) -> None:
        return None

    async def settle(self, turn_id: int, outcome: ModelReply | Exception | None) -> None:
        return None


NO_COSTS: TurnCosts = _NoCosts()


def settlement(outcome: ModelReply | Exception | None, pricing: Pricing) -> Settlement:
    """A turn's final cost from how it ended: what fal reported (on the reply or on the
    error); without a report, estimated from its input estimate plus the reply's output
    when it was answered, and nothing when it was not (fal bills no failed request it
    reports nothing for)."""
    reported = outcome.billable_units if isinstance(outcome, ModelReply | ModelError) else None
    if reported is not None:
        return Settlement(reported=Cost(reported, pricing.usd(reported), estimated=False))
    if not isinstance(outcome, ModelReply):
        return Settlement(reported=Cost(0, 0.0, estimated=True))
    output = estimate_tokens(outcome.output) + estimate_tokens(outcome.reasoning or "")

    def estimate(input_tokens: int) -> Cost:
        units = estimate_units(input_tokens, output)
        return Cost(units, pricing.usd(units), estimated=True)

    return Settlement(estimate=estimate)


class Budgets:
    """Prices turns and holds them to the dollar budgets (the service's ``TurnCosts``).

    A budget whose remainder did not fit a turn's worst case is remembered with that worst
    case (until its period ends, or new rules or prices): the door refuses further turns
    while what is spent leaves less than that, so that a flood of messages against it is
    refused before any of them is stored."""

    def __init__(
        self,
        store: CostStore,
        rules: BudgetRules,
        pricing: Pricing,
        *,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self._rules = rules
        self._pricing = pricing
        self._now = now
        # Told each settled cost (the metrics' dollars).
        self.observers: list[Callable[[Cost], None]] = []
        # budget key -> (the smallest worst case it did not fit, when its period ends)
        self._short: Lru[str, tuple[float, datetime]] = Lru(SHORT_BUDGETS_CAPACITY)

    @property
    def rules(self) -> BudgetRules:
        return self._rules

    @rules.setter
    def rules(self, rules: BudgetRules) -> None:
        self._rules = rules
        self._short.clear()

    @property
    def pricing(self) -> Pricing:
        return self._pricing

    @pricing.setter
    def pricing(self, pricing: Pricing) -> None:
        self._pricing = pricing
        self._short.clear()

    def now(self) -> datetime:
        return self._now()

    async def check(self, payer: Payer) -> None:
        """At the door: raise ``BudgetExceeded`` when a budget of ``payer`` has nothing
        left (no reservation; the submit reserves)."""
        now = self._now()
        budgets = budgets_for(self.rules, payer, now)
        if not budgets:
            return
        for budget, spent in zip(budgets, await self.store.spent(budgets, now=now), strict=True):
            needed = self._needed(budget, now)
            if spent >= budget.limit_usd or spent + needed > budget.limit_usd + EPSILON_USD:
                raise _exceeded(budget)

    def _needed(self, budget: Budget, now: datetime) -> float:
        """What a turn is known to need of ``budget`` beyond what is spent (0: nothing
        known, so only a used-up budget refuses at the door)."""
        short = self._short.get(budget.key)
        if short is None or short[1] != budget.resets_at or now >= short[1]:
            return 0.0
        return short[0]

    def _remember_short(self, budget: Budget, need_usd: float) -> None:
        known = self._short.get(budget.key)
        if known is not None and known[1] == budget.resets_at:
            need_usd = min(need_usd, known[0])
        self._short.put(budget.key, (need_usd, budget.resets_at))

    async def reserve(
        self, turn_id: int, payer: Payer, *, input_tokens: int, max_output_tokens: int
    ) -> Reservation | None:
        """Before a submit: hold the turn's worst case against its budgets, or raise
        ``BudgetExceeded`` (nothing held) when it does not fit one of them. Without a
        budget, the reservation is returned for the submission to store."""
        now = self._now()
        units = estimate_units(input_tokens, max_output_tokens)
        reservation = Reservation(turn_id, payer, input_tokens, units, self.pricing.usd(units), now)
        budgets = budgets_for(self.rules, payer, now)
        if not budgets:
            return reservation
        refused = await self.store.reserve(reservation, budgets, now=now)
        if refused is not None:
            self._remember_short(refused, reservation.usd)
            raise _exceeded(refused)
        return None

    def settlement(self, outcome: ModelReply | Exception | None) -> Settlement:
        return settlement(outcome, self.pricing)

    def settled(self, turn_id: int, cost: Cost | None) -> None:
        if cost is not None:
            for observer in self.observers:
                observer(cost)
            log.info(
                "turn %s cost %d units, $%.6f%s",
                turn_id,
                cost.units,
                cost.usd,
                " (estimated)" if cost.estimated else "",
            )

    async def settle(self, turn_id: int, outcome: ModelReply | Exception | None) -> None:
        try:
            cost = await self.store.settle(turn_id, settlement(outcome, self.pricing))
        except StorageError as exc:
            log.warning("turn %s: cost not settled (%s); its reservation lapses", turn_id, exc)
            return
        self.settled(turn_id, cost)

    async def left(self, payer: Payer) -> list[BudgetLeft]:
        """Every budget of ``payer`` with what is spent of it."""
        now = self._now()
        budgets = budgets_for(self.rules, payer, now)
        if not budgets:
            return []
        spent = await self.store.spent(budgets, now=now)
        return [BudgetLeft(b, s) for b, s in zip(budgets, spent, strict=True)]


def _exceeded(budget: Budget) -> BudgetExceeded:
    return BudgetExceeded(budget.scope, budget.period, budget.limit_usd, budget.resets_at)


def format_usd(usd: float) -> str:
    """Dollars to the cent, or to 4 decimals below a cent ($0.0042); zero is $0.00."""
    if usd == 0 or abs(usd) >= 0.01:
        return f"${usd:,.2f}"
    return f"${usd:.4f}"
