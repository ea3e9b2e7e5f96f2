"""The settings commands, generated from the parameters' descriptors (bot.domain.params):
one command per choice (/thinking, /effort), /params for the numbers; with /system and
/settings."""

from __future__ import annotations

import inspect
from typing import Any, Optional

import discord
from discord import app_commands

from bot.chat import texts
from bot.chat.commands import SCOPE_WORDS, Refusal, settings_target
from bot.chat.context import BotContext
from bot.chat.personas import persona_choices, unknown_persona
from bot.chat.replies import ephemeral
from bot.domain.errors import InvalidSetting
from bot.domain.models import GenerationSettings
from bot.domain.params import MAX_PERSONA_NAME_CHARS, PARAMS, TUNING, Kind, Param
from bot.domain.ports import SettingsChange

SERVER_HINT = "Set the server's default"
# Each settings command is offered in servers only: a DM has no layers to set.
IN_SERVERS = app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
_COUNT_WORDS = ("none", "one", "both", "three", "four", "five", "six", "seven", "eight")


async def _change(
    bot: BotContext,
    interaction: discord.Interaction,
    server: bool,
    changes: GenerationSettings,
    clear: tuple[str, ...] = (),
    done: str = "",
) -> None:
    try:
        scope, scope_id = await settings_target(bot, interaction, server)
        await bot.service.settings.change(scope, scope_id, SettingsChange(changes, clear))
        bot.autoreply.forget()
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


def _choice_command(bot: BotContext, param: Param) -> app_commands.Command[Any, Any, None]:
    """``/<command> <option>: <choice> [server]``: set one choice parameter."""

    @IN_SERVERS
    @app_commands.rename(value=param.option)
    @app_commands.describe(value=param.hint, server=SERVER_HINT)
    @app_commands.choices(value=[app_commands.Choice(name=c, value=c) for c in param.choices])
    async def choose(interaction: discord.Interaction, value: str, server: bool = False) -> None:
        await _change(
            bot,
            interaction,
            server,
            GenerationSettings.of({param.name: value}),
            done=f"{param.label} set to **{value}**",
        )

    return app_commands.Command(name=param.command, description=param.command_doc, callback=choose)


def _option_type(param: Param) -> Any:
    """A number parameter's slash option: its kind, within its declared bounds."""
    lo, hi = param.bounds
    if param.kind is Kind.WHOLE:
        return Optional[app_commands.Range[int, int(lo), int(hi)]]  # noqa: UP045 (runtime)
    return Optional[app_commands.Range[float, float(lo), float(hi)]]  # noqa: UP045 (runtime)


def _tuning_command(bot: BotContext) -> app_commands.Command[Any, Any, None]:
    """``/params``: set (or reset) the number parameters, any of them at once."""
    options = [p.option for p in TUNING]

    async def tune(interaction: discord.Interaction, /, **given: Any) -> None:
        reset, server = bool(given.pop("reset")), bool(given.pop("server"))
        values = {p: given[p.option] for p in TUNING if given[p.option] is not None}
        if reset and values:
            await ephemeral(
                interaction,
                "⛔ Give either values or `reset: True`, not both. Nothing was changed.",
            )
            return
        if reset:
            clear = tuple(p.name for p in TUNING)
            await _change(
                bot, interaction, server, GenerationSettings(), clear, done="Parameters reset"
            )
            return
        if not values:
            shown_options = ", ".join(f"`{o}`" for o in options)
            await ephemeral(
                interaction, f"⛔ Give at least one of {shown_options} (or `reset: True`)."
            )
            return
        changes = GenerationSettings.of({p.name: v for p, v in values.items()})
        shown = ", ".join(f"{p.option} **{v}**" for p, v in values.items())
        await _change(bot, interaction, server, changes, done=f"Set {shown}")

    # The options are the descriptors': discord.py reads them from the signature.
    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    tune.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                "interaction", inspect.Parameter.POSITIONAL_ONLY, annotation=discord.Interaction
            ),
            *(
                inspect.Parameter(p.option, keyword, default=None, annotation=_option_type(p))
                for p in TUNING
            ),
            inspect.Parameter("reset", keyword, default=False, annotation=bool),
            inspect.Parameter("server", keyword, default=False, annotation=bool),
        ]
    )
    described = app_commands.describe(
        **{p.option: f"{p.hint} ({p.range_text})" for p in TUNING},
        reset=f"Unset all {_COUNT_WORDS[len(TUNING)]} here",
        server=SERVER_HINT,
    )(IN_SERVERS(tune))
    labels = [p.label for p in TUNING]
    return app_commands.Command(
        name="params",
        description=f"Set {', '.join(labels[:-1])} and {labels[-1]}",
        callback=described,
    )


def register(tree: app_commands.CommandTree[Any], bot: BotContext) -> None:
    """Add the settings commands to ``tree``."""
    for param in PARAMS:
        if param.kind is Kind.CHOICE:
            tree.add_command(_choice_command(bot, param))
    tree.add_command(_tuning_command(bot))

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

    @tree.command(name="persona", description="Set or clear the persona: a bundle of settings")
    @IN_SERVERS
    @app_commands.describe(
        name="One of the personas this bot offers",
        clear="Remove the persona set here",
        server=SERVER_HINT,
    )
    async def persona(
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, MAX_PERSONA_NAME_CHARS] | None = None,
        clear: bool = False,
        server: bool = False,
    ) -> None:
        if clear == (name is not None):
            await ephemeral(interaction, "⛔ Give either a `name` or `clear: True`.")
            return
        if name is None:
            clearing = ("persona",)
            await _change(
                bot, interaction, server, GenerationSettings(), clearing, "Persona cleared"
            )
            return
        if (refusal := unknown_persona(bot, name)) is not None:
            await ephemeral(interaction, refusal)
            return
        chosen = GenerationSettings(persona=name)
        await _change(bot, interaction, server, chosen, done=f"Persona set to **{name}**")

    @persona.autocomplete("name")
    async def persona_names(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return persona_choices(bot, current)

    @tree.command(
        name="settings", description="Show the settings used here and where each comes from"
    )
    @app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
    async def settings(interaction: discord.Interaction) -> None:
        thread_id, channel_id = _thread_ids(interaction)
        effective = await bot.service.settings.effective(
            thread_id=thread_id,
            channel_id=channel_id,
            guild_id=str(interaction.guild_id) if interaction.guild_id else None,
        )
        lines = ["**Settings here**"]
        for name, value, source in effective.describe():
            shown = "—" if value is None else str(value)
            if name == "system_prompt" and value is not None:
                shown = texts.quote_inline(str(value), 120)
            if name == "persona" and value in effective.missing:
                shown = f"{shown} — {texts.PERSONA_GONE}"
            lines.append(f"• `{name}`: {shown} *({source})*")
        await ephemeral(interaction, "\n".join(lines))
