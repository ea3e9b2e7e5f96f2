""" "Ask Seed": the message context menu (right-click a message → Apps → Ask Seed) and the
modal asking an optional question. The target message's text and files (a forward's too)
with the question are the first turn: in a server that added the bot, in a thread opened on
the target (or in the thread or DM the target is in); elsewhere through the interaction.

The menu passes the command tree's gate check (access lists); the submission, a model call,
passes the quotas too."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import discord
from discord import app_commands

from bot.chat import convert, texts
from bot.chat.interaction_delivery import interaction_scope
from bot.chat.interaction_turns import (
    MODAL_TEXT_LIMIT,
    Asker,
    answer_is_ephemeral,
    answer_through,
    bot_is_present,
)
from bot.chat.replies import ephemeral, telling_failures
from bot.chat.threads import ThreadRefused, open_thread

log = logging.getLogger(__name__)

MODAL_SECONDS = 900.0  # Discord's 15 minutes for the interaction that opened it
EVERYWHERE = app_commands.AppCommandContext(guild=True, dm_channel=True, private_channel=True)
BOTH_INSTALLS = app_commands.AppInstallationType(guild=True, user=True)


class MenuHost(Asker, Protocol):
    """What "Ask Seed" needs from the bot."""

    @property
    def allow_dms(self) -> bool: ...


class AskModal(discord.ui.Modal):
    """The optional question about ``target``."""

    def __init__(self, host: MenuHost, target: discord.Message) -> None:
        super().__init__(title=texts.ASK_MODAL_TITLE, timeout=MODAL_SECONDS)
        self.asker = host
        self.target = target
        self.question: discord.ui.TextInput[AskModal] = discord.ui.TextInput(
            label=texts.ASK_FIELD_LABEL,
            style=discord.TextStyle.paragraph,
            custom_id="seed:ask:question",
            required=False,
            max_length=MODAL_TEXT_LIMIT,
        )
        self.add_item(self.question)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        # In the bot's own task, so a shutdown drains it like any turn.
        self.asker.spawn(
            telling_failures(interaction, self._submitted(interaction)),
            name=f"ask-seed-{interaction.id}",
        )

    async def _submitted(self, interaction: discord.Interaction) -> None:
        refusal = await self.asker.gate.check_interaction(interaction, model_call=True)
        if refusal is not None:
            await ephemeral(interaction, refusal.text)
            return
        question = self.question.value.strip()
        if not bot_is_present(interaction):
            await answer_through(
                self.asker,
                interaction,
                text=question,
                scope_id=interaction_scope(interaction.id),
                ephemeral=answer_is_ephemeral(interaction, None),
                about=self.target,
            )
            return
        await self._in_place(interaction, question)

    async def _in_place(self, interaction: discord.Interaction, question: str) -> None:
        """Where the bot is a member: a thread on the target, or the thread (or DM) the
        target is in, like a mention there."""
        channel = self.target.channel
        if isinstance(channel, discord.DMChannel) and not self.asker.allow_dms:
            await ephemeral(interaction, texts.DM_REFUSAL)
            return
        if not isinstance(channel, discord.TextChannel | discord.Thread | discord.DMChannel):
            await ephemeral(interaction, texts.ASK_NOT_HERE)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        user = interaction.user
        parent_id: int | None
        if isinstance(channel, discord.TextChannel):
            # A message has at most one thread: one opened on it already is where to go on.
            thread = channel.guild.get_thread(self.target.id) or await open_thread(
                self.target, question or self.target.content, user.display_name
            )
            if isinstance(thread, ThreadRefused):
                await ephemeral(interaction, thread.text)
                return
            where: discord.abc.Messageable = thread
            scope_id, parent_id = thread.id, channel.id
            await ephemeral(interaction, texts.started_in(thread.mention))
        else:
            where = channel
            scope_id, parent_id = channel.id, getattr(channel, "parent_id", None)
            await ephemeral(interaction, texts.ASKED_HERE)
        try:
            anchor = await where.send(
                texts.asked_about(user.display_name, question, self.target.jump_url),
                allowed_mentions=texts.NO_MENTIONS,
            )
        except discord.HTTPException as exc:
            log.warning("cannot post in %s: %s", scope_id, exc)
            await ephemeral(interaction, texts.THREAD_REFUSED)
            return
        incoming = convert.incoming_from_interaction(
            interaction,
            text=question,
            attachments=(),
            scope_id=scope_id,
            parent_channel_id=parent_id,
            reply_to=anchor.id,
            about=self.target,
        )
        await self.asker.service.respond(incoming, batchable=False)


def register(tree: app_commands.CommandTree[Any], host: MenuHost) -> None:
    """Add "Ask Seed" to ``tree``, for both installation types in every context."""

    async def ask_seed(interaction: discord.Interaction, message: discord.Message) -> None:
        me = interaction.client.user.id if interaction.client.user else 0
        if not convert.has_usable_content(message, me):
            await ephemeral(interaction, texts.NOTHING_USABLE)
            return
        await interaction.response.send_modal(AskModal(host, message))

    menu = app_commands.ContextMenu(
        name=texts.ASK_MENU_NAME,
        callback=ask_seed,
        allowed_contexts=EVERYWHERE,
        allowed_installs=BOTH_INSTALLS,
    )
    tree.add_command(menu)
