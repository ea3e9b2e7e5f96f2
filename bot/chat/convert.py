"""Discord ↔ domain conversion: the one place where Discord objects become domain values
(:class:`~bot.domain.models.Incoming`, attachments, the requester the access lists judge).
No Discord object passes this line into the domain."""

from __future__ import annotations

import re
from collections.abc import Sequence

import discord

from bot.domain.access import Requester
from bot.domain.models import Attachment, Incoming

_MENTION_RE = re.compile(r"<@!?(\d+)>")


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
    """Whether the message mentions ``user_id``. A mention counts only when Discord lists the
    user in the message's mentions: the raw text could carry a fake <@id> in a code block."""
    return any(u.id == user_id for u in message.mentions)


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


def _id(value: int | None) -> str | None:
    return str(value) if value else None


def incoming_from_message(
    message: discord.Message,
    *,
    me_id: int,
    scope_id: int,
    parent_channel_id: int | None,
    reply_to: int | None,
    replied_to: discord.Message | None = None,
) -> Incoming:
    """A person's message as the turn it asks for. ``scope_id`` is the conversation's thread
    or DM channel; ``replied_to`` the message this one replies to (its text and files are
    part of the turn); ``reply_to`` the message the answer replies to."""
    attachments: Sequence[discord.Attachment] = list(message.attachments)
    reply_text = None
    reply_author = None
    if replied_to is not None:
        attachments = [*replied_to.attachments, *attachments]
        reply_text = strip_mentions_of(replied_to.content, me_id) or None
        reply_author = replied_to.author.display_name
    return Incoming(
        source_id=str(message.id),
        scope_id=str(scope_id),
        author_id=str(message.author.id),
        author_name=message.author.display_name,
        text=strip_mentions_of(message.content, me_id),
        attachments=tuple(to_attachment(a) for a in attachments),
        guild_id=_id(message.guild.id if message.guild else None),
        parent_channel_id=_id(parent_channel_id),
        created_at=message.created_at,
        reply_text=reply_text,
        reply_author=reply_author,
        reply_to=_id(reply_to),
    )


def incoming_from_interaction(
    interaction: discord.Interaction,
    *,
    text: str,
    attachments: Sequence[discord.Attachment],
    scope_id: int,
    parent_channel_id: int | None,
    reply_to: int | None,
) -> Incoming:
    """A slash command's question as the turn it asks for (the interaction is its source)."""
    return Incoming(
        source_id=str(interaction.id),
        scope_id=str(scope_id),
        author_id=str(interaction.user.id),
        author_name=interaction.user.display_name,
        text=text,
        attachments=tuple(to_attachment(a) for a in attachments),
        guild_id=_id(interaction.guild_id),
        parent_channel_id=_id(parent_channel_id),
        created_at=interaction.created_at,
        reply_to=_id(reply_to),
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
    """Who asks, and where, as the access lists see it."""
    roles = [str(r.id) for r in getattr(author, "roles", ())]
    return Requester(
        user_id=str(author.id),
        role_ids=roles,
        channel_ids=channel_chain(channel),
        guild_id=_id(guild_id),
    )
