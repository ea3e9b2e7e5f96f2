"""Persona names as the commands take them (``/persona``, ``/ask persona:``): offered with
their descriptions as one types, and checked against the config."""

from __future__ import annotations

from discord import app_commands

from bot.chat import texts
from bot.chat.context import BotContext

CHOICES_SHOWN = 25  # Discord shows at most 25 suggestions
CHOICE_NAME_CHARS = 100  # and cuts none: a longer label is refused


def unknown_persona(bot: BotContext, name: str) -> str | None:
    """The refusal of a persona name the config does not define, else None."""
    personas = bot.service.config.personas
    return None if name in personas else texts.unknown_persona(name, sorted(personas))


def persona_choices(bot: BotContext, current: str) -> list[app_commands.Choice[str]]:
    """The personas matching what was typed (in the name or the description), by name."""
    typed = current.strip().lower()
    return [
        app_commands.Choice(name=f"{p.name} — {p.description}"[:CHOICE_NAME_CHARS], value=p.name)
        for p in sorted(bot.service.config.personas.values(), key=lambda p: p.name)
        if typed in p.name or typed in p.description.lower()
    ][:CHOICES_SHOWN]
