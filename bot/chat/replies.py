"""Short answers outside a turn's delivery: a private reply to an interaction, a plain reply
to a message. Both never ping anyone, and a reply that Discord refuses is logged, not raised
(there is nobody else to tell)."""

from __future__ import annotations

import logging

import discord

from bot.chat.texts import NO_MENTIONS

log = logging.getLogger(__name__)


async def ephemeral(interaction: discord.Interaction, text: str) -> None:
    """Answer ``interaction`` privately: its response, or a follow-up once it is answered."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
        else:
            await interaction.response.send_message(
                text, ephemeral=True, allowed_mentions=NO_MENTIONS
            )
    except discord.HTTPException as exc:
        log.warning("cannot answer interaction %s: %s", interaction.id, exc)


async def say(message: discord.Message, text: str) -> None:
    """A short reply to ``message``."""
    try:
        await message.reply(text, allowed_mentions=NO_MENTIONS, mention_author=False)
    except discord.HTTPException as exc:
        log.warning("cannot reply in channel %s: %s", message.channel.id, exc)
