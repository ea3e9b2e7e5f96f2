"""A small ready-made world for tests that do not care about its details."""

from __future__ import annotations

from dataclasses import dataclass

from .models import FakeChannel, FakeGuild, FakeUser
from .server import FakeDiscord

__all__ = ["StandardWorld", "build_standard_world"]


@dataclass
class StandardWorld:
    fake: FakeDiscord
    guild: FakeGuild
    channel: FakeChannel
    alice: FakeUser
    bob: FakeUser


def build_standard_world(fake: FakeDiscord) -> StandardWorld:
    """Guild "Test Server" (bot member with default permissions), ``#general``, alice, bob."""
    guild = fake.create_guild("Test Server")
    channel = fake.create_text_channel(guild, "general")
    alice = fake.create_user("alice", global_name="Alice")
    bob = fake.create_user("bob", global_name="Bob")
    fake.add_member(guild, alice)
    fake.add_member(guild, bob)
    return StandardWorld(fake=fake, guild=guild, channel=channel, alice=alice, bob=bob)
