"""The settings commands: /thinking, /effort, /system, /params and /settings."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.chat import texts
from bot.chat.commands import (
    SCOPE_WORDS,
    EffortChoice,
    Host,
    Refusal,
    ThinkingChoice,
    settings_target,
)
from bot.chat.replies import ephemeral
from bot.domain.errors import InvalidSetting
from bot.domain.models import (
    MAX_TOKENS_RANGE,
    TEMPERATURE_RANGE,
    TOP_P_RANGE,
    GenerationSettings,
)


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
    """Add the settings commands to ``tree``."""

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
