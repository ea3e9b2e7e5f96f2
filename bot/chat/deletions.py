"""Messages deleted in Discord leave the stored history: the turn a deleted message started
(or was merged into) loses its text and the answer to it, as ``/forget`` removes a turn, so
later requests no longer carry them. A turn still being answered is stopped first.

Raw gateway events (one message or a bulk delete): they come for messages discord.py never
cached too, with the guild messages and DM messages intents the bot already has.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from bot.chat.context import BotContext
from bot.domain.errors import StorageError

log = logging.getLogger(__name__)


async def forget_deleted(host: BotContext, channel_id: int, message_ids: Collection[int]) -> None:
    """Messages ``message_ids`` of channel ``channel_id`` were deleted."""
    # Only conversations hold turns: their thread or DM channel, and the message a thread was
    # opened on (in the parent channel; the thread has its id, and an archived thread is not
    # in discord.py's cache). Elsewhere, one indexed read per message.
    for place in (channel_id, *message_ids):
        if await host.service.is_bound(str(place)):
            break
    else:
        return
    try:
        sources = await host.service.withdraw({str(m) for m in message_ids})
        removed = await host.privacy.forget_messages(sources)
    except StorageError as exc:
        log.warning(
            "the turns of %d deleted messages in channel %s stay stored: %s",
            len(message_ids),
            channel_id,
            exc,
        )
        return
    if removed.anything or removed.kept_unfinished:
        log.info(
            "%d messages deleted in channel %s: removed %s",
            len(message_ids),
            channel_id,
            removed.describe(),
        )
