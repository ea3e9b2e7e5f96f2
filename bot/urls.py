"""The rules for the base URLs in the config, written once (the config checks them, and so
do the clients that take them)."""

from __future__ import annotations

import re
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


# ``scheme://user:password@``: the password is whatever runs from the user's colon to the
# last ``@`` before the host (a password may itself hold ``@`` or ``/`` when not escaped).
_USERINFO_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s'\"]*:)[^\s'\"]*@")
MASK = "***"


def mask_password(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``
    (``postgresql://u:***@h/db``): the one masking every place that shows a URL uses."""
    return _USERINFO_PASSWORD.sub(rf"\1{MASK}@", text)


def describe_url(url: str) -> str:
    """A URL as a log line may show it: scheme, host and path, without the query string or
    fragment (a signed download's signature), nor any credentials."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else host
