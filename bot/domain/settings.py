"""Settings resolution (thread → channel → server → config → model default) and validation
of user-supplied values."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from bot.domain.errors import InvalidSetting
from bot.domain.models import SETTING_NAMES, GenerationSettings, SettingsScope
from bot.domain.params import BY_NAME, PARAMS
from bot.domain.personas import Personas
from bot.domain.ports import SettingsChange, SettingsStore

log = logging.getLogger(__name__)

CONFIG_SOURCE = "config file"
MODEL_SOURCE = "model default"


@dataclass(frozen=True, slots=True)
class EffectiveSettings:
    """The settings a turn uses, and for each one where it came from. ``missing``: the
    personas set here that the config no longer defines (ignored)."""

    values: GenerationSettings
    sources: Mapping[str, str]
    missing: frozenset[str] = frozenset()

    def describe(self) -> list[tuple[str, object, str]]:
        """(name, value shown, source) rows; unset values show the model's default."""
        rows = []
        for name in SETTING_NAMES:
            value = getattr(self.values, name)
            rows.append(
                (name, BY_NAME[name].model_default if value is None else value, self.sources[name])
            )
        return rows


def persona_source(persona: str, where: str) -> str:
    return f"persona {persona}, {where}"


def resolve_settings(
    layers: Mapping[SettingsScope, GenerationSettings],
    config: GenerationSettings,
    personas: Personas = MappingProxyType({}),
) -> EffectiveSettings:
    """Merge the stored layers over the config defaults, highest precedence first. A
    persona set at a layer comes right below that layer's own values: a bundle of defaults
    at its scope."""
    ordered: list[tuple[str, GenerationSettings | None]] = []
    missing: set[str] = set()
    for source, layer in [
        *((s.value, layers.get(s)) for s in SettingsScope),
        (CONFIG_SOURCE, config),
    ]:
        ordered.append((source, layer))
        name = layer.persona if layer is not None else None
        if name is None:
            continue
        persona = personas.get(name)
        if persona is None:
            missing.add(name)
        else:
            ordered.append((persona_source(name, source), persona.settings))
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
    return EffectiveSettings(GenerationSettings(**values), sources, frozenset(missing))


class SettingsResolver:
    """``resolve_settings`` over the config's defaults and personas (a new one on reload).
    A persona set somewhere but gone from the config is logged once per name, not at every
    turn that meets it."""

    def __init__(self, config: GenerationSettings, personas: Personas) -> None:
        self.config = config
        self.personas = personas
        self._reported: set[str] = set()

    def __call__(self, layers: Mapping[SettingsScope, GenerationSettings]) -> EffectiveSettings:
        effective = resolve_settings(layers, self.config, self.personas)
        for name in effective.missing - self._reported:
            log.warning("persona %r is set but not in the config: ignored", name)
            self._reported.add(name)
        return effective


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


class Overrides:
    """The stored overrides as people read and change them (the settings commands, the
    autoreply mode): a place's layers resolved into the settings a turn there uses, and a
    change validated (``InvalidSetting``) before it is stored. ``resolve``: the service's
    current resolver (a new one on reload)."""

    def __init__(self, store: SettingsStore, resolve: SettingsResolver) -> None:
        self._store = store
        self.resolve = resolve

    async def effective(
        self, *, thread_id: str | None, channel_id: str | None, guild_id: str | None
    ) -> EffectiveSettings:
        layers = await self._store.settings_layers(
            thread_id=thread_id, channel_id=channel_id, guild_id=guild_id
        )
        return self.resolve(layers)

    async def change(
        self, scope: SettingsScope, scope_id: str, change: SettingsChange
    ) -> GenerationSettings:
        """Validate and apply ``change`` at one scope; return the scope's overrides."""
        valid = replace(change, values=validate_settings(change.values, scope))
        return await self._store.update_settings(scope, scope_id, valid)
