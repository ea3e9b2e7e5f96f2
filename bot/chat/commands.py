"""What every slash command shares: the context they reach the bot through, the command tree
(which passes the gate first), and where a settings change applies. The commands themselves
live by feature: settings_commands, conversation_commands, admin_commands, privacy, usage.
Each answers ephemerally, except /ask, whose answer is the conversation."""

from __future__ import annotations

from collections.abc import Callable

import discord
from discord import app_commands

from bot.chat import texts
from bot.chat.context import BotContext
from bot.chat.gate import Gate, may_control
from bot.chat.replies import ephemeral, tell_failure
from bot.domain.errors import SeedBotError
from bot.domain.models import SettingsScope
from bot.domain.params import Effort, Thinking

# /ask offers the choice parameters as options of its own (discord.py reads the Literal).
ThinkingChoice = Thinking
EffortChoice = Effort
SCOPE_WORDS = {
    SettingsScope.THREAD: "this thread",
    SettingsScope.CHANNEL: "this channel's default",
    SettingsScope.SERVER: "this server's default",
}


class Refusal(Exception):
    """A command refused with a message for the user."""


#: Where commands are offered unless they say otherwise: the servers that added the bot and
#: its DM (a guild installation). ``/ask`` and "Ask Seed" are offered everywhere.
GUILD_INSTALL = app_commands.AppInstallationType(guild=True, user=False)
GUILD_AND_BOT_DM = app_commands.AppCommandContext(guild=True, dm_channel=True)


class SeedTree(app_commands.CommandTree[discord.Client]):
    """The command tree: every command (and so every setting change) passes the gate's
    access lists, like messages do."""

    def __init__(self, client: discord.Client, gate: Callable[[], Gate]) -> None:
        super().__init__(client, allowed_installs=GUILD_INSTALL, allowed_contexts=GUILD_AND_BOT_DM)
        self._gate = gate

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        refusal = await self._gate().check_interaction(interaction)
        if refusal is None:
            return True
        await ephemeral(interaction, refusal.text)
        return False

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """A failure the bot knows (the database away, say) is told to the person privately,
        whichever command met it, or Discord would show "The application did not respond";
        anything else is logged as discord.py does."""
        failure = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        if not isinstance(failure, SeedBotError):
            await super().on_error(interaction, error)
            return
        await tell_failure(interaction, failure)


async def settings_target(
    bot: BotContext, interaction: discord.Interaction, server: bool
) -> tuple[SettingsScope, str]:
    """Where a settings command applies, and whether the user may change it there."""
    perms = interaction.permissions
    channel = interaction.channel
    if server:
        if interaction.guild_id is None:
            raise Refusal("The `server` option only works in a server.")
        if not perms.manage_guild:
            raise Refusal("Changing the server's defaults needs the **Manage Server** permission.")
        return SettingsScope.SERVER, str(interaction.guild_id)
    if channel is None:
        raise Refusal("This command can't be used here.")
    if interaction.guild_id is None:  # a DM: the DM's own conversation
        return SettingsScope.THREAD, str(channel.id)
    if isinstance(channel, discord.Thread):
        conversation = await bot.conversations.conversation_for_scope(str(channel.id))
        owner = conversation.owner_id if conversation else str(channel.owner_id)
        if not may_control(interaction, owner):
            raise Refusal(texts.only_controller("change its settings").removeprefix("⛔ "))
        return SettingsScope.THREAD, str(channel.id)
    if not perms.manage_channels:
        raise Refusal(
            "Changing this channel's defaults needs the **Manage Channels** permission. "
            "Use the command inside your conversation's thread to change just that thread."
        )
    return SettingsScope.CHANNEL, str(channel.id)
