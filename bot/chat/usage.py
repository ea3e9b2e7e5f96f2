"""``/usage``: what the bot has cost, privately: the person's own spending today and this
month with what is left of each budget; in a thread, the thread's total; with Manage Server,
the server's total and its top users; for the bot's owner, the whole bot's."""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

from bot.chat import texts, usage_texts
from bot.chat.context import BotContext
from bot.chat.replies import ephemeral
from bot.domain.costs import Budgets, SpendFilter, period_bounds
from bot.domain.errors import StorageError
from bot.domain.models import Payer

log = logging.getLogger(__name__)

TOP_USERS = 5


async def usage_text(budgets: Budgets, interaction: discord.Interaction, *, owner: bool) -> str:
    """The /usage answer for the person interacting, where they are."""
    store = budgets.store
    now = budgets.now()
    today, _ = period_bounds("daily", now)
    month, next_month = period_bounds("monthly", now)
    user_id = str(interaction.user.id)
    guild_id = str(interaction.guild_id) if interaction.guild_id is not None else None

    async def both(counts: SpendFilter) -> list[str]:
        return [
            usage_texts.spending_line(
                "Today", await store.spending(counts, since=today, until=None)
            ),
            usage_texts.spending_line(
                "This month", await store.spending(counts, since=month, until=None)
            ),
        ]

    lines = ["**Your spending**", *await both(SpendFilter(user_id=user_id))]
    left = await budgets.left(Payer(user_id, guild_id))
    lines += [usage_texts.budget_line(b) for b in left] or [usage_texts.USAGE_NO_BUDGETS]
    channel = interaction.channel
    if isinstance(channel, discord.Thread):
        spent = await store.spending(SpendFilter(scope_id=str(channel.id)), since=None, until=None)
        lines += ["", "**This thread**", usage_texts.spending_line("In all", spent)]
    if guild_id is not None and interaction.permissions.manage_guild:
        lines += ["", "**This server**", *await both(SpendFilter(guild_id=guild_id))]
        top = await store.top_users(guild_id, since=month, until=next_month, limit=TOP_USERS)
        if top:
            lines.append("Top users this month:")
            lines += [usage_texts.top_user_line(i, uid, s) for i, (uid, s) in enumerate(top, 1)]
    if owner:
        lines += ["", "**The whole bot**", *await both(SpendFilter())]
    return "\n".join(lines)


def register(tree: app_commands.CommandTree[Any], bot: BotContext) -> None:
    @tree.command(name="usage", description="What your use of the bot has cost, and what is left")
    async def usage(interaction: discord.Interaction) -> None:
        budgets = bot.gate.budgets
        if budgets is None:
            await ephemeral(interaction, usage_texts.USAGE_NOT_TRACKED)
            return
        try:
            text = await usage_text(
                budgets, interaction, owner=await bot.is_owner(interaction.user)
            )
        except StorageError as exc:
            log.warning("/usage for %s failed: %s", interaction.user.id, exc)
            text = texts.error_text(exc)
        await ephemeral(interaction, text)
