"""The bot owner's commands: /admin reload."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.chat import texts
from bot.chat.context import BotContext
from bot.chat.replies import ephemeral


def register(tree: app_commands.CommandTree[Any], bot: BotContext) -> None:
    """Add the /admin group to ``tree``."""
    admin = app_commands.Group(name="admin", description="Bot administration (bot owner only)")

    @admin.command(name="reload", description="Reload config.toml without reconnecting")
    async def admin_reload(interaction: discord.Interaction) -> None:
        if not await bot.is_owner(interaction.user):
            await ephemeral(interaction, "⛔ Only the bot's owner can do that.")
            return
        if bot.reload_config is None:
            await ephemeral(interaction, "⛔ This bot was started without a config file to reload.")
            return
        problems = await bot.reload_config()
        if problems:
            shown = "\n".join(f"• {texts.clip(p, 180)}" for p in problems[:10])
            await ephemeral(interaction, f"⛔ The config was not reloaded:\n{shown}")
        else:
            await ephemeral(interaction, "✅ Config reloaded.")

    tree.add_command(admin)
