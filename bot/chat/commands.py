"""Slash commands. Each answers ephemerally, except /ask, whose answer is the conversation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, Protocol

import discord
from discord import app_commands

from bot.chat import controls, convert, texts
from bot.chat.gate import Gate, may_control
from bot.chat.interaction_delivery import interaction_scope
from bot.chat.interaction_turns import (
    answer_is_ephemeral,
    answer_through,
    may_bind_by_interaction,
    may_post,
)
from bot.chat.live_interactions import LiveInteractions
from bot.chat.replies import ephemeral, telling_failures
from bot.chat.threads import ThreadRefused, open_thread
from bot.domain.admission import Admission
from bot.domain.errors import InvalidSetting
from bot.domain.models import (
    MAX_TOKENS_RANGE,
    TEMPERATURE_RANGE,
    TOP_P_RANGE,
    GenerationSettings,
    SettingsScope,
)
from bot.domain.service import ConversationService

log = logging.getLogger(__name__)


class Host(Protocol):
    """What the commands need from the bot (it is also the buttons' controller)."""

    @property
    def gate(self) -> Gate: ...

    @property
    def service(self) -> ConversationService: ...

    @property
    def allow_dms(self) -> bool: ...

    @property
    def interactions(self) -> LiveInteractions: ...

    reload_config: Callable[[], Awaitable[list[str]]] | None

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]: ...

    async def is_owner(self, user: discord.abc.User) -> bool: ...


ThinkingChoice = Literal["enabled", "disabled", "auto"]
EffortChoice = Literal["minimal", "low", "medium", "high"]
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


