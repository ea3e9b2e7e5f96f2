""" "Ask Seed": the message context menu (right-click a message → Apps → Ask Seed) and the
modal asking an optional question. The target message's text and files (a forward's too)
with the question are the first turn: in a server that added the bot, in a thread opened on
the target (or in the thread or DM the target is in) when the person could post there
themselves; elsewhere, and where they could not, privately through the interaction.

The menu passes the command tree's gate check (access lists); the submission, a model call,
passes the quotas too."""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

from bot.chat import convert, texts
from bot.chat.context import BotContext
from bot.chat.interaction_delivery import interaction_scope
from bot.chat.interaction_turns import (
    MODAL_TEXT_LIMIT,
    answer_is_ephemeral,
    answer_through,
    may_bind_by_interaction,
    may_post,
)
from bot.chat.replies import ephemeral, telling_failures
from bot.chat.threads import ThreadRefused, open_thread
from bot.domain.admission import Admission

log = logging.getLogger(__name__)

MODAL_SECONDS = 900.0  # Discord's 15 minutes for the interaction that opened it
EVERYWHERE = app_commands.AppCommandContext(guild=True, dm_channel=True, private_channel=True)
BOTH_INSTALLS = app_commands.AppInstallationType(guild=True, user=True)


class AskModal(discord.ui.Modal):
    """The optional question about ``target``."""

    def __init__(self, host: BotContext, target: discord.Message) -> None:
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
        admission = await self.asker.gate.admit_interaction(interaction)
        if not isinstance(admission, Admission):
            await ephemeral(interaction, admission.text)
            return
        question = self.question.value.strip()
        if convert.bot_is_present(interaction) and self._may_post_there(interaction):
            await self._in_place(interaction, admission, question)
            return
        # Where the bot is not, or where the person could not post what it would post for
        # them: answered only to them, through the interaction.
        await answer_through(
            self.asker,
            interaction,
            admission,
            text=question,
            scope_id=interaction_scope(interaction.id),
            ephemeral=answer_is_ephemeral(interaction, None),
            about=self.target,
        )

    def _may_post_there(self, interaction: discord.Interaction) -> bool:
        """Whether the person could post in the thread the answer would go to: the one on
        the target (opening it, if it is not there yet), or the thread the target is in."""
        channel = self.target.channel
        if isinstance(channel, discord.TextChannel):
            if channel.guild.get_thread(self.target.id) is not None:
                return interaction.permissions.send_messages_in_threads
            return may_post(interaction, new_thread=False)
        return may_post(interaction)

    async def _in_place(
        self, interaction: discord.Interaction, admission: Admission, question: str
    ) -> None:
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
            existing = channel.guild.get_thread(self.target.id)
            thread = existing or await open_thread(
                self.target, question or self.target.content, user.display_name
            )
            if isinstance(thread, ThreadRefused):
                await ephemeral(interaction, thread.text)
                return
            where: discord.Thread | discord.DMChannel = thread
            parent_id = channel.id
            await ephemeral(interaction, texts.started_in(thread.mention))
        else:
            existing = channel if isinstance(channel, discord.Thread) else None
            where, parent_id = channel, getattr(channel, "parent_id", None)
            await ephemeral(interaction, texts.ASKED_HERE)
        scope_id: int | str = where.id
        # A thread found unbound is bound only by the rule of a mention; else answered once.
        one_off = existing is not None and not await may_bind_by_interaction(
            self.asker.service, interaction, existing
        )
        if one_off:
            scope_id = convert.one_off_scope(interaction.id)
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
            answer_in=where.id if one_off else None,
        )
        await self.asker.service.respond(incoming, admission, batchable=False)


def register(tree: app_commands.CommandTree[Any], host: BotContext) -> None:
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
