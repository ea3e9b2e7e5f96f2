"""The cost rules: units for tokens, UTC periods, which budgets apply, dollars as shown."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.domain.costs import (
    BudgetRules,
    Pricing,
    budgets_for,
    estimate_units,
    format_usd,
    period_bounds,
)
from bot.domain.models import Payer


def test_output_tokens_cost_four_units_and_long_contexts_double() -> None:
    assert estimate_units(1_000, 0) == 1_000
    assert estimate_units(1_000, 500) == 3_000
    assert estimate_units(130_000, 0) == 132_000
    assert estimate_units(0, 129_000) == 4 * 130_000


def test_the_default_price_is_a_dime_per_million_input_tokens() -> None:
    assert Pricing().usd(1_000_000) == pytest.approx(0.10)


def test_days_and_months_are_utc() -> None:
    now = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert period_bounds("daily", now) == (
        datetime(2026, 12, 31, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert period_bounds("monthly", now) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    feb = datetime(2028, 2, 29, 12, tzinfo=UTC)
    assert period_bounds("monthly", feb)[1] == datetime(2028, 3, 1, tzinfo=UTC)


def test_only_set_budgets_apply_and_server_ones_only_in_a_server() -> None:
    rules = BudgetRules(user_daily_usd=1.0, guild_monthly_usd=5.0, total_monthly_usd=50.0)
    now = datetime(2026, 12, 1, 10, tzinfo=UTC)
    in_server = budgets_for(rules, Payer("7", "9"), now)
    assert [(b.scope, b.period, b.limit_usd) for b in in_server] == [
        ("user", "daily", 1.0),
        ("server", "monthly", 5.0),
        ("bot", "monthly", 50.0),
    ]
    in_dm = budgets_for(rules, Payer("7", None), now)
    assert [b.scope for b in in_dm] == ["user", "bot"]
    assert budgets_for(BudgetRules(), Payer("7", "9"), now) == []


@pytest.mark.parametrize(
    ("usd", "shown"),
    [(0.0, "$0.00"), (5.0, "$5.00"), (1234.5, "$1,234.50"), (0.0042, "$0.0042"), (0.01, "$0.01")],
)
def test_costs_show_to_the_cent_or_four_decimals_below_it(usd: float, shown: str) -> None:
    assert format_usd(usd) == shown
