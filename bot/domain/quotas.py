"""Request quotas per user and per server, counted in the database so that they hold across
every process sharing it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.domain.cache import Lru
from bot.domain.errors import QuotaExceeded
from bot.domain.ports import UsageStore

# Quota keys remembered as used up (each with when it frees up): bounded, whatever a
# flood of distinct accounts sends.
USED_UP_CAPACITY = 20_000


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Quota:
    """At most ``requests`` model calls per sliding ``window_seconds`` (0 requests: none)."""

    requests: int
    window_seconds: int

    @property
    def limits(self) -> bool:
        """Whether it limits anything (0 requests: no quota)."""
        return self.requests > 0

    def key(self, who: str) -> str:
        """The store's key counting ``who``'s requests. The window is part of it, since a
        key keeps one window (a reload may change it)."""
        return f"{who}:{self.window_seconds}"


@dataclass(frozen=True, slots=True)
class QuotaRules:
    user: Quota | None = None
    guild: Quota | None = None


class Quotas:
    """Admits one model call at a time against the user's and the server's quotas.

    A quota found used up stays so until the time the store named (other processes sharing
    the database can only add requests), so until then it is refused from memory: a flood
    of refused messages costs no database work. The memory is bounded and per process; a
    restart or a reload of the rules forgets it (the next refusal asks the database)."""

    def __init__(
        self, store: UsageStore, rules: QuotaRules, *, now: Callable[[], datetime] = utcnow
    ) -> None:
        self._store = store
        self._rules = rules
        self._now = now
        self._used_up: Lru[tuple[str, ...], datetime] = Lru(USED_UP_CAPACITY)

    @property
    def rules(self) -> QuotaRules:
        return self._rules

    @rules.setter
    def rules(self, rules: QuotaRules) -> None:
        # New limits may admit what the old ones refused.
        self._rules = rules
        self._used_up.clear()

    def window_seconds(self, scope: str) -> int:
        """The window of the ``user`` or ``server`` quota (0 when it is not set)."""
        quota = self._rules.guild if scope == "server" else self._rules.user
        return quota.window_seconds if quota is not None else 0

    async def admit(self, author_id: str, guild_id: str | None) -> None:
        """Count one request against the user's and the server's quotas; raise
        ``QuotaExceeded`` (naming the quota, with when to try again) and count nothing when
        one is used up. One atomic check: a refusal by either counts against neither."""
        wanted = [("user", f"user:{author_id}", self.rules.user)]
        if guild_id is not None:
            wanted.append(("server", f"guild:{guild_id}", self.rules.guild))
        active = [(scope, q.key(who), q) for scope, who, q in wanted if q is not None and q.limits]
        if not active:
            return
        now = self._now()
        # Keys used up together are remembered together: the time the store named is when
        # the last of them frees up, and only refusing all of them is certain until then.
        candidates: list[tuple[str, ...]] = [(key,) for _, key, _ in active]
        candidates.append(tuple(sorted(key for _, key, _ in active)))
        for used_up in candidates:
            free_at = self._used_up.get(used_up)
            if free_at is not None and free_at > now:
                raise QuotaExceeded(self._named(active, set(used_up)), free_at)
            if free_at is not None:
                self._used_up.discard(used_up)
        keys = [(key, q.requests, q.window_seconds) for _, key, q in active]
        refusal = await self._store.try_consume(keys, now=now)
        if refusal is None:
            return
        refused = tuple(sorted(refusal.keys))
        self._used_up.put(refused, refusal.retry_at)
        raise QuotaExceeded(self._named(active, set(refused)), refusal.retry_at)

    @staticmethod
    def _named(active: list[tuple[str, str, Quota]], used_up: set[str]) -> str:
        """The quota to name as used up (the server's when both are)."""
        scopes = {scope for scope, key, _ in active if key in used_up}
        return "server" if "server" in scopes else "user"
