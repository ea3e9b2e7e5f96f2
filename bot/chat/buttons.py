"""Stop and Retry buttons. They are discord.py ``DynamicItem``s: the custom id carries the
turn id, and the classes are registered at start-up, so a button keeps working after a
restart and no per-message state is kept in memory."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

if TYPE_CHECKING:
    from bot.chat.client import SeedBot


class StopButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"seed:stop:(?P<turn>\d+)"
):
    def __init__(self, turn_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Stop",
                emoji="⏹️",
                style=discord.ButtonStyle.secondary,
                custom_id=f"seed:stop:{turn_id}",
            )
        )
        self.turn_id = turn_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> StopButton:
        return cls(int(match["turn"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: SeedBot = interaction.client  # type: ignore[assignment]
        await bot.on_stop_pressed(interaction, self.turn_id)


class RetryButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"seed:retry:(?P<turn>\d+)"
):
    def __init__(self, turn_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Retry",
                emoji="🔁",
                style=discord.ButtonStyle.secondary,
                custom_id=f"seed:retry:{turn_id}",
            )
        )
        self.turn_id = turn_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> RetryButton:
        return cls(int(match["turn"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: SeedBot = interaction.client  # type: ignore[assignment]
        await bot.on_retry_pressed(interaction, self.turn_id)


def view_with(item: discord.ui.Item[Any]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(item)
    return view


def stop_view(turn_id: int) -> discord.ui.View:
    return view_with(StopButton(turn_id))


def retry_view(turn_id: int) -> discord.ui.View:
    return view_with(RetryButton(turn_id))
