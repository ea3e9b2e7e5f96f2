"""discord.py's rate-limit buckets, swept without a scan per new channel.

discord.py keeps a bucket per rate-limited route (a thread's message POSTs, its typing, its
edits…) and, once it holds 256 or more, sweeps out the inactive ones (unused for five
minutes) every time it makes a new one: a scan of every bucket for each new bucket. A bot
answering in many threads makes new buckets all the time, so the scans cost
O(buckets) per new thread, and grow with every thread seen in the last five minutes (the
500-thread burst of the bench spent 15% of its CPU there). Here the same sweep runs only
once the bucket count has doubled since the last one: amortised O(1) per new bucket, and
still bounded: at most twice the buckets left after the last sweep, or 256.

This replaces a private method of one ``HTTPClient`` instance (there is no supported
setting). When a discord.py release no longer has it, nothing is replaced and discord.py
sweeps as it does by itself; a test fails then, so this is looked at again.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

_SWEEP = "_try_clear_expired_ratelimits"
_LIBRARY_FLOOR = 256  # discord.py does not sweep below this many buckets


def amortise_bucket_sweeps(http: Any) -> bool:
    """Make ``http`` (a ``discord.http.HTTPClient``) sweep its buckets only when their
    number has doubled since its last sweep. False when this discord.py has no such sweep
    (nothing changed)."""
    sweep = getattr(type(http), _SWEEP, None)
    buckets = getattr(http, "_buckets", None)
    if sweep is None or not isinstance(buckets, dict):
        log.debug("discord.py has no bucket sweep to amortise: left as it is")
        return False
    next_sweep = _LIBRARY_FLOOR

    def amortised() -> None:
        nonlocal next_sweep
        if len(buckets) < next_sweep:
            return
        sweep(http)
        next_sweep = max(_LIBRARY_FLOOR, 2 * len(buckets))

    setattr(http, _SWEEP, amortised)
    return True
