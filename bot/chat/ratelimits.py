"""discord.py's rate-limit buckets, swept on time instead of per new bucket.

discord.py keeps a bucket per rate-limited route (a thread's message POSTs, its typing, its
edits…): two or three per thread the bot answers in, about 1 KiB each. Once it holds 256 or
more, it sweeps out the inactive ones (unused for five minutes) every time it makes a new
one: a scan of every bucket for each new bucket, O(buckets) per new thread (the 500-thread
burst of the bench spent 15% of its CPU there), and below 256 never. Here the sweep on a new
bucket is switched off, and :func:`sweep_idle_buckets` runs on a timer (once a minute, see
``bot/chat/housekeeping.py``): new buckets cost no scan, and a bucket leaves once it has been
idle for ``IDLE_BUCKET_SECONDS`` with no request waiting on it and its rate-limit window
over, so an idle conversation keeps none.

Both reach into private parts of one ``HTTPClient`` (there is no supported setting), and
only here. They are probed: when a discord.py release lacks them, the per-bucket sweep is
left as discord.py does it, and the timed sweep falls back to discord.py's own
``is_inactive``; a test fails then, so this is looked at again.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

_SWEEP = "_try_clear_expired_ratelimits"
#: A bucket unused this long, with nothing waiting on it and its window over, is dropped:
#: the next request to its route makes a fresh one (as discord.py does after an expiry).
IDLE_BUCKET_SECONDS = 60.0


def sweep_buckets_on_time(http: Any) -> bool:
    """Switch off ``http``'s sweep on every new bucket (``http`` is a
    ``discord.http.HTTPClient``): :func:`sweep_idle_buckets` is to run on a timer instead.
    False when this discord.py has no such sweep (nothing changed)."""
    if getattr(type(http), _SWEEP, None) is None or not isinstance(
        getattr(http, "_buckets", None), dict
    ):
        log.debug("discord.py has no per-bucket sweep to replace: left as it is")
        return False
    setattr(http, _SWEEP, lambda: None)
    return True


def sweep_idle_buckets(http: Any, now: float) -> int:
    """Drop ``http``'s buckets that are idle at loop time ``now`` (see the module); returns
    how many went."""
    buckets = getattr(http, "_buckets", None)
    if not isinstance(buckets, dict):
        return 0
    idle = [key for key, bucket in buckets.items() if _is_idle(bucket, now)]
    for key in idle:
        del buckets[key]
    return len(idle)


def _is_idle(bucket: Any, now: float) -> bool:
    try:
        last, outgoing = bucket._last_request, bucket.outgoing
        pending, expires = bucket._pending_requests, bucket.expires
    except AttributeError:
        # Another shape of bucket: discord.py's own test (five minutes unused).
        inactive = getattr(bucket, "is_inactive", None)
        return bool(inactive()) if callable(inactive) else False
    window_over = expires is None or now > expires
    return now - last >= IDLE_BUCKET_SECONDS and outgoing == 0 and not pending and window_over
