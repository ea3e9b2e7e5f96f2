"""pytest fixtures for the fake Discord (register with
``pytest_plugins = ["tests.fakes.discord.fixtures"]`` in ``tests/conftest.py``).

- ``fake_discord``: a started :class:`FakeDiscord` on ``127.0.0.1:<free port>`` with discord.py
  pointed at it (``point_discord_at``), restored afterwards; fails the test at teardown if the
  fake saw problems (unknown routes, invalid payloads, ...).
- ``discord_world``: a guild with a ``#general`` channel and two members, alice and bob.

Start clients with :func:`tests.fakes.discord.run_client`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from bot.chat.endpoints import current_discord_endpoints, point_discord_at

from .runner import run_client
from .server import FakeDiscord
from .standard import StandardWorld, build_standard_world

__all__ = ["discord_world", "fake_discord", "run_client"]


@pytest_asyncio.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    previous = current_discord_endpoints()
    fake = FakeDiscord()
    await fake.start()
    point_discord_at(fake.api_base, fake.gateway_url)
    try:
        yield fake
    finally:
        point_discord_at(*previous)
        await fake.close()
    fake.assert_no_problems()


@pytest_asyncio.fixture
async def discord_world(fake_discord: FakeDiscord) -> StandardWorld:
    return build_standard_world(fake_discord)
