"""discord.py's thread cache, without the threads that went idle.

discord.py keeps every thread it hears of (about 1 KiB each) until Discord archives it, a
day after its last message for the bot's threads: a bot that started thousands of
conversations keeps thousands of idle threads. :func:`evict_idle_threads` (run once a
minute, ``bot/chat/housekeeping.py``) drops those with no message for
``IDLE_THREAD_SECONDS``; an archived one already leaves when Discord says so. A message
that later arrives in an evicted thread comes with a bare ``PartialMessageable`` for its
channel: :func:`restore_thread` fetches the thread (one REST request, the first message after
an hour's quiet) and puts it back, so the message is routed as one in a thread.

The cache is a private part of ``discord.Guild`` (``_threads``, ``_add_thread``,
``_remove_thread``), reached only here and probed: without them nothing is evicted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

import discord

log = logging.getLogger(__name__)

IDLE_THREAD_SECONDS = 3600.0


def evict_idle_threads(guilds: Iterable[discord.Guild], now: datetime) -> int:
    """Drop from the guilds' caches the threads with no message for ``IDLE_THREAD_SECONDS``
    at ``now`` (aware, UTC); returns how many went."""
    evicted = 0
    for guild in guilds:
        threads = getattr(guild, "_threads", None)
        remove = getattr(guild, "_remove_thread", None)
        if not isinstance(threads, dict) or not callable(remove):
            log.debug("discord.py keeps no thread cache to trim: left as it is")
            return evicted
        for thread in list(threads.values()):
            last = discord.utils.snowflake_time(thread.last_message_id or thread.id)
            if (now - last).total_seconds() >= IDLE_THREAD_SECONDS:
                remove(thread)
                evicted += 1
    return evicted


async def restore_thread(client: discord.Client, message: discord.Message) -> bool:
    """When ``message`` came from a server channel discord.py does not hold (an evicted
    thread), fetch it, put a thread back in the cache and make it the message's channel.
    False when the channel could not be had (the message is not to be handled)."""
    if message.guild is None or not isinstance(message.channel, discord.PartialMessageable):
        return True
    try:
        channel = await client.fetch_channel(message.channel.id)
    except discord.HTTPException as exc:
        log.info("message %s: its channel could not be fetched: %s", message.id, exc)
        return False
    if isinstance(channel, discord.Thread):
        add = getattr(message.guild, "_add_thread", None)
        if callable(add) and not channel.archived:
            add(channel)
    message.channel = channel  # type: ignore[assignment]
    return True
