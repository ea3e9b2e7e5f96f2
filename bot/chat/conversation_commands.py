"""The conversation commands: /ask (a new conversation, or the next turn of this one),
/reset and /retry."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import discord
from discord import app_commands

from bot.chat import controls, convert, texts
from bot.chat.commands import EffortChoice, Refusal, ThinkingChoice, settings_target
from bot.chat.context import BotContext
from bot.chat.interaction_delivery import interaction_scope
from bot.chat.interaction_turns import (
    answer_is_ephemeral,
    answer_through,
    may_bind_by_interaction,
    may_post,
)
from bot.chat.personas import persona_choices, unknown_persona
from bot.chat.replies import ephemeral, telling_failures
from bot.chat.threads import ThreadRefused, open_thread
from bot.domain.admission import Admission
from bot.domain.models import GenerationSettings, SettingsScope
from bot.domain.params import MAX_PERSONA_NAME_CHARS
from bot.domain.ports import SettingsChange

log = logging.getLogger(__name__)


def register(tree: app_commands.CommandTree[Any], bot: BotContext) -> None:
    """Add the conversation commands to ``tree``."""

    @tree.command(name="reset", description="Start this thread's conversation afresh")
    async def reset(interaction: discord.Interaction) -> None:
        channel = interaction.channel
        if channel is None or (
            interaction.guild_id is not None and not isinstance(channel, discord.Thread)
        ):
            await ephemeral(interaction, "⛔ Use `/reset` inside a conversation's thread.")
            return
        try:
            await settings_target(bot, interaction, server=False)
        except Refusal as exc:
            await ephemeral(interaction, f"⛔ {exc}")
            return
        conversation = await bot.conversations.conversation_for_scope(str(channel.id))
        if conversation is None:
            await ephemeral(interaction, texts.NOT_CONVERSATION)
            return
        # A turn still running keeps the epoch it started in: its answer stays out of the
        # new one.
        await bot.conversations.reset(conversation.id)
        await ephemeral(
            interaction,
            "✅ Started afresh: earlier messages here are kept but no longer sent to the model.",
        )

    @tree.command(name="retry", description="Answer the last message of this thread again")
    async def retry(interaction: discord.Interaction) -> None:
        channel = interaction.channel
        latest = await bot.turns.latest_turn(str(channel.id)) if channel is not None else None
        if latest is None:
            await ephemeral(interaction, texts.NOTHING_TO_RETRY)
            return
        await controls.retry(bot, interaction, latest)

    @tree.command(name="ask", description="Ask the model; starts a new thread")
    @app_commands.allowed_installs(guilds=True, users=True)
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
    @app_commands.describe(
        prompt="Your question",
        image="An image to include",
        video="A video to include",
        private="In a server with me: a private thread. Elsewhere only you see the answer "
        "unless you set this to False",
        thinking="Thinking mode for this conversation",
        effort="Reasoning effort for this conversation",
        persona="A persona for this conversation",
    )
    async def ask(
        interaction: discord.Interaction,
        prompt: str,
        image: discord.Attachment | None = None,
        video: discord.Attachment | None = None,
        private: bool | None = None,
        thinking: ThinkingChoice | None = None,
        effort: EffortChoice | None = None,
        persona: app_commands.Range[str, 1, MAX_PERSONA_NAME_CHARS] | None = None,
    ) -> None:
        if persona is not None and (refusal := unknown_persona(bot, persona)) is not None:
            await ephemeral(interaction, refusal)
            return
        asked = Ask(
            prompt,
            [a for a in (image, video) if a is not None],
            private,
            GenerationSettings(thinking=thinking, effort=effort, persona=persona),
        )
        # In the bot's own task, so a shutdown drains it like any turn.
        run_ask = ask_here if convert.bot_is_present(interaction) else ask_elsewhere
        bot.spawn(
            telling_failures(interaction, run_ask(bot, interaction, asked)),
            name=f"ask-{interaction.id}",
        )

    @ask.autocomplete("persona")
    async def ask_personas(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return persona_choices(bot, current)


@dataclass(frozen=True, slots=True)
class Ask:
    """What ``/ask`` was given: the question, its files, the visibility asked for (None:
    the place's default) and the settings its options set for the conversation."""

    prompt: str
    attachments: list[discord.Attachment]
    private: bool | None
    settings: GenerationSettings


async def ask_elsewhere(bot: BotContext, interaction: discord.Interaction, asked: Ask) -> None:
    """``/ask`` where the bot is not a member, or where the person could not post what it
    would: a new conversation answered through the interaction, privately unless asked
    otherwise (and allowed)."""
    admission = await bot.gate.admit_interaction(interaction)
    if not isinstance(admission, Admission):
        await ephemeral(interaction, admission.text)
        return
    scope_id = interaction_scope(interaction.id)
    if not asked.settings.is_empty():
        await bot.service.settings.change(
            SettingsScope.THREAD, scope_id, SettingsChange(asked.settings)
        )
    await answer_through(
        bot,
        interaction,
        admission,
        text=asked.prompt,
        attachments=asked.attachments,
        scope_id=scope_id,
        ephemeral=answer_is_ephemeral(interaction, asked.private),
    )


async def ask_here(bot: BotContext, interaction: discord.Interaction, asked: Ask) -> None:
    """``/ask`` where the bot is a member: a thread (or the thread or DM it is used in)."""
    private = bool(asked.private)
    channel = interaction.channel
    user = interaction.user
    if channel is None:
        await ephemeral(interaction, "⛔ This command can't be used here.")
        return
    if interaction.guild_id is None and not bot.allow_dms:
        await ephemeral(interaction, "⛔ Direct messages are turned off for this bot.")
        return
    in_place = isinstance(channel, discord.Thread) or interaction.guild_id is None
    if not in_place and not isinstance(channel, discord.TextChannel):
        await ephemeral(interaction, "⛔ `/ask` works in text channels and threads.")
        return
    if not may_post(interaction, new_thread=None if in_place else private):
        # The bot never posts, nor opens a thread, where the person could not: a new
        # conversation answered only to them.
        log.info("/ask of user %s in %s answered privately", user.id, channel.id)
        await ask_elsewhere(bot, interaction, replace(asked, private=True))
        return
    one_off = isinstance(channel, discord.Thread) and not await may_bind_by_interaction(
        bot.service, interaction, channel
    )
    if in_place and not one_off and not asked.settings.is_empty():
        # The options change an existing conversation's settings: same rule as /thinking.
        try:
            await settings_target(bot, interaction, server=False)
        except Refusal as exc:
            await ephemeral(interaction, f"⛔ {exc}")
            return
    admission = await bot.gate.admit_interaction(interaction)
    if not isinstance(admission, Admission):
        await ephemeral(interaction, admission.text)
        return
    if not in_place:
        # Refuse before acknowledging, so the refusal can be ephemeral: Discord sends the
        # bot's own permissions in this channel with the interaction.
        needed = "create_private_threads" if private else "create_public_threads"
        if not getattr(interaction.app_permissions, needed):
            log.warning("cannot create a thread in %s: missing permission %s", channel.id, needed)
            await ephemeral(interaction, texts.no_thread_permission(private))
            return
    # Acknowledge within Discord's 3 s: creating the thread may take longer. The first
    # followup then replaces the "thinking" message, with the visibility chosen here.
    # "Started in <thread>" shows the thread's name (the prompt): in the channel only where
    # the person could post there themselves.
    quiet = not in_place and (private or not interaction.permissions.send_messages)
    await interaction.response.defer(ephemeral=quiet, thinking=True)

    echo = f"{texts.bold_name(user.display_name)} asked: {texts.quote_inline(asked.prompt, 1500)}"
    if in_place:
        # Inside a thread (or a DM) /ask continues the conversation there, or in a thread
        # the person may not bind, is answered once.
        scope_id = convert.one_off_scope(interaction.id) if one_off else channel.id
        parent_id = getattr(channel, "parent_id", None)
        anchor: discord.Message = await interaction.followup.send(
            echo, allowed_mentions=texts.NO_MENTIONS, wait=True
        )
    else:
        assert isinstance(channel, discord.TextChannel)
        thread = await open_thread(channel, asked.prompt, user.display_name, private=private)
        if isinstance(thread, ThreadRefused):
            await ephemeral(interaction, thread.text)
            return
        if private:
            try:
                await thread.add_user(user)
            except discord.HTTPException as exc:
                log.warning("cannot add user %s to thread %s: %s", user.id, thread.id, exc)
                await ephemeral(interaction, texts.THREAD_REFUSED)
                return
        await interaction.followup.send(
            texts.started_in(thread.mention), allowed_mentions=texts.NO_MENTIONS
        )
        anchor = await thread.send(echo, allowed_mentions=texts.NO_MENTIONS)
        scope_id, parent_id = thread.id, channel.id
    if not asked.settings.is_empty():
        await bot.service.settings.change(
            SettingsScope.THREAD, str(scope_id), SettingsChange(asked.settings)
        )
    incoming = convert.incoming_from_interaction(
        interaction,
        text=asked.prompt,
        attachments=asked.attachments,
        scope_id=scope_id,
        parent_channel_id=parent_id,
        reply_to=anchor.id,
        answer_in=channel.id if one_off else None,
    )
    await bot.service.respond(incoming, admission, batchable=False)
