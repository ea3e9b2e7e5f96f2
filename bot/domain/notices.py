"""Refusal notices: a person refused (access lists, quota, budget, DMs off) is told once per
reason and window, then refused in silence, so that a few flooding accounts cannot spend
the bot's Discord request budget on refusals.

The memory is this process's own and bounded: past ``capacity`` people the oldest entries
make room (such a person may be told once more), and a restart forgets it (everyone may be
told once more). With several shard processes each keeps its own: a person refused in
servers that different processes serve may be told once by each."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from datetime import datetime

from bot.domain.cache import Lru

DAY_SECONDS = 24 * 3600.0
# About 270 bytes an entry: some 5 MB at most, whatever a flood of accounts sends.
DEFAULT_CAPACITY = 20_000


class NoticeReason(enum.StrEnum):
    """Why a message was refused: each is told once per window on its own."""

    ACCESS = "access"
    DMS_OFF = "dms_off"
    QUOTA = "quota"
    BUDGET = "budget"


class RefusalNotices:
    """Decides whether a refusal is told (the first of its window) or kept silent."""

    def __init__(
        self, *, capacity: int = DEFAULT_CAPACITY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._quiet_until: Lru[tuple[str, NoticeReason], float] = Lru(capacity)

    def tell(self, person_id: str, reason: NoticeReason, window_seconds: float) -> bool:
        """True when ``person_id`` is to be told about this refusal (none told for
        ``reason`` within the last ``window_seconds``); it is remembered then."""
        key = (person_id, reason)
        now = self._clock()
        until = self._quiet_until.get(key)
        if until is not None and now < until:
            return False
        self._quiet_until.put(key, now + max(0.0, window_seconds))
        return True

    def __len__(self) -> int:
        return len(self._quiet_until)


def seconds_until(when: datetime, now: datetime) -> float:
    """A window that lasts until ``when`` (a budget's reset), in seconds."""
    return max(0.0, (when - now).total_seconds())
