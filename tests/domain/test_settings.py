"""Settings resolution and validation."""

from __future__ import annotations

import math

import pytest

from bot.domain.errors import InvalidSetting
from bot.domain.models import GenerationSettings, SettingsScope
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
