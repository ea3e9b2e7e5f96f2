"""Opening the thread a conversation lives in: on the message that mentions the bot, or in a
channel for ``/ask``. Written once, with the one mapping of Discord's refusals to what the
person is told; and who may bind a thread the bot finds unbound."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final, Literal

import discord

from bot.chat import texts, thread_names

log = logging.getLogger(__name__)

AUTO_ARCHIVE_MINUTES: Final[Literal[1440]] = 1440


@dataclass(frozen=True, slots=True)
class ThreadRefused:
    """Discord would not open the thread; ``text`` says so to the person."""

    text: str


def may_bind(thread: discord.Thread, user_id: int, me_id: int, *, manages_threads: bool) -> bool:
    """Whether a person asking in a thread no conversation is bound to binds it, to a
    conversation they own: in a thread the bot created, or one they own or may manage
    (Manage Threads). Anyone else is answered once without binding (a mention, ``/ask``,
    "Ask Seed"): from a binding on, the bot answers every message of the thread, so nobody
    takes over a thread that is not theirs."""
    return thread.owner_id in (me_id, user_id) or manages_threads


async def open_thread(
    where: discord.Message | discord.TextChannel,
    prompt: str,
    author_name: str,
    *,
    private: bool = False,
) -> discord.Thread | ThreadRefused:
    """A thread named after ``prompt``: on the message ``where``, or a new one in the text
    channel ``where`` (``private`` for a private thread nobody else can invite into)."""
    name = thread_names.thread_name(prompt, fallback=f"Chat with {author_name}")
    channel_id = where.channel.id if isinstance(where, discord.Message) else where.id
    try:
        if isinstance(where, discord.Message):
            return await where.create_thread(name=name, auto_archive_duration=AUTO_ARCHIVE_MINUTES)
        kind = discord.ChannelType.private_thread if private else discord.ChannelType.public_thread
        return await where.create_thread(
            name=name, type=kind, auto_archive_duration=AUTO_ARCHIVE_MINUTES, invitable=False
        )
    except discord.Forbidden as exc:
        perm = "Create Private Threads" if private else "Create Public Threads"
        log.warning(
            "cannot create a thread in channel %s: missing permission %s (%s)",
            channel_id,
            perm,
            exc.text,
        )
        return ThreadRefused(texts.no_thread_permission(private))
    except discord.HTTPException as exc:
        log.warning("thread creation failed in %s: %s", channel_id, exc)
        return ThreadRefused(texts.THREAD_REFUSED)
