"""discord.py's private parts, named here only: its REST client's rate-limit buckets
(``HTTPClient._buckets``, the sweep on every new bucket ``_try_clear_expired_ratelimits``,
and a bucket's ``_last_request`` and ``_pending_requests``) and a guild's thread cache
(``Guild._threads``, ``_add_thread``, ``_remove_thread``). The policies that use them are
``bot/chat/ratelimits.py`` and ``bot/chat/threadcache.py``.

There is no public API for either, so when :func:`usable` is False (see ``bot/internals.py``)
discord.py is left to itself: it sweeps its buckets as it does (a scan per new bucket past
256) and keeps threads until Discord archives them (more memory, still correct).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import discord
from discord.http import HTTPClient, Ratelimit

from bot.internals import Checked, probe

#: The releases the probe was checked against; pyproject.toml bounds discord.py so too.
CHECKED = Checked("discord.py", (2, 7), (2, 8))
_SWEEP = "_try_clear_expired_ratelimits"


def problem() -> str | None:
    """What this module reaches into and this discord.py lacks, or None. The instance
    attributes (set in ``__init__``) are checked again on each use."""
    if not callable(getattr(HTTPClient, _SWEEP, None)):
        return f"HTTPClient.{_SWEEP} is gone"
    if not callable(getattr(Ratelimit, "is_inactive", None)):
        return "Ratelimit.is_inactive is gone"
    for name in ("_add_thread", "_remove_thread"):
        if not callable(getattr(discord.Guild, name, None)):
            return f"Guild.{name} is gone"
    return None


@functools.cache
def usable() -> bool:
    """Whether to reach into discord.py's caches (probed once, at start-up)."""
    return probe(
        "discord.py", CHECKED, problem, fallback="its caches kept as it keeps them (more memory)"
    )


def buckets(http: HTTPClient) -> dict[str, Any] | None:
    """``http``'s rate-limit buckets by key, or None when they cannot be reached."""
    found = getattr(http, "_buckets", None) if usable() else None
    return found if isinstance(found, dict) else None


def stop_sweep_per_bucket(http: HTTPClient) -> bool:
    """Switch off ``http``'s sweep of every bucket on each new one; False when it cannot be
    (nothing changed)."""
    if buckets(http) is None:
        return False
    setattr(http, _SWEEP, lambda: None)
    return True


class Activity(NamedTuple):
    """What decides whether a bucket is idle (loop times)."""

    last_request: float
    outgoing: int
    pending: int
    expires: float | None


def activity(bucket: Any) -> Activity | None:
    """``bucket``'s activity, or None for a bucket of another shape."""
    try:
        return Activity(
            bucket._last_request, bucket.outgoing, len(bucket._pending_requests), bucket.expires
        )
    except AttributeError:
        return None


def cached_threads(guild: discord.Guild) -> dict[int, discord.Thread] | None:
    """``guild``'s cache of threads by id, or None when it cannot be reached."""
    found = getattr(guild, "_threads", None) if usable() else None
    return found if isinstance(found, dict) else None


def forget_thread(guild: discord.Guild, thread: discord.Thread) -> None:
    """Drop ``thread`` from ``guild``'s cache (only after :func:`cached_threads` gave it)."""
    guild._remove_thread(thread)


def keep_thread(guild: discord.Guild, thread: discord.Thread) -> None:
    """Put ``thread`` back in ``guild``'s cache (nothing when it cannot be reached)."""
    if cached_threads(guild) is not None:
        guild._add_thread(thread)
