"""Discord snowflakes and timestamps.

A snowflake is ``(ms since 2015-01-01 << 22) | worker << 17 | process << 12 | increment``;
discord.py derives ``created_at`` from it, and the bot may too, so the fake issues realistic,
strictly increasing ones from its (shiftable) clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

DISCORD_EPOCH_MS = 1420070400000

__all__ = ["DISCORD_EPOCH_MS", "SnowflakeFactory", "iso_timestamp", "snowflake_time"]


class SnowflakeFactory:
    """Issues unique, time-ordered snowflakes from ``clock`` (seconds since the Unix epoch)."""

    def __init__(self, clock: Callable[[], float], *, worker: int = 1, process: int = 0) -> None:
        self._clock = clock
        self._worker = worker & 0x1F
        self._process = process & 0x1F
        self._last_ms = 0
        self._increment = 0

    def __call__(self) -> int:
        ms = int(self._clock() * 1000)
        if ms <= self._last_ms:
            self._increment += 1
            if self._increment > 0xFFF:
                self._last_ms += 1
                self._increment = 0
            ms = self._last_ms
        else:
            self._increment = 0
            self._last_ms = ms
        return (
            ((ms - DISCORD_EPOCH_MS) << 22)
            | (self._worker << 17)
            | (self._process << 12)
            | self._increment
        )

    def next_millisecond(self) -> int:
        """A snowflake in a millisecond of its own (guild ids: spreads them over shards,
        since a guild's shard is ``(guild_id >> 22) % shard_count``)."""
        ms = int(self._clock() * 1000)
        self._last_ms = max(ms, self._last_ms + 1)
        self._increment = 0
        return (
            ((self._last_ms - DISCORD_EPOCH_MS) << 22)
            | (self._worker << 17)
            | (self._process << 12)
        )


def snowflake_time(snowflake: int) -> float:
    """Unix time (seconds) a snowflake was issued at."""
    return ((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000


def iso_timestamp(unix: float) -> str:
    """Discord's ISO 8601 form: ``2024-05-01T12:00:00.123000+00:00``."""
    return dt.datetime.fromtimestamp(unix, dt.UTC).isoformat(timespec="microseconds")
