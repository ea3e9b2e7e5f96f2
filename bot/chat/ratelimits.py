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

Both reach into private parts of one ``HTTPClient`` (there is no supported setting), through
``bot/chat/discord_internals.py``, probed: when a discord.py release lacks them, the
per-bucket sweep is left as discord.py does it and the timed sweep does nothing; a bucket of
another shape falls back to discord.py's own ``is_inactive``.
"""

from __future__ import annotations

from typing import Any

from discord.http import HTTPClient

from bot.chat import discord_internals

#: A bucket unused this long, with nothing waiting on it and its window over, is dropped:
#: the next request to its route makes a fresh one (as discord.py does after an expiry).
IDLE_BUCKET_SECONDS = 60.0


def sweep_buckets_on_time(http: HTTPClient) -> bool:
    """Switch off ``http``'s sweep on every new bucket: :func:`sweep_idle_buckets` is to run
    on a timer instead. False when this discord.py has no such sweep (nothing changed)."""
    return discord_internals.stop_sweep_per_bucket(http)


def sweep_idle_buckets(http: HTTPClient, now: float) -> int:
    """Drop ``http``'s buckets that are idle at loop time ``now`` (see the module); returns
    how many went."""
    buckets = discord_internals.buckets(http)
    if buckets is None:
        return 0
    idle = [key for key, bucket in buckets.items() if _is_idle(bucket, now)]
    for key in idle:
        del buckets[key]
    return len(idle)


def _is_idle(bucket: Any, now: float) -> bool:
    active = discord_internals.activity(bucket)
    if active is None:
        # Another shape of bucket: discord.py's own test (five minutes unused).
        inactive = getattr(bucket, "is_inactive", None)
        return bool(inactive()) if callable(inactive) else False
    window_over = active.expires is None or now > active.expires
    return (
        now - active.last_request >= IDLE_BUCKET_SECONDS
        and active.outgoing == 0
        and not active.pending
        and window_over
    )
