"""discord.py's thread cache, without the threads that went idle.

discord.py keeps every thread it hears of (about 1 KiB each) until Discord archives it, a
day after its last message for the bot's threads: a bot that started thousands of
conversations keeps thousands of idle threads. :func:`evict_idle_threads` (run once a
minute, ``bot/chat/housekeeping.py``) drops those with no message for
``IDLE_THREAD_SECONDS``; an archived one already leaves when Discord says so. A message
that later arrives in an evicted thread comes with a bare ``PartialMessageable`` for its
channel: :func:`restore_thread` fetches the thread (one REST request, the first message after
an hour's quiet) and puts it back, so the message is routed as one in a thread.

The cache is a private part of ``discord.Guild``, reached through
``bot/chat/discord_internals.py`` and probed: without it nothing is evicted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

import discord

from bot.chat import discord_internals

log = logging.getLogger(__name__)

IDLE_THREAD_SECONDS = 3600.0


def evict_idle_threads(guilds: Iterable[discord.Guild], now: datetime) -> int:
    """Drop from the guilds' caches the threads with no message for ``IDLE_THREAD_SECONDS``
    at ``now`` (aware, UTC); returns how many went."""
    evicted = 0
    for guild in guilds:
        threads = discord_internals.cached_threads(guild)
        if threads is None:
            return evicted  # discord.py keeps its threads as it does
        for thread in list(threads.values()):
            last = discord.utils.snowflake_time(thread.last_message_id or thread.id)
            if (now - last).total_seconds() >= IDLE_THREAD_SECONDS:
                discord_internals.forget_thread(guild, thread)
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
    if isinstance(channel, discord.Thread) and not channel.archived:
        discord_internals.keep_thread(message.guild, channel)
    message.channel = channel  # type: ignore[assignment]
    return True
