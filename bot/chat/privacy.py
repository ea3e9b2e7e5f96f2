"""``/export`` and ``/forget``: a person's own data, from Discord.

``/export`` sends a person their own turns of a conversation and the answers to them as
two private files (other people's messages are left out, and counted). ``/forget`` shows
how many turns would go and a confirmation button; the button is a ``DynamicItem`` whose
custom id carries who asked and where, so it works after a restart with no per-message
state, and pressing it passes the gate like every way in.
"""

from __future__ import annotations

import io
import logging
import re
from datetime import UTC, datetime
from typing import Any

import discord
from discord import app_commands

from bot.chat import privacy_texts, texts
from bot.chat.buttons import button, view_with
from bot.chat.context import BotContext, context_of
from bot.chat.replies import ephemeral
from bot.domain.errors import StorageError
from bot.domain.privacy import export_files

log = logging.getLogger(__name__)

# Discord refuses uploads above 10 MiB per message for bots in most servers; keep clear.
EXPORT_MAX_BYTES = 8 * 1024 * 1024
_DM = "dm"


async def export(host: BotContext, interaction: discord.Interaction) -> None:
    channel = interaction.channel
    if channel is None or (
        interaction.guild_id is not None and not isinstance(channel, discord.Thread)
    ):
        await ephemeral(interaction, privacy_texts.EXPORT_WHERE)
        return
    stored = await host.privacy.export(str(channel.id))
    if stored is None:
        await ephemeral(interaction, privacy_texts.EXPORT_NOT_A_CONVERSATION)
        return
    # Everyone gets their own turns (and the answers to them), nobody anyone else's: the
    # starter and moderators too.
    found = stored.for_person(str(interaction.user.id))
    if not found.turns:
        await ephemeral(interaction, privacy_texts.EXPORT_NOTHING_OF_YOURS)
        return
    files = {
        name: text.encode()
        for name, text in export_files(found, exported_at=datetime.now(UTC)).items()
    }
    size = sum(len(data) for data in files.values())
    if size > EXPORT_MAX_BYTES:
        await ephemeral(interaction, privacy_texts.export_too_large(size))
        return
    log.info(
        "conversation %s exported by user %s (%d turns, %d messages of others left out)",
        found.conversation.id,
        interaction.user.id,
        len(found.turns),
        found.left_out,
    )
    try:
        await interaction.response.send_message(
            privacy_texts.export_ready(len(found.turns), found.left_out),
            files=[discord.File(io.BytesIO(data), filename=name) for name, data in files.items()],
            ephemeral=True,
            allowed_mentions=texts.NO_MENTIONS,
        )
    except discord.HTTPException as exc:
        log.warning("cannot send the export of conversation %s: %s", found.conversation.id, exc)


def _guild_key(guild_id: int | None) -> str:
    return str(guild_id) if guild_id is not None else _DM


async def forget(host: BotContext, interaction: discord.Interaction) -> None:
    guild_id = interaction.guild_id
    in_server = guild_id is not None
    user_id = str(interaction.user.id)
    preview = await host.privacy.forget(user_id, str(guild_id) if in_server else None, dry_run=True)
    if preview.turns == 0:
        text = (
            privacy_texts.FORGET_BUSY
            if preview.kept_unfinished
            else privacy_texts.forget_nothing(in_server)
        )
        await ephemeral(interaction, text)
        return
    try:
        await interaction.response.send_message(
            privacy_texts.forget_confirm(preview.turns, in_server),
            view=view_with(ForgetButton(interaction.user.id, _guild_key(guild_id))),
            ephemeral=True,
            allowed_mentions=texts.NO_MENTIONS,
        )
    except discord.HTTPException as exc:
        log.warning("cannot answer /forget of user %s: %s", user_id, exc)


class ForgetButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"seed:forget:(?P<user>\d+):(?P<guild>\d+|dm)",
):
    """Confirms ``/forget``: deletes what the person who asked wrote in that server (or in
    DMs), when that same person presses it and the gate lets them in."""

    def __init__(self, user_id: int, guild: str) -> None:
        super().__init__(
            button(
                f"seed:forget:{user_id}:{guild}",
                privacy_texts.FORGET_CONFIRM_LABEL,
                "🗑️",
                discord.ButtonStyle.danger,
            )
        )
        self.user_id = user_id
        self.guild = guild

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ForgetButton:
        return cls(int(match["user"]), match["guild"])

    async def callback(self, interaction: discord.Interaction) -> None:
        host = context_of(interaction)
        refusal = await host.gate.check_interaction(interaction)
        if refusal is not None:
            await ephemeral(interaction, refusal.text)
            return
        if interaction.user.id != self.user_id or self.guild != _guild_key(interaction.guild_id):
            await ephemeral(interaction, privacy_texts.FORGET_NOT_YOURS)
            return
        in_server = self.guild != _DM
        try:
            removed = await host.privacy.forget(
                str(self.user_id), self.guild if in_server else None
            )
        except StorageError as exc:
            log.warning("/forget of user %s failed: %s", self.user_id, exc)
            await ephemeral(interaction, texts.error_text(exc))
            return
        log.info(
            "user %s forgot %d turns (%s)",
            self.user_id,
            removed.turns,
            f"server {self.guild}" if in_server else "DMs",
        )
        try:
            await interaction.response.edit_message(
                content=privacy_texts.forgotten(removed.turns, removed.kept_unfinished, in_server),
                view=None,
            )
        except discord.HTTPException as exc:
            log.warning("cannot confirm /forget of user %s: %s", self.user_id, exc)


def register(tree: app_commands.CommandTree[Any], host: BotContext) -> None:
    """Add ``/export`` and ``/forget`` to ``tree`` (their button is in ``DYNAMIC_ITEMS``)."""

    @tree.command(name="export", description="Get this conversation as files (only you see them)")
    async def export_command(interaction: discord.Interaction) -> None:
        await export(host, interaction)

    @tree.command(
        name="forget", description="Delete everything you wrote to me in this server (or DM)"
    )
    async def forget_command(interaction: discord.Interaction) -> None:
        await forget(host, interaction)


DYNAMIC_ITEMS = (ForgetButton,)
