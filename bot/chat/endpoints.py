"""Where discord.py sends REST calls and opens its first gateway connection.

discord.py 2.7 has no per-client setting for this: every REST request is built from the class
attribute ``discord.http.Route.BASE``, and a non-sharded client's first gateway connection goes
to ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` (a yarl URL). An ``AutoShardedClient``
without a fixed ``shard_count`` asks ``GET /gateway/bot`` (under ``Route.BASE``) for its URL; one
with ``shard_count`` set uses ``DEFAULT_GATEWAY``. Resumes go to READY's
``resume_gateway_url``, and an invalidated session falls back to ``DEFAULT_GATEWAY``. Both
values are process-wide, so set them once at start-up, before the client logs in (``Route``
objects capture the base when built).
"""

from __future__ import annotations

import discord.gateway
import discord.http
import yarl

from bot.urls import (
    DISCORD_API_BASE,
    DISCORD_GATEWAY_URL,
    discord_api_problem,
    ws_url_problem,
)

__all__ = [
    "DEFAULT_API_BASE",
    "DEFAULT_GATEWAY_URL",
    "current_discord_endpoints",
    "point_discord_at",
]

DEFAULT_API_BASE = DISCORD_API_BASE
DEFAULT_GATEWAY_URL = DISCORD_GATEWAY_URL


def point_discord_at(api_base: str, gateway_url: str) -> None:
    """Send discord.py's REST calls to ``api_base`` and its first gateway connection to
    ``gateway_url`` (e.g. a proxy, or a fake Discord in tests).

    ``api_base`` must be an http(s) URL ending in the API version (``.../api/v10``), without a
    trailing slash; ``gateway_url`` a ws(s) URL. Raises ``ValueError`` otherwise.
    """
    if (problem := discord_api_problem(api_base)) is not None:
        raise ValueError(f"discord.api_base {problem}, got {api_base!r}")
    if (problem := ws_url_problem(gateway_url)) is not None:
        raise ValueError(f"discord.gateway_url {problem}, got {gateway_url!r}")
    discord.http.Route.BASE = api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def current_discord_endpoints() -> tuple[str, str]:
    """The (api_base, gateway_url) discord.py currently uses."""
    return discord.http.Route.BASE, str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