async def settings_target(
    bot: Host, interaction: discord.Interaction, server: bool
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
        conversation = await bot.service.conversation_for_scope(str(channel.id))
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


async def _change(
    bot: Host,
    interaction: discord.Interaction,
    server: bool,
    changes: GenerationSettings,
    clear: tuple[str, ...] = (),
    done: str = "",
) -> None:
    try:
        scope, scope_id = await settings_target(bot, interaction, server)
        await bot.service.update_settings(scope, scope_id, changes, clear=clear)
    except Refusal as exc:
        await ephemeral(interaction, f"⛔ {exc}")
        return
    except InvalidSetting as exc:
        await ephemeral(interaction, texts.error_text(exc) + " Nothing was changed.")
        return
    await ephemeral(interaction, f"✅ {done} for {SCOPE_WORDS[scope]}.")


def _thread_ids(interaction: discord.Interaction) -> tuple[str | None, str | None]:
    channel = interaction.channel
    if isinstance(channel, discord.Thread):
        return str(channel.id), str(channel.parent_id)
    if interaction.guild_id is None and channel is not None:
        return str(channel.id), None
    return None, str(channel.id) if channel is not None else None


def register(tree: app_commands.CommandTree[Any], bot: Host) -> None:
    """Add the bot's commands to ``tree`` (syncing is separate and deliberate)."""

    @tree.command(name="thinking", description="Set whether the model thinks before answering")
    @app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
    @app_commands.describe(mode="enabled, disabled or auto", server="Set the server's default")
    async def thinking(
        interaction: discord.Interaction, mode: ThinkingChoice, server: bool = False
    ) -> None:
        await _change(
            bot,
            interaction,
            server,
            GenerationSettings(thinking=mode),
            done=f"Thinking set to **{mode}**",
        )

    @tree.command(name="effort", description="Set how hard the model thinks")
    @app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
    @app_commands.describe(level="minimal, low, medium or high", server="Set the server's default")
    async def effort(
        interaction: discord.Interaction, level: EffortChoice, server: bool = False
    ) -> None:
        await _change(
            bot,
            interaction,
            server,
            GenerationSettings(effort=level),
            done=f"Effort set to **{level}**",
        )

    @tree.command(name="system", description="Set or clear the system prompt")
    @app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
    @app_commands.describe(
        prompt="The system prompt (omit and set clear to remove it)",
        clear="Remove the system prompt",
        server="Set the server's default",
    )
    async def system(
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 6000] | None = None,
        clear: bool = False,
        server: bool = False,
    ) -> None:
        if clear == (prompt is not None):
            await ephemeral(interaction, "⛔ Give either a `prompt` or `clear: True`.")
            return
        if clear:
            await _change(
                bot,
                interaction,
                server,
                GenerationSettings(),
                ("system_prompt",),
                done="System prompt cleared",
            )
        else:
            await _change(
                bot,
                interaction,
                server,
                GenerationSettings(system_prompt=prompt),
                done="System prompt set",
            )

    @tree.command(name="params", description="Set max tokens, temperature and top_p")
    @app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
    @app_commands.describe(
        max_tokens=f"Output budget incl. reasoning ({MAX_TOKENS_RANGE[0]}–{MAX_TOKENS_RANGE[1]})",
        temperature=f"Randomness ({TEMPERATURE_RANGE[0]:g}–{TEMPERATURE_RANGE[1]:g})",
        top_p=f"Nucleus sampling ({TOP_P_RANGE[0]:g}–{TOP_P_RANGE[1]:g})",
        reset="Unset all three here",
        server="Set the server's default",
    )
    async def params(
        interaction: discord.Interaction,
        max_tokens: app_commands.Range[int, MAX_TOKENS_RANGE[0], MAX_TOKENS_RANGE[1]] | None = None,
        temperature: app_commands.Range[float, TEMPERATURE_RANGE[0], TEMPERATURE_RANGE[1]]
        | None = None,
        top_p: app_commands.Range[float, TOP_P_RANGE[0], TOP_P_RANGE[1]] | None = None,
        reset: bool = False,
        server: bool = False,
    ) -> None:
        given = max_tokens is not None or temperature is not None or top_p is not None
        if reset and given:
            await ephemeral(
                interaction,
                "⛔ Give either values or `reset: True`, not both. Nothing was changed.",
            )
            return
        if reset:
            clear = ("max_completion_tokens", "temperature", "top_p")
            await _change(
                bot, interaction, server, GenerationSettings(), clear, done="Parameters reset"
            )
            return
        if not given:
            await ephemeral(
                interaction,
                "⛔ Give at least one of `max_tokens`, `temperature`, `top_p` (or `reset: True`).",
            )
            return
        changes = GenerationSettings(
            max_completion_tokens=max_tokens, temperature=temperature, top_p=top_p
        )
        shown = ", ".join(
            f"{k} **{v}**"
            for k, v in (("max_tokens", max_tokens), ("temperature", temperature), ("top_p", top_p))
            if v is not None
        )
        await _change(bot, interaction, server, changes, done=f"Set {shown}")

    @tree.command(
        name="settings", description="Show the settings used here and where each comes from"
    )
    @app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
    async def settings(interaction: discord.Interaction) -> None:
        thread_id, channel_id = _thread_ids(interaction)
        effective = await bot.service.effective_settings(
            thread_id=thread_id,
            channel_id=channel_id,
            guild_id=str(interaction.guild_id) if interaction.guild_id else None,
        )
        lines = ["**Settings here**"]
        for name, value, source in effective.describe():
            shown = "—" if value is None else str(value)
            if name == "system_prompt" and value is not None:
                shown = texts.quote_inline(str(value), 120)
            lines.append(f"• `{name}`: {shown} *({source})*")
        await ephemeral(interaction, "\n".join(lines))

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
        epoch = await bot.service.reset(str(channel.id))
        if epoch is None:
            await ephemeral(interaction, texts.NOT_CONVERSATION)
            return
        await ephemeral(
            interaction,
            "✅ Started afresh: earlier messages here are kept but no longer sent to the model.",
        )

    @tree.command(name="retry", description="Answer the last message of this thread again")
    async def retry(interaction: discord.Interaction) -> None:
        channel = interaction.channel
        latest = await bot.service.latest_turn(str(channel.id)) if channel is not None else None
        if latest is None:
            await ephemeral(interaction, texts.NOTHING_TO_RETRY)
            return
        await controls.retry(bot, interaction, latest)

    admin = app_commands.Group(name="admin", description="Bot administration (bot owner only)")

    @admin.command(name="reload", description="Reload config.toml without reconnecting")
    async def admin_reload(interaction: discord.Interaction) -> None:
        if not await bot.is_owner(interaction.user):
            await ephemeral(interaction, "⛔ Only the bot's owner can do that.")
            return
        if bot.reload_config is None:
            await ephemeral(interaction, "⛔ This bot was started without a config file to reload.")
            return
        problems = await bot.reload_config()
        if problems:
            shown = "\n".join(f"• {texts.clip(p, 180)}" for p in problems[:10])
            await ephemeral(interaction, f"⛔ The config was not reloaded:\n{shown}")
        else:
            await ephemeral(interaction, "✅ Config reloaded.")

    tree.add_command(admin)

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
    )
    async def ask(
        interaction: discord.Interaction,
        prompt: str,
        image: discord.Attachment | None = None,
        video: discord.Attachment | None = None,
        private: bool | None = None,
        thinking: ThinkingChoice | None = None,
        effort: EffortChoice | None = None,
    ) -> None:
        # In the bot's own task, so a shutdown drains it like any turn.
        run_ask = ask_here if convert.bot_is_present(interaction) else ask_elsewhere
        ask = run_ask(
            bot,
            interaction,
            prompt,
            [a for a in (image, video) if a is not None],
            private=private,
            thinking=thinking,
            effort=effort,
        )
        bot.spawn(telling_failures(interaction, ask), name=f"ask-{interaction.id}")


