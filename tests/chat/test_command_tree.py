"""The slash command tree Discord is sent, pinned: moving commands between modules (or
generating them from the parameter descriptors) must not change a name, option, choice,
range, description, context or permission people see."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.chat.conftest import Harness
from tests.fakes.discord import CommandsSynced

SNAPSHOT = Path(__file__).with_name("command_tree.json")


def synced(harness: Harness) -> list[dict[str, Any]]:
    """The commands the bot's start-up sync sent (the payloads as Discord stored them,
    without the ids it assigned)."""
    events = harness.fake.events_of(CommandsSynced)
    assert events, "the bot synced no commands"
    unassigned = ("id", "application_id", "version", "guild_id")
    commands = [{k: v for k, v in c.items() if k not in unassigned} for c in events[-1].commands]
    return sorted(commands, key=lambda c: (c["name"], c.get("type", 1)))


async def test_the_synced_command_tree_is_unchanged(harness: Harness) -> None:
    commands = synced(harness)
    if os.environ.get("SEED_BOT_UPDATE_COMMAND_TREE"):  # a deliberate change to the tree
        SNAPSHOT.write_text(json.dumps(commands, indent=1, sort_keys=True) + "\n")
    assert commands == json.loads(SNAPSHOT.read_text())
