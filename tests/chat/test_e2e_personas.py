"""End to end: personas the operator defines in the config, set with ``/persona`` per
thread, channel or server (same rights as the other settings) or with ``/ask persona:``;
a persona is a bundle of defaults at its scope, ``/settings`` says where each value comes
from, and a persona removed from the config falls back cleanly."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from tests.chat.conftest import Harness, HarnessFactory
from tests.chat.conftest import ephemeral_answer as command
from tests.fakes.discord import Perm
from tests.fakes.discord.models import FakeChannel

PERSONAS = """
[personas.reviewer]
description = "A terse, exacting code reviewer"
system_prompt = "You review code."
temperature = 0.3
effort = "high"

[personas.poet]
description = "Answers in verse"
system_prompt = "You answer in verse."
"""


async def start(make_harness: HarnessFactory, tmp_path: Path, **env: str) -> Harness:
    (tmp_path / "config.toml").write_text(PERSONAS)
    h = await make_harness(**env)
    role = h.fake.create_role(
        h.world.guild, "admins", permissions=Perm.MANAGE_CHANNELS | Perm.MANAGE_GUILD
    )
    h.fake.set_member_roles(h.world.guild, h.world.alice, [role])
    return h


async def turn_input(h: Harness, text: str) -> tuple[FakeChannel, dict[str, Any]]:
    """Bob opens a conversation with ``text``; its thread and what fal got."""
    thread, _ = await h.converse(h.world.bob, text)
    return thread, dict(list(h.fal.requests.values())[-1].input)


async def next_input(h: Harness, thread: FakeChannel, text: str) -> dict[str, Any]:
    await h.say(h.world.bob, thread, text)
    return dict(list(h.fal.requests.values())[-1].input)


def rows(text: str) -> dict[str, str]:
    return {line.split("`")[1]: line for line in text.splitlines() if line.startswith("•")}


async def test_a_channel_persona_applies_and_explicit_values_win(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    h = await start(make_harness, tmp_path, SEED_BOT_MODEL__TOP_P="0.4")
    channel = h.world.channel
    text = await command(h, h.world.alice, channel, "persona", {"name": "reviewer"})
    assert text == "✅ Persona set to **reviewer** for this channel's default."
    await command(h, h.world.alice, channel, "params", {"temperature": 1.5, "server": True})

    thread, got = await turn_input(h, "look at this")
    assert "You review code." in got["system_prompt"]
    # the persona beats the server's explicit value and the config's default does not matter
    assert got["temperature"] == 0.3
    assert got["reasoning_effort"] == "high"
    assert got["top_p"] == 0.4

    # an explicit value at the same scope (the channel) and at a more specific one win
    await command(h, h.world.alice, channel, "effort", {"level": "low"})
    await command(h, h.world.bob, thread, "params", {"temperature": 0.9})
    got = await next_input(h, thread, "again")
    assert got["reasoning_effort"] == "low"
    assert got["temperature"] == 0.9
    assert "You review code." in got["system_prompt"]

    shown = rows(await command(h, h.world.bob, thread, "settings", {}))
    assert shown["persona"] == "• `persona`: reviewer *(channel)*"
    assert shown["system_prompt"].endswith("*(persona reviewer, channel)*")
    assert shown["temperature"] == "• `temperature`: 0.9 *(thread)*"
    assert shown["effort"] == "• `effort`: low *(channel)*"
    assert shown["top_p"] == "• `top_p`: 0.4 *(config file)*"


async def test_a_thread_persona_wins_over_the_servers_and_clear_removes_it(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    h = await start(make_harness, tmp_path)
    text = await command(
        h, h.world.alice, h.world.channel, "persona", {"name": "poet", "server": True}
    )
    assert text == "✅ Persona set to **poet** for this server's default."
    thread, got = await turn_input(h, "hello")
    assert "You answer in verse." in got["system_prompt"]
    text = await command(h, h.world.bob, thread, "persona", {"name": "reviewer"})
    assert text == "✅ Persona set to **reviewer** for this thread."
    got = await next_input(h, thread, "now review")
    assert "You review code." in got["system_prompt"]
    assert got["temperature"] == 0.3
    text = await command(h, h.world.bob, thread, "persona", {"clear": True})
    assert text == "✅ Persona cleared for this thread."
    got = await next_input(h, thread, "and now")
    assert "You answer in verse." in got["system_prompt"]
    assert "temperature" not in got


async def test_persona_needs_the_same_rights_as_the_other_settings(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    h = await start(make_harness, tmp_path)
    channel = h.world.channel
    text = await command(h, h.world.bob, channel, "persona", {"name": "poet"})
    assert text.startswith("⛔") and "Manage Channels" in text
    text = await command(h, h.world.bob, channel, "persona", {"name": "poet", "server": True})
    assert text.startswith("⛔") and "Manage Server" in text
    thread, _ = await turn_input(h, "mine")  # bob's own conversation: his to set
    text = await command(h, h.world.bob, thread, "persona", {"name": "poet"})
    assert text == "✅ Persona set to **poet** for this thread."
    # not alice's conversation: he neither started it nor manages threads
    alices, _ = await h.converse(h.world.alice, "alice's own")
    text = await command(h, h.world.bob, alices, "persona", {"name": "poet"})
    assert text.startswith("⛔")


async def test_unknown_names_and_bad_options_are_refused_clearly(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    h = await start(make_harness, tmp_path)
    channel = h.world.channel
    text = await command(h, h.world.alice, channel, "persona", {"name": "pirate"})
    assert text == (
        "⛔ There is no persona `pirate` (personas: `poet`, `reviewer`). Nothing was changed."
    )
    text = await command(h, h.world.alice, channel, "persona", {})
    assert text == "⛔ Give either a `name` or `clear: True`."
    shown = rows(await command(h, h.world.alice, channel, "settings", {}))
    assert shown["persona"] == "• `persona`: — *(model default)*"


async def test_persona_names_are_autocompleted_with_their_descriptions(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    h = await start(make_harness, tmp_path)
    typing = await h.fake.autocomplete(
        h.world.alice, h.world.channel, "persona", {"name": "e"}, focused="name"
    )
    response = await typing.wait_response()
    assert response.type == 8
    assert response.data is not None
    assert response.data["choices"] == [
        {"name": "poet — Answers in verse", "value": "poet"},
        {"name": "reviewer — A terse, exacting code reviewer", "value": "reviewer"},
    ]
    typing = await h.fake.autocomplete(
        h.world.alice, h.world.channel, "ask", {"prompt": "x", "persona": "code"}, focused="persona"
    )
    response = await typing.wait_response()
    assert response.data is not None
    assert [c["value"] for c in response.data["choices"]] == ["reviewer"]


async def test_ask_takes_a_persona(make_harness: HarnessFactory, tmp_path: Path) -> None:
    h = await start(make_harness, tmp_path)
    interaction = await h.fake.invoke_command(
        h.world.bob, h.world.channel, "ask", {"prompt": "a poem", "persona": "poet"}
    )
    await interaction.wait_response()
    await h.fal.wait_for(lambda: len(h.fal.requests) == 1, timeout=10)
    got = list(h.fal.requests.values())[-1].input
    assert "You answer in verse." in got["system_prompt"]
    refused = await h.fake.invoke_command(
        h.world.bob, h.world.channel, "ask", {"prompt": "x", "persona": "pirate"}
    )
    response = await refused.wait_response()
    assert response.message is not None and "no persona `pirate`" in response.message.content


async def test_a_persona_removed_from_the_config_falls_back_and_is_logged_once(
    make_harness: HarnessFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = await start(make_harness, tmp_path)
    await command(h, h.world.alice, h.world.channel, "system", {"prompt": "Channel prompt."})
    thread, _ = await turn_input(h, "first")
    await command(h, h.world.bob, thread, "persona", {"name": "poet"})
    got = await next_input(h, thread, "in verse")
    assert "You answer in verse." in got["system_prompt"]

    (tmp_path / "config.toml").write_text(PERSONAS.split("[personas.poet]")[0])
    assert h.app.bot.reload_config is not None
    assert await h.app.bot.reload_config() == []
    with caplog.at_level(logging.WARNING, logger="bot"):
        got = await next_input(h, thread, "plain again")
        got = await next_input(h, thread, "and once more")
    assert "Channel prompt." in got["system_prompt"]
    assert "verse" not in got["system_prompt"]
    gone = [r for r in caplog.records if "persona 'poet'" in r.getMessage()]
    assert len(gone) == 1
    shown = rows(await command(h, h.world.bob, thread, "settings", {}))
    assert shown["persona"] == "• `persona`: poet — no longer in the config: ignored *(thread)*"
    assert shown["system_prompt"].endswith("*(channel)*")
