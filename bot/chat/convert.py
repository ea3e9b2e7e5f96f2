"""Discord ↔ domain conversion. No Discord object passes this line into the domain."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence

import discord

from bot.domain.access import Requester
from bot.domain.models import Attachment, Incoming


class Route(enum.Enum):
    """What to do with a message."""

    IGNORE = "ignore"
    START = "start"  # a mention in a channel: open a thread and a conversation
    CONTINUE = "continue"  # a bound thread or an allowed DM
    BIND = "bind"  # a mention in a thread the bot does not know yet: bind it
    DM_REFUSED = "dm_refused"


def is_from_person(message: discord.Message, me_id: int) -> bool:
    """Bots, webhooks, system messages and the bot itself are never answered."""
    return (
        message.author.id != me_id
        and not message.author.bot
        and message.webhook_id is None
        and not message.author.system
        and message.type in (discord.MessageType.default, discord.MessageType.reply)
    )


def mentions(message: discord.Message, user_id: int) -> bool:
    # A mention counts only when Discord lists the user in the message's mentions: the raw
    # text could carry a fake <@id> inside a code block.
    return any(u.id == user_id for u in message.mentions)


def route(
    message: discord.Message,
    *,
    me_id: int,
    bound: bool,
    allow_dms: bool,
    reply_without_mention: bool,
) -> Route:
    """The pure decision of whether and how to answer a message."""
    if not is_from_person(message, me_id):
        return Route.IGNORE
    if message.guild is None:
        return Route.CONTINUE if allow_dms else Route.DM_REFUSED
    mentioned = mentions(message, me_id)
    if isinstance(message.channel, discord.Thread):
        if bound:
            return Route.CONTINUE if (reply_without_mention or mentioned) else Route.IGNORE
        return Route.BIND if mentioned else Route.IGNORE
    return Route.START if mentioned else Route.IGNORE


_MENTION_RE = re.compile(r"<@!?(\d+)>")


def strip_mentions_of(text: str, user_id: int) -> str:
    """The text without mentions of the bot (others' mentions stay: the model may need them)."""
    cleaned = _MENTION_RE.sub(lambda m: "" if m.group(1) == str(user_id) else m.group(0), text)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip()


def to_attachment(att: discord.Attachment) -> Attachment:
    return Attachment(
        id=str(att.id),
        filename=att.filename,
        content_type=att.content_type,
        size=att.size,
        url=att.url,
    )


def display_name(author: discord.abc.User) -> str:
    return author.display_name


def to_incoming(
    message: discord.Message,
    *,
    me_id: int,
    scope_id: int,
    parent_channel_id: int | None,
    replied_to: discord.Message | None = None,
) -> Incoming:
    attachments: Sequence[discord.Attachment] = list(message.attachments)
    reply_text = None
    reply_author = None
    if replied_to is not None:
        attachments = [*replied_to.attachments, *attachments]
        reply_text = strip_mentions_of(replied_to.content, me_id) or None
        reply_author = display_name(replied_to.author)
    return Incoming(
        source_id=str(message.id),
        scope_id=str(scope_id),
        author_id=str(message.author.id),
        author_name=display_name(message.author),
        text=strip_mentions_of(message.content, me_id),
        attachments=tuple(to_attachment(a) for a in attachments),
        guild_id=str(message.guild.id) if message.guild else None,
        parent_channel_id=str(parent_channel_id) if parent_channel_id else None,
        created_at=message.created_at,
        reply_text=reply_text,
        reply_author=reply_author,
    )


def channel_chain(channel: object) -> list[str]:
    """The channel, its parent (for a thread) and its category, as ids for access lists."""
    ids: list[str] = []
    current = channel
    while current is not None and len(ids) < 3:
        cid = getattr(current, "id", None)
        if cid is not None:
            ids.append(str(cid))
        parent = getattr(current, "parent", None)
        current = parent if parent is not None else getattr(current, "category", None)
        if current is not None and getattr(current, "id", None) == cid:
            break
    return ids


def requester(author: discord.abc.User, channel: object, guild_id: int | None) -> Requester:
    roles = [str(r.id) for r in getattr(author, "roles", ())]
    return Requester(
        user_id=str(author.id),
        role_ids=roles,
        channel_ids=channel_chain(channel),
        guild_id=str(guild_id) if guild_id else None,
    )
