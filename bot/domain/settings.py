"""Settings resolution (thread → channel → server → config → model default) and validation
of user-supplied values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.domain.errors import InvalidSetting
from bot.domain.models import SETTING_NAMES, GenerationSettings, SettingsScope
from bot.domain.params import BY_NAME, PARAMS

CONFIG_SOURCE = "config file"
MODEL_SOURCE = "model default"


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
                (name, BY_NAME[name].model_default if value is None else value, self.sources[name])
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


def validate_settings(
    changes: GenerationSettings, scope: SettingsScope | None = None
) -> GenerationSettings:
    """Check user-supplied values against the parameters' ranges (and, given the ``scope``
    they are set at, where each may be set); raise ``InvalidSetting`` for the first bad one,
    naming it and what it accepts. Returns the cleaned values."""
    cleaned: dict[str, object] = {}
    for p in PARAMS:
        value = getattr(changes, p.name)
        if value is not None and scope is not None and scope not in p.scopes:
            where = " or ".join(s.value for s in SettingsScope if s in p.scopes)
            raise InvalidSetting(p.name, f"can only be set for a {where}")
        cleaned[p.name] = None if value is None else p.clean(value)
    return GenerationSettings.of(cleaned)
