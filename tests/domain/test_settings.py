"""Settings resolution and validation."""

from __future__ import annotations

import math

import pytest

from bot.domain.errors import InvalidSetting
from bot.domain.models import GenerationSettings, SettingsScope
from bot.domain.personas import Persona
from bot.domain.settings import CONFIG_SOURCE, MODEL_SOURCE, resolve_settings, validate_settings

G = GenerationSettings


def test_resolution_order_thread_channel_server_config_model() -> None:
    layers = {
        SettingsScope.THREAD: G(thinking="disabled"),
        SettingsScope.CHANNEL: G(thinking="auto", effort="low"),
        SettingsScope.SERVER: G(effort="high", temperature=0.2, system_prompt="srv"),
    }
    config = G(temperature=0.9, top_p=0.5, system_prompt="cfg")
    eff = resolve_settings(layers, config)
    assert eff.values == G(
        thinking="disabled", effort="low", system_prompt="srv", temperature=0.2, top_p=0.5
    )
    assert eff.sources == {
        "thinking": "thread",
        "effort": "channel",
        "system_prompt": "server",
        "temperature": "server",
        "top_p": CONFIG_SOURCE,
        "max_completion_tokens": MODEL_SOURCE,
        "persona": MODEL_SOURCE,
        "autoreply": MODEL_SOURCE,
    }
    rows = {name: (value, source) for name, value, source in eff.describe()}
    assert rows["max_completion_tokens"] == (4096, MODEL_SOURCE)


def test_no_layers_means_model_defaults() -> None:
    eff = resolve_settings({}, G())
    assert eff.values == G()
    assert set(eff.sources.values()) == {MODEL_SOURCE}
    assert dict((n, v) for n, v, _ in eff.describe())["thinking"] == "enabled"


@pytest.mark.parametrize(
    ("changes", "name", "fragment"),
    [
        (G(thinking="sometimes"), "thinking", "enabled, disabled, auto"),  # type: ignore[arg-type]
        (G(effort="max"), "effort", "minimal, low, medium, high"),  # type: ignore[arg-type]
        (G(max_completion_tokens=0), "max_completion_tokens", "between 1 and 131072"),
        (G(max_completion_tokens=10**9), "max_completion_tokens", "between 1 and 131072"),
        (G(temperature=-0.1), "temperature", "between 0 and 2"),
        (G(temperature=math.nan), "temperature", "between 0 and 2"),
        (G(temperature=math.inf), "temperature", "between 0 and 2"),
        (G(top_p=1.5), "top_p", "between 0 and 1"),
        (G(system_prompt="   "), "system_prompt", "clear option"),
        (G(system_prompt="x" * 9000), "system_prompt", "at most 8000"),
    ],
)
def test_invalid_values_are_named(changes: GenerationSettings, name: str, fragment: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        validate_settings(changes)
    assert caught.value.name == name
    assert fragment in caught.value.message


def test_valid_values_pass_cleaned() -> None:
    out = validate_settings(
        G(system_prompt="  be brief  ", temperature=0.0, top_p=1.0, max_completion_tokens=1)
    )
    assert out == G(system_prompt="be brief", temperature=0.0, top_p=1.0, max_completion_tokens=1)


def test_merged_over() -> None:
    assert G(effort="low").merged_over(G(effort="high", top_p=0.3)) == G(effort="low", top_p=0.3)
    assert G().is_empty() and not G(top_p=0.1).is_empty()


def test_a_persona_is_a_bundle_of_defaults_at_its_scope() -> None:
    reviewer = Persona(
        "reviewer", "Reviews code", G(system_prompt="Review.", temperature=0.3, effort="high")
    )
    layers = {
        SettingsScope.THREAD: G(temperature=0.9),
        SettingsScope.CHANNEL: G(persona="reviewer", effort="low"),
        SettingsScope.SERVER: G(system_prompt="server prompt", top_p=0.2),
    }
    eff = resolve_settings(layers, G(top_p=0.5), {"reviewer": reviewer})
    # explicit at a more specific scope (thread) and at the same scope (channel) win;
    # the persona wins over the server's and the config's values
    assert eff.values == G(
        persona="reviewer", system_prompt="Review.", temperature=0.9, effort="low", top_p=0.2
    )
    assert eff.sources["temperature"] == "thread"
    assert eff.sources["effort"] == "channel"
    assert eff.sources["system_prompt"] == "persona reviewer, channel"
    assert eff.sources["persona"] == "channel"
    assert eff.missing == frozenset()


def test_a_persona_gone_from_the_config_is_ignored_and_named() -> None:
    layers = {
        SettingsScope.CHANNEL: G(persona="gone"),
        SettingsScope.SERVER: G(system_prompt="server prompt"),
    }
    eff = resolve_settings(layers, G(), {})
    assert eff.values == G(persona="gone", system_prompt="server prompt")
    assert eff.missing == frozenset({"gone"})
