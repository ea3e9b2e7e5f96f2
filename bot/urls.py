"""The rules for the base URLs in the config, written once (the config checks them, and so
do the clients that take them)."""

from __future__ import annotations

from urllib.parse import urlsplit

DISCORD_API_BASE = "https://discord.com/api/v10"
DISCORD_GATEWAY_URL = "wss://gateway.discord.gg/"


def http_url_problem(value: str) -> str | None:
    """None for an absolute http(s) URL; otherwise what is wrong with ``value``."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL such as https://host/path"
    return None


def ws_url_problem(value: str) -> str | None:
    """None for an absolute ws(s) URL; otherwise what is wrong with ``value``."""
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        return "must be a ws(s) URL such as wss://gateway.discord.gg/"
    return None


def discord_api_problem(value: str) -> str | None:
    """None for a Discord REST base: an http(s) URL ending in the API version (``/v10``)."""
    if (problem := http_url_problem(value)) is not None:
        return problem
    if not urlsplit(value).path.rstrip("/").endswith("/v10"):
        return "must end with the API version /v10, such as https://discord.com/api/v10"
    return None
