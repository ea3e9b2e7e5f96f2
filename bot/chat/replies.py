"""Short answers outside a turn's delivery: a private reply to an interaction, a plain reply
to a message. Both never ping anyone, and a reply that Discord refuses is logged, not raised
(there is nobody else to tell)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable

import discord

from bot.chat.texts import NO_MENTIONS, error_text
from bot.domain.errors import SeedBotError

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


async def telling_failures(interaction: discord.Interaction, work: Awaitable[None]) -> None:
    """Run ``work``, which answers ``interaction``. A failure the bot knows (the database
    away, a setting it cannot store) before a turn's delivery took over is told to the
    person privately, or Discord would show "The application did not respond" (used by the
    buttons, the modals and /ask's task; the command tree does the same for commands)."""
    try:
        await work
    except SeedBotError as exc:
        await tell_failure(interaction, exc)


async def tell_failure(interaction: discord.Interaction, failure: SeedBotError) -> None:
    """Tell the person privately what went wrong; one line in the log, not a traceback."""
    log.warning("interaction %s failed: %s", interaction.id, failure)
    await ephemeral(interaction, error_text(failure))


async def say(message: discord.Message, text: str) -> None:
    """A short reply to ``message``."""
    try:
        await message.reply(text, allowed_mentions=NO_MENTIONS, mention_author=False)
    except discord.HTTPException as exc:
        log.warning("cannot reply in channel %s: %s", message.channel.id, exc)
