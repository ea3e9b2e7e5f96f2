"""Settings resolution (thread → channel → server → config → model default) and validation
of user-supplied values."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.domain.errors import InvalidSetting
from bot.domain.models import (
    EFFORT_LEVELS,
    MAX_TOKENS_RANGE,
    MODEL_DEFAULT_MAX_TOKENS,
    MODEL_DEFAULT_TEMPERATURE,
    MODEL_DEFAULT_THINKING,
    MODEL_DEFAULT_TOP_P,
    SETTING_NAMES,
    TEMPERATURE_RANGE,
    THINKING_MODES,
    TOP_P_RANGE,
    GenerationSettings,
    SettingsScope,
)

CONFIG_SOURCE = "config file"
MODEL_SOURCE = "model default"
MAX_SYSTEM_PROMPT_CHARS = 8000

# What the model does when a value is not sent (seed-api.md); shown by /settings.
MODEL_DEFAULTS: dict[str, object] = {
    "thinking": MODEL_DEFAULT_THINKING,
    "effort": None,
    "system_prompt": None,
    "max_completion_tokens": MODEL_DEFAULT_MAX_TOKENS,
    "temperature": MODEL_DEFAULT_TEMPERATURE,
    "top_p": MODEL_DEFAULT_TOP_P,
}


@dataclass(frozen=True, slots=True)
class EffectiveSettings:
    """The settings a turn uses, and for each one where it came from."""

    values: GenerationSettings
    sources: Mapping[str, str]

    def describe(self) -> list[tuple[str, object, str]]:
        """(name, value shown, source) rows; unset values show the model's default."""
        rows = []
        for name in SETTING_NAMES:
            value = getattr(self.values, name)
            rows.append(
                (name, MODEL_DEFAULTS[name] if value is None else value, self.sources[name])
            )
        return rows


def resolve_settings(
    layers: Mapping[SettingsScope, GenerationSettings], config: GenerationSettings
) -> EffectiveSettings:
    """Merge the stored layers over the config defaults, highest precedence first."""
    ordered = [(scope.value, layers.get(scope)) for scope in SettingsScope]
    ordered.append((CONFIG_SOURCE, config))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in SETTING_NAMES:
        for source, layer in ordered:
            value = getattr(layer, name) if layer is not None else None
            if value is not None:
                values[name] = value
                sources[name] = source
                break
        else:
            values[name] = None
            sources[name] = MODEL_SOURCE
    return EffectiveSettings(GenerationSettings(**values), sources)


def _number_in(name: str, value: float, lo: float, hi: float) -> None:
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidSetting(name, f"must be between {lo:g} and {hi:g} (got {value:g})")


def validate_settings(changes: GenerationSettings) -> GenerationSettings:
    """Check user-supplied values against the model's ranges; raise ``InvalidSetting`` for
    the first bad one, naming it and the valid range. Returns the cleaned values."""
    if changes.thinking is not None and changes.thinking not in THINKING_MODES:
        raise InvalidSetting("thinking", f"must be one of {', '.join(THINKING_MODES)}")
    if changes.effort is not None and changes.effort not in EFFORT_LEVELS:
        raise InvalidSetting("effort", f"must be one of {', '.join(EFFORT_LEVELS)}")
    if changes.max_completion_tokens is not None:
        lo, hi = MAX_TOKENS_RANGE
        if not lo <= changes.max_completion_tokens <= hi:
            raise InvalidSetting(
                "max_completion_tokens",
                f"must be a whole number between {lo} and {hi} "
                f"(got {changes.max_completion_tokens})",
            )
    if changes.temperature is not None:
        _number_in("temperature", changes.temperature, *TEMPERATURE_RANGE)
    if changes.top_p is not None:
        _number_in("top_p", changes.top_p, *TOP_P_RANGE)
    system = changes.system_prompt
    if system is not None:
        system = system.strip()
        if not system:
            raise InvalidSetting("system_prompt", "is empty; use the clear option to remove it")
        if len(system) > MAX_SYSTEM_PROMPT_CHARS:
            raise InvalidSetting(
                "system_prompt",
                f"is {len(system)} characters; at most {MAX_SYSTEM_PROMPT_CHARS} are allowed",
            )
    return GenerationSettings(
        thinking=changes.thinking,
        effort=changes.effort,
        system_prompt=system,
        max_completion_tokens=changes.max_completion_tokens,
        temperature=changes.temperature,
        top_p=changes.top_p,
    )
