"""Dollar budgets under concurrency: two OS processes on one PostgreSQL database racing for
the last cents of a budget never spend more than it (the worst case is reserved atomically)."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.domain.costs import BudgetRules, Budgets, Pricing, SpendFilter
from bot.domain.models import Cost, Payer, Settlement
from bot.storage import create_engine, sql_repositories
from tests.reliability.racing import needs_postgres, race

ROOT = Path(__file__).resolve().parents[2]
# $1.00 a month for the whole bot, $0.79 of it spent: room for exactly three turns whose
# worst case is 7 units at $0.01.
LIMIT, SPENT, WORST_CASE_UNITS, PRICE = 1.0, 0.79, 7, 0.01


WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from bot.domain.costs import BudgetRules, Budgets, Pricing
    from bot.domain.models import Payer
    from bot.domain.errors import BudgetExceeded
    from bot.storage import create_engine, sql_repositories

    async def main(url: str, worker: int, attempts: int) -> None:
        engine = create_engine(url)
        budgets = Budgets(
            sql_repositories(engine).costs, BudgetRules(total_monthly_usd=float(sys.argv[4])),
            Pricing(float(sys.argv[5])),
        )
        await budgets.check(Payer("1", None))  # connect before the start
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        async def one(n: int) -> bool:
            try:
                await budgets.reserve(
                    worker * 1000 + n, Payer(str(100 + n), str(worker)),
                    input_tokens=int(sys.argv[6]), max_output_tokens=0,
                )
            except BudgetExceeded:
                return False
            return True

        results = await asyncio.gather(*(one(n) for n in range(attempts)))
        await engine.dispose()
        print(json.dumps({"reserved": sum(results)}), flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
    """
)


@needs_postgres
@pytest.mark.timeout(60)
async def test_two_processes_racing_for_the_last_cents_never_exceed_the_budget(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    try:
        costs = sql_repositories(engine).costs
        budgets = Budgets(costs, BudgetRules(total_monthly_usd=LIMIT), Pricing(PRICE))
        await budgets.reserve(1, Payer("1", None), input_tokens=0, max_output_tokens=0)
        await costs.settle(1, Settlement(reported=Cost(79, SPENT, False)))

        attempts = 20
        argv = [str(attempts), str(LIMIT), str(PRICE), str(WORST_CASE_UNITS)]
        results = await race(WORKER, [[postgres_url, str(w), *argv] for w in (1, 2)])
        reserved = [r["reserved"] for r in results]
        assert sum(reserved) == 3, reserved
        [left] = await budgets.left(Payer("1", None))
        assert left.spent_usd == pytest.approx(SPENT + 3 * WORST_CASE_UNITS * PRICE)
        assert left.spent_usd <= LIMIT + 1e-9  # float sums: rounding noise only
        # settled to what the turns really cost, the cents come back
        for worker in (1, 2):
            for n in range(attempts):
                await costs.settle(worker * 1000 + n, Settlement(reported=Cost(1, PRICE, False)))
        whole = await costs.spending(
            SpendFilter(), since=datetime(2000, 1, 1, tzinfo=UTC), until=None
        )
        assert whole.turns == 4
        assert whole.usd == pytest.approx(SPENT + 3 * PRICE)
    finally:
        await engine.dispose()