async def ask_elsewhere(
    bot: Host,
    interaction: discord.Interaction,
    prompt: str,
    attachments: list[discord.Attachment],
    *,
    private: bool | None,
    thinking: ThinkingChoice | None,
    effort: EffortChoice | None,
) -> None:
    """``/ask`` where the bot is not a member, or where the person could not post what it
    would: a new conversation answered through the interaction, privately unless asked
    otherwise (and allowed)."""
    admission = await bot.gate.admit_interaction(interaction)
    if not isinstance(admission, Admission):
        await ephemeral(interaction, admission.text)
        return
    scope_id = interaction_scope(interaction.id)
    if thinking is not None or effort is not None:
        await bot.service.update_settings(
            SettingsScope.THREAD, scope_id, GenerationSettings(thinking=thinking, effort=effort)
        )
    await answer_through(
        bot,
        interaction,
        admission,
        text=prompt,
        attachments=attachments,
        scope_id=scope_id,
        ephemeral=answer_is_ephemeral(interaction, private),
    )


async def ask_here(
    bot: Host,
    interaction: discord.Interaction,
    prompt: str,
    attachments: list[discord.Attachment],
    *,
    private: bool | None,
    thinking: ThinkingChoice | None,
    effort: EffortChoice | None,
) -> None:
    """``/ask`` where the bot is a member: a thread (or the thread or DM it is used in)."""
    private = bool(private)
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
        await ask_elsewhere(
            bot,
            interaction,
            prompt,
            attachments,
            private=True,
            thinking=thinking,
            effort=effort,
        )
        return
    one_off = isinstance(channel, discord.Thread) and not await may_bind_by_interaction(
        bot.service, interaction, channel
    )
    if in_place and not one_off and (thinking is not None or effort is not None):
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

    echo = f"{texts.bold_name(user.display_name)} asked: {texts.quote_inline(prompt, 1500)}"
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
        thread = await open_thread(channel, prompt, user.display_name, private=private)
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
    if thinking is not None or effort is not None:
        await bot.service.update_settings(
            SettingsScope.THREAD,
            str(scope_id),
            GenerationSettings(thinking=thinking, effort=effort),
        )
    incoming = convert.incoming_from_interaction(
        interaction,
        text=prompt,
        attachments=attachments,
        scope_id=scope_id,
        parent_channel_id=parent_id,
        reply_to=anchor.id,
        answer_in=channel.id if one_off else None,
    )
    await bot.service.respond(incoming, admission, batchable=False)
