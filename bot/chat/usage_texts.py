"""What /usage shows: spending, budgets left and the top spenders."""

from __future__ import annotations

from typing import Final

from bot.chat.texts import BUDGET_OWNER
from bot.domain.costs import BudgetLeft, Spending, format_usd


def spending_line(label: str, spent: Spending) -> str:
    turns = "turn" if spent.turns == 1 else "turns"
    return f"{label}: {spent.turns:,} {turns} · {spent.units:,} units · {format_usd(spent.usd)}"


def budget_line(left: BudgetLeft) -> str:
    budget = left.budget
    _, whose = BUDGET_OWNER.get(budget.scope, BUDGET_OWNER["bot"])
    when = f"<t:{int(budget.resets_at.timestamp())}:R>"
    return (
        f"{whose.capitalize()} {budget.period} budget {format_usd(budget.limit_usd)}: "
        f"{format_usd(left.left_usd)} left (resets {when})"
    )


def top_user_line(rank: int, user_id: str, spent: Spending) -> str:
    turns = "turn" if spent.turns == 1 else "turns"
    return f"{rank}. <@{user_id}>: {format_usd(spent.usd)} ({spent.turns:,} {turns})"


USAGE_NO_BUDGETS: Final = "No dollar budgets are set."
USAGE_NOT_TRACKED: Final = "This bot does not track what it costs."
