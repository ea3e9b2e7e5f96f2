"""The parameters are declared once (bot.domain.params): everything that lists them follows
the descriptors, so an added parameter cannot be forgotten in one of those places."""

from __future__ import annotations

import dataclasses
import typing
from unittest import mock

import pytest

from bot.chat import texts
from bot.config import ModelConfig, config_reference
from bot.domain.errors import InvalidSetting
from bot.domain.models import GenerationSettings, ModelRequest
from bot.domain.params import PARAMS, TUNING, Kind, Param, SettingsScope
from bot.domain.settings import validate_settings
from bot.fal import wire
from bot.storage.tables import settings


def test_every_place_that_holds_parameters_follows_the_descriptors() -> None:
    names = [p.name for p in PARAMS]
    assert [f.name for f in dataclasses.fields(GenerationSettings)] == names
    request_fields = {f.name for f in dataclasses.fields(ModelRequest)}
    assert {p.wire_key for p in PARAMS if p.wire_key is not None} <= request_fields
    assert [k for s, k, _, _ in config_reference() if s == "model"][: len(names)] == names
    assert set(names) <= set(settings.c.keys())
    assert all(texts.FIELD_NAMES[p.wire_key] == p.shown for p in PARAMS if p.wire_key)


def test_a_choice_parameter_declares_the_values_its_type_allows() -> None:
    hints = typing.get_type_hints(GenerationSettings)
    for p in PARAMS:
        if p.kind is Kind.CHOICE:
            allowed = typing.get_args(typing.get_args(hints[p.name])[0])
            assert allowed == p.choices


def test_the_request_carries_each_parameter_under_its_wire_key() -> None:
    values = {"thinking": "auto", "effort": "low", "system_prompt": "s"} | {
        p.name: p.bounds[1] for p in TUNING
    }
    chosen = GenerationSettings.of(values)
    body = wire.submit_body(ModelRequest(prompt="p", **chosen.wire_values()))
    assert {k: v for k, v in body.items() if k != "prompt"} == {
        p.wire_key: values[p.name] for p in PARAMS if p.wire_key is not None
    }


@pytest.mark.parametrize("param", [p for p in PARAMS if p.kind is not Kind.TEXT])
def test_each_parameter_refuses_what_it_does_not_accept(param: Param) -> None:
    bad = "sometimes" if param.kind is Kind.CHOICE else param.bounds[1] + 1
    with pytest.raises(InvalidSetting) as caught:
        validate_settings(GenerationSettings.of({param.name: bad}))
    assert caught.value.name == param.name


def test_the_config_model_section_checks_the_declared_ranges() -> None:
    reference = {k: doc for s, k, _, doc in config_reference() if s == "model"}
    assert all(reference[p.name] == p.doc for p in PARAMS)
    assert issubclass(ModelConfig, GenerationSettings)


def test_a_parameter_is_refused_at_a_scope_it_may_not_be_set_at() -> None:
    only_threads = dataclasses.replace(PARAMS[0], scopes=frozenset({SettingsScope.THREAD}))
    changes = GenerationSettings.of({only_threads.name: "auto"})
    with mock.patch("bot.domain.settings.PARAMS", (only_threads, *PARAMS[1:])):
        assert validate_settings(changes, SettingsScope.THREAD).thinking == "auto"
        with pytest.raises(InvalidSetting, match="can only be set for a thread"):
            validate_settings(changes, SettingsScope.SERVER)


def test_a_setting_of_the_bots_own_is_never_sent_to_the_model() -> None:
    own = dataclasses.replace(PARAMS[0], wire_key=None)  # e.g. an /autoreply switch
    chosen = GenerationSettings.of({own.name: "auto", "temperature": 0.5})
    with (
        mock.patch("bot.domain.models.PARAMS", (own, *PARAMS[1:])),
        mock.patch("bot.fal.wire.PARAMS", (own, *PARAMS[1:])),
    ):
        body = wire.submit_body(ModelRequest(prompt="p", **chosen.wire_values()))
    assert body == {"prompt": "p", "temperature": 0.5}
