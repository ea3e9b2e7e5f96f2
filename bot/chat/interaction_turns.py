"""Turns asked for through an interaction where the bot cannot post (a server that did not
add it, a DM between people, a group DM): whether that is the case, how visible the answer
is, and the one way such a turn runs (defer at once, then the service answers through the
interaction). Used by ``/ask``, "Ask Seed" and the Reply button."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

import discord

from bot.chat import convert
from bot.chat.gate import Gate
from bot.chat.interaction_delivery import EPHEMERAL_EXTRA, LiveInteractions
from bot.domain.service import ConversationService

log = logging.getLogger(__name__)

MODAL_TEXT_LIMIT = 4000  # Discord's longest value of a modal's text input


class Asker(Protocol):
    """What a turn through an interaction needs from the bot."""

    @property
    def gate(self) -> Gate: ...

    @property
    def service(self) -> ConversationService: ...

    @property
    def interactions(self) -> LiveInteractions: ...

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]: ...


def bot_is_present(interaction: discord.Interaction) -> bool:
    """Whether the bot can read and post where ``interaction`` comes from: a server that
    added it (a guild installation authorizes the interaction; discord.py makes a guild
    object even for a server without the bot, so its presence says nothing), or its own DM."""
    if interaction.guild_id is not None:
        return interaction.is_guild_integration()
    return bool(interaction.context.dm_channel)


def answer_is_ephemeral(interaction: discord.Interaction, private: bool | None) -> bool:
    """Where the bot is not a member, answers are private unless the person asks for a
    public one (``private`` False) and the server lets external apps post publicly (the
    member's Use External Apps permission; Discord would make the answer private anyway)."""
    if private is None or private:
        return True
    return interaction.guild_id is not None and not interaction.permissions.use_external_apps


async def answer_through(
    asker: Asker,
    interaction: discord.Interaction,
    *,
    text: str,
    scope_id: str,
    ephemeral: bool,
    attachments: Sequence[discord.Attachment] = (),
    about: discord.Message | None = None,
) -> None:
    """Acknowledge ``interaction`` at once (Discord's 3 s; the visibility is fixed here),
    then answer ``text`` (and ``about``, the message "Ask Seed" was used on) as the next
    turn of the conversation ``scope_id``, through the interaction. The gate has been
    passed already."""
    interaction.extras[EPHEMERAL_EXTRA] = ephemeral
    try:
        await interaction.response.defer(ephemeral=ephemeral, thinking=True)
    except discord.HTTPException as exc:
        log.warning("cannot acknowledge interaction %s: %s", interaction.id, exc)
        return
    incoming = convert.incoming_from_interaction(
        interaction,
        text=text,
        attachments=attachments,
        scope_id=scope_id,
        parent_channel_id=interaction.channel_id,
        reply_to=None,
        about=about,
        through_interaction=True,
    )
    async with asker.interactions.holding(interaction, ephemeral):
        await asker.service.respond(incoming, batchable=False)
