"""Personas: bundles of settings an operator defines once in the config
(``[personas.<name>]``: a description, a system prompt and optionally any generation
parameter) and people set per thread, channel or server with ``/persona``. A persona is a
bundle of defaults at the scope it is set at: a value set explicitly at the same or a more
specific scope wins (bot.domain.settings)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.domain.errors import InvalidSetting
from bot.domain.models import GenerationSettings
from bot.domain.params import (
    BY_NAME,
    EFFORT,
    MAX_COMPLETION_TOKENS,
    MAX_PERSONA_NAME_CHARS,
    SYSTEM_PROMPT,
    TEMPERATURE,
    THINKING,
    TOP_P,
    Kind,
)

#: What a persona may set besides its system prompt.
PERSONA_PARAMS = (THINKING, EFFORT, MAX_COMPLETION_TOKENS, TEMPERATURE, TOP_P)
# A choice's label in Discord's autocomplete holds at most 100 characters.
MAX_DESCRIPTION_CHARS = 100
_TYPES: dict[Kind, type | tuple[type, ...]] = {
    Kind.CHOICE: str,
    Kind.TEXT: str,
    Kind.WHOLE: int,
    Kind.NUMBER: (int, float),
}
_TYPE_WORDS = {
    Kind.CHOICE: "a string",
    Kind.TEXT: "a string",
    Kind.WHOLE: "a whole number",
    Kind.NUMBER: "a number",
}
NAME_PATTERN = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{MAX_PERSONA_NAME_CHARS - 1}}}")


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    description: str
    settings: GenerationSettings  # its system prompt and the parameters it sets


Personas = Mapping[str, Persona]


def personas_from(tables: Mapping[str, Any], problems: list[str]) -> dict[str, Persona]:
    """The personas of the config's ``[personas]`` table; each problem is appended to
    ``problems`` (named ``[personas.<name>] key: …``) and its persona left out."""
    personas: dict[str, Persona] = {}
    for name, table in tables.items():
        where = f"[personas.{name}]"
        if not NAME_PATTERN.fullmatch(name):
            problems.append(
                f"{where}: a persona's name is 1-{MAX_PERSONA_NAME_CHARS} lowercase letters, "
                "digits, - or _, starting with a letter or digit"
            )
            continue
        if not isinstance(table, Mapping):
            problems.append(f"{where}: must be a table")
            continue
        persona = _persona(name, table, where, problems)
        if persona is not None:
            personas[name] = persona
    return personas


def _persona(
    name: str, table: Mapping[str, Any], where: str, problems: list[str]
) -> Persona | None:
    before = len(problems)
    allowed = {"description", SYSTEM_PROMPT.name, *(p.name for p in PERSONA_PARAMS)}
    for key in sorted(set(table) - allowed):
        problems.append(f"{where} {key}: unknown key (known: {', '.join(sorted(allowed))})")
    description = table.get("description")
    if not isinstance(description, str) or not description.strip():
        problems.append(f"{where} description: required, a short text shown in /persona")
    elif len(description.strip()) > MAX_DESCRIPTION_CHARS:
        problems.append(
            f"{where} description: at most {MAX_DESCRIPTION_CHARS} characters "
            f"(got {len(description.strip())})"
        )
    values: dict[str, Any] = {}
    if SYSTEM_PROMPT.name not in table:
        problems.append(f"{where} system_prompt: required")
    for key in (SYSTEM_PROMPT.name, *(p.name for p in PERSONA_PARAMS)):
        if key not in table:
            continue
        value = table[key]
        param = BY_NAME[key]
        if isinstance(value, bool) or not isinstance(value, _TYPES[param.kind]):
            problems.append(f"{where} {key}: must be {_TYPE_WORDS[param.kind]}")
            continue
        try:
            values[key] = param.clean(value)
        except InvalidSetting as exc:
            problems.append(f"{where} {key}: {exc.message}")
    if len(problems) > before:
        return None
    assert isinstance(description, str)
    return Persona(name, description.strip(), GenerationSettings.of(values))


def personas_section(data: Any, default: str | None, problems: list[str]) -> dict[str, Persona]:
    """The config's ``[personas]``; ``default`` (``[model] persona``) must name one of them."""
    if not isinstance(data, Mapping):
        problems.append("[personas]: must be a table of [personas.<name>] tables")
        return {}
    personas = personas_from(data, problems)
    if default is not None and default not in data:
        known = ", ".join(sorted(personas)) or "none defined"
        problems.append(f"[model] persona: no [personas.{default}] (known: {known})")
    return personas


# The end of config.example.toml: how a persona is written (commented out, so that the
# example shows the defaults and nothing else).
EXAMPLE_PERSONA = f"""\
# Personas: bundles of settings people pick with /persona (per thread, channel or server)
# or /ask persona:. Each needs a description (shown in /persona, at most
# {MAX_DESCRIPTION_CHARS} characters) and a system_prompt, and may set any of
# {", ".join(p.name for p in PERSONA_PARAMS)}.
# A value set explicitly at the same or a more specific place wins over the persona's.
# [personas.reviewer]
# description = "A terse, exacting code reviewer"
# system_prompt = "You review code. Point out bugs first, then style; be brief."
# thinking = "enabled"
# effort = "high"
# temperature = 0.3
"""
