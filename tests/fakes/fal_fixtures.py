"""pytest fixtures for the fake fal server and the real fal client pointed at it.

A plugin module: list it in the root ``tests/conftest.py``'s ``pytest_plugins`` (or, until
then, star-import it from a package conftest).
"""

from __future__ import annotations

import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from bot.fal import FalClient, FalSettings
from tests.fakes.fal import DEFAULT_KEY, FakeFal

__all__ = [
    "FAST_FAL_SETTINGS",
    "FakeFalFactory",
    "FalTls",
    "fake_fal",
    "fake_fal_factory",
    "fal_http_session",
    "fal_model_client",
    "fal_settings",
    "fal_settings_for",
    "fal_tls",
]

# Timings that keep tests fast while leaving every mechanism (retries, backoff, idle
# detection) switched on.
FAST_FAL_SETTINGS: dict[str, Any] = {
    "connect_timeout": 2.0,
    "request_timeout": 5.0,
    "upload_timeout": 5.0,
    "poll_interval": 0.01,
    "poll_interval_max": 0.05,
    "retry_base_delay": 0.005,
    "retry_max_delay": 0.02,
    "stream_idle_timeout": 2.0,
    "cancel_timeout": 2.0,
}

FakeFalFactory = Callable[..., Awaitable[FakeFal]]


def fal_settings_for(fake: FakeFal, **overrides: Any) -> FalSettings:
    """Settings pointing the real client at ``fake``, fast timings, the fake's default key."""
    values: dict[str, Any] = {
        "key": DEFAULT_KEY,
        "queue_base": fake.base_url,
        "rest_base": fake.base_url,
        **FAST_FAL_SETTINGS,
    }
    values.update(overrides)
    return FalSettings(**values)


@pytest.fixture
async def fake_fal_factory() -> AsyncIterator[FakeFalFactory]:
    """Start fakes with custom constructor arguments; all are closed after the test."""
    started: list[FakeFal] = []

    async def make(**kwargs: Any) -> FakeFal:
        fake = FakeFal(**kwargs)
        await fake.start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        await fake.close()


@pytest.fixture
async def fake_fal(fake_fal_factory: FakeFalFactory) -> FakeFal:
    """A fake fal with default knobs (concurrency 2, no latency, 50 ms keep-alives)."""
    return await fake_fal_factory()


@pytest.fixture
async def fal_http_session() -> AsyncIterator[aiohttp.ClientSession]:
    """The one session the client borrows, as the bot's entry point would own it."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def fal_settings(fake_fal: FakeFal) -> FalSettings:
    return fal_settings_for(fake_fal)


@pytest.fixture
def fal_model_client(
    fal_http_session: aiohttp.ClientSession, fal_settings: FalSettings
) -> FalClient:
    """The real ``FalClient`` against ``fake_fal``, with seeded retry jitter."""
    return FalClient(fal_http_session, fal_settings, rng=random.Random(0))


@dataclass(frozen=True, slots=True)
class FalTls:
    """A throwaway CA and a server context for 127.0.0.1/localhost."""

    ca_pem: Path
    server_context: ssl.SSLContext
    client_context: ssl.SSLContext


@pytest.fixture(scope="session")
def fal_tls(tmp_path_factory: pytest.TempPathFactory) -> FalTls:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    path = tmp_path_factory.mktemp("fal-tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return FalTls(path, server, client)
