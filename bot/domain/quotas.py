"""Request quotas per user and per server, counted in the database so that they hold across
every process sharing it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.domain.errors import QuotaExceeded
from bot.domain.ports import UsageStore


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Quota:
    """At most ``requests`` model calls per sliding ``window_seconds`` (0 requests: none)."""

    requests: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class QuotaRules:
    user: Quota | None = None
    guild: Quota | None = None


class Quotas:
    """Admits one model call at a time against the user's and the server's quotas."""

    def __init__(
        self, store: UsageStore, rules: QuotaRules, *, now: Callable[[], datetime] = utcnow
    ) -> None:
        self._store = store
        self.rules = rules
        self._now = now

    async def admit(self, author_id: str, guild_id: str | None) -> None:
        """Count one request against the user's and the server's quotas; raise
        ``QuotaExceeded`` (naming the quota, with when to try again) and count nothing when
        one is used up. One atomic check: a refusal by either counts against neither."""
        wanted = [("user", f"user:{author_id}", self.rules.user)]
        if guild_id is not None:
            wanted.append(("server", f"guild:{guild_id}", self.rules.guild))
        # The window is part of the key, since a key keeps one window (a reload may change it).
        active = [
            (scope, f"{key}:{q.window_seconds}", q)
            for scope, key, q in wanted
            if q is not None and q.requests > 0
        ]
        if not active:
            return
        keys = [(key, q.requests, q.window_seconds) for _, key, q in active]
        refusal = await self._store.try_consume(keys, now=self._now())
        if refusal is None:
            return
        # Name the quota that is used up (the server's when both are).
        used_up = {name for name, key, _ in active if key in refusal.keys}
        raise QuotaExceeded("server" if "server" in used_up else "user", refusal.retry_at)
