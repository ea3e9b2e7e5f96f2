"""The bot's persistent buttons, built one way: a custom id that survives restarts (the
press is routed by it, not by a live view), and views that never time out."""

from __future__ import annotations

from typing import Any

import discord


def button(
    custom_id: str,
    label: str,
    emoji: str,
    style: discord.ButtonStyle = discord.ButtonStyle.secondary,
) -> discord.ui.Button[Any]:
    return discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=custom_id)


def view_with(item: discord.ui.Item[Any]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(item)
    return view
