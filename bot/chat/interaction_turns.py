"""Turns asked for through an interaction where the bot cannot post (a server that did not
add it, a DM between people, a group DM) or where the person could not post themselves:
whether the person could, how visible the answer is, and the one way such a turn runs
(defer at once, then the service answers through the interaction). Used by ``/ask``, "Ask
Seed" and the Reply button."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import discord

from bot.chat import convert
from bot.chat.context import BotContext
from bot.chat.live_interactions import EPHEMERAL_EXTRA
from bot.chat.threads import may_bind
from bot.domain.admission import Admission
from bot.domain.service import ConversationService

log = logging.getLogger(__name__)

MODAL_TEXT_LIMIT = 4000  # Discord's longest value of a modal's text input


def may_post(interaction: discord.Interaction, *, new_thread: bool | None = None) -> bool:
    """Whether the person interacting could post here themselves what the bot would post
    for them (Discord sends their rights in the channel with every interaction): in a server,
    send messages in the channel (in threads, for a thread); with ``new_thread`` (True: a
    private one), open that kind of thread and send messages in it. Outside servers they
    take part in the DM or group DM."""
    if interaction.guild_id is None:
        return True
    perms = interaction.permissions
    if new_thread is not None:
        opens = perms.create_private_threads if new_thread else perms.create_public_threads
        return opens and perms.send_messages_in_threads
    if isinstance(interaction.channel, discord.Thread):
        return perms.send_messages_in_threads
    return perms.send_messages


async def may_bind_by_interaction(
    service: ConversationService, interaction: discord.Interaction, thread: discord.Thread
) -> bool:
    """Whether ``/ask`` or "Ask Seed" in ``thread`` may go on (or start) its conversation: it
    is bound already, or the person may bind it (else the question is answered once, like a
    mention of someone who may not)."""
    if await service.is_bound(str(thread.id)):
        return True
    me = interaction.client.user.id if interaction.client.user else 0
    return may_bind(
        thread, interaction.user.id, me, manages_threads=interaction.permissions.manage_threads
    )


def answer_is_ephemeral(interaction: discord.Interaction, private: bool | None) -> bool:
    """An answer through the interaction is private unless the person asks for a public one
    (``private`` False), could post here themselves, and the server lets external apps post
    publicly (the member's Use External Apps permission; Discord would make the answer
    private anyway)."""
    if private is None or private:
        return True
    if interaction.guild_id is None:
        return False
    return not (interaction.permissions.use_external_apps and may_post(interaction))


async def answer_through(
    asker: BotContext,
    interaction: discord.Interaction,
    admission: Admission,
    *,
    text: str,
    scope_id: str,
    ephemeral: bool,
    attachments: Sequence[discord.Attachment] = (),
    about: discord.Message | None = None,
) -> None:
    """Acknowledge ``interaction`` at once (Discord's 3 s; the visibility is fixed here),
    then answer ``text`` (and ``about``, the message "Ask Seed" was used on) as the next
    turn of the conversation ``scope_id``, through the interaction, as ``admission``
    admitted it."""
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
        await asker.service.respond(incoming, admission, batchable=False)
