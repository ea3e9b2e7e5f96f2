"""Discord ↔ domain conversion: the one place where Discord objects become domain values
(:class:`~bot.domain.models.Incoming`, attachments, the requester the access lists judge).
No Discord object passes this line into the domain."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import discord

from bot.domain.access import Requester
from bot.domain.attachments import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, media_type
from bot.domain.links import linked_urls, page_attachment
from bot.domain.models import Attachment, Incoming, MediaKind, Origin

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


FORWARDED_HEADER = "Forwarded message:"


def text_and_files(message: discord.Message, me_id: int) -> tuple[str, list[discord.Attachment]]:
    """What a message says and carries: its own text (without the bot's mentions) and files,
    then, for a forward, the text and files of the message it forwards (its snapshot)."""
    parts = [strip_mentions_of(message.content, me_id)]
    files = list(message.attachments)
    for snapshot in message.message_snapshots:
        content = snapshot.content.strip()
        if content:
            parts.append(f"{FORWARDED_HEADER}\n{content}")
        files.extend(snapshot.attachments)
    return "\n\n".join(p for p in parts if p), files


# -- links: the media they unfurl into, and the pages they point to ---------------------------

_LINKED_TYPES = {**IMAGE_EXTENSIONS, **VIDEO_EXTENSIONS, ".gif": "image/gif"}


def _linked_media(embed: discord.Embed, key: str) -> Attachment | None:
    """The media an unfurled link shows, served by Discord's media proxy (``proxy_url``: the
    bot fetches nothing from the linked site itself). A Tenor or Giphy ``gifv`` is its MP4;
    an ``image`` is the picture (Discord puts it in the thumbnail); a ``video`` is the file
    when Discord proxies one (a YouTube player is not: that link is read as a page)."""
    if embed.type == "gifv":
        proxy, content_type = embed.video.proxy_url, "video/mp4"
    elif embed.type == "image":
        proxy, content_type = embed.thumbnail.proxy_url or embed.image.proxy_url, None
    elif embed.type == "video":
        proxy, content_type = embed.video.proxy_url, None
    else:
        return None
    if not proxy:
        return None
    name = PurePosixPath(urlsplit(embed.url or proxy).path).name or "linked"
    suffix = PurePosixPath(urlsplit(proxy).path.lower()).suffix
    content_type = content_type or _LINKED_TYPES.get(suffix)
    if content_type == "video/mp4" and not name.lower().endswith(".mp4"):
        name += ".mp4"
    return Attachment(key, name, content_type, 0, proxy, Origin.LINKED)


def _same_link(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def links_of(message: discord.Message) -> list[Attachment]:
    """What the links in a message (and in the message it forwards) bring: the media they
    unfurled into, then the pages the others point to."""
    texts = [message.content, *(s.content for s in message.message_snapshots)]
    embeds = [*message.embeds, *(e for s in message.message_snapshots for e in s.embeds)]
    media: list[Attachment] = []
    shown: list[str] = []
    for index, embed in enumerate(embeds):
        item = _linked_media(embed, f"{message.id}-link{index}")
        if item is not None:
            media.append(item)
            shown.append(embed.url or "")
    pages = [
        page_attachment(url)
        for text in texts
        for url in linked_urls(text)
        if not any(_same_link(url, s) for s in shown)
    ]
    return [*media, *pages]


def links_of_text(text: str) -> list[Attachment]:
    """The pages the links in a command's text point to (nothing unfurls there)."""
    return [page_attachment(url) for url in linked_urls(text)]


def awaits_unfurl(message: discord.Message) -> bool:
    """Whether Discord is still to unfurl a link of the message: it has a link shown with a
    preview (not ``<…>``, previews not suppressed) and no embed yet."""
    if message.embeds or message.flags.suppress_embeds:
        return False
    return any(f"<{url}>" not in message.content for url in linked_urls(message.content))


def has_usable_content(message: discord.Message, me_id: int) -> bool:
    """Whether a message (or the one it forwards) has text or a file the model can read."""
    text, files = text_and_files(message, me_id)
    return bool(text.strip()) or any(
        media_type(to_attachment(f))[0] is not MediaKind.UNSUPPORTED for f in files
    )


def _quoting(
    quoted: discord.Message | None, me_id: int, own: Sequence[discord.Attachment]
) -> tuple[str | None, str | None, list[discord.Attachment]]:
    """The text and author of a message a turn quotes (replied to, or asked about), and the
    turn's files with the quoted message's first."""
    if quoted is None:
        return None, None, list(own)
    text, files = text_and_files(quoted, me_id)
    return text or None, quoted.author.display_name, [*files, *own]


ONE_OFF_PREFIX = "m"


def one_off_scope(source_id: int) -> str:
    """The scope of a conversation of one question (a message, or an interaction's)
    answered in a thread its asker may not bind; it fits a snowflake column: one letter and
    the id."""
    return f"{ONE_OFF_PREFIX}{source_id}"


@dataclass(frozen=True, slots=True)
class _Asked:
    """What differs between a message and an interaction asking a question: its source,
    author and time, its own text, files and links, and the message it quotes (replied to, or
    asked about: its text and files are part of the turn)."""

    source: discord.Message | discord.Interaction
    author: discord.abc.User
    guild_id: int | None
    text: str
    files: Sequence[discord.Attachment]
    links: Sequence[Attachment]
    quoted: discord.Message | None
    me_id: int


def _incoming(
    asked: _Asked,
    *,
    scope_id: int | str,
    parent_channel_id: int | None,
    reply_to: int | None,
    interaction_id: str | None = None,
    channel_id: int | None = None,
) -> Incoming:
    reply_text, reply_author, files = _quoting(asked.quoted, asked.me_id, asked.files)
    quoted_links = links_of(asked.quoted) if asked.quoted is not None else ()
    return Incoming(
        source_id=str(asked.source.id),
        scope_id=str(scope_id),
        author_id=str(asked.author.id),
        author_name=asked.author.display_name,
        text=asked.text,
        attachments=(*(to_attachment(a) for a in files), *quoted_links, *asked.links),
        guild_id=_id(asked.guild_id),
        parent_channel_id=_id(parent_channel_id),
        created_at=asked.source.created_at,
        reply_text=reply_text,
        reply_author=reply_author,
        reply_to=_id(reply_to),
        interaction_id=interaction_id,
        channel_id=_id(channel_id),
    )


def incoming_from_message(
    message: discord.Message,
    *,
    me_id: int,
    scope_id: int | str,
    parent_channel_id: int | None,
    reply_to: int | None,
    replied_to: discord.Message | None = None,
    one_off: bool = False,
) -> Incoming:
    """A person's message as the turn it asks for. ``scope_id`` is the conversation's thread
    or DM channel; ``replied_to`` the message this one replies to (its text and files are
    part of the turn); ``reply_to`` the message the answer replies to. ``one_off``: the
    message is answered once, in its channel, as a conversation of its own (a thread the
    person may not bind)."""
    text, files = text_and_files(message, me_id)
    guild_id = message.guild.id if message.guild else None
    asked = _Asked(
        message, message.author, guild_id, text, files, links_of(message), replied_to, me_id
    )
    return _incoming(
        asked,
        scope_id=scope_id,
        parent_channel_id=parent_channel_id,
        reply_to=reply_to,
        channel_id=message.channel.id if one_off else None,
    )


def incoming_from_interaction(
    interaction: discord.Interaction,
    *,
    text: str,
    attachments: Sequence[discord.Attachment],
    scope_id: int | str,
    parent_channel_id: int | None,
    reply_to: int | None,
    about: discord.Message | None = None,
    through_interaction: bool = False,
    answer_in: int | None = None,
) -> Incoming:
    """A command's, a modal's or a context menu's question as the turn it asks for (the
    interaction is its source). ``about`` is the message "Ask Seed" was used on: its text
    and files are part of the turn, as a replied-to message's are. ``through_interaction``:
    the answer goes through this interaction (the bot cannot post there). ``answer_in``: the
    thread the question is answered once in, as a conversation of its own (``scope_id``),
    as for a message."""
    me_id = interaction.client.user.id if interaction.client.user else 0
    links = links_of_text(text)
    asked = _Asked(
        interaction, interaction.user, interaction.guild_id, text, attachments, links, about, me_id
    )
    return _incoming(
        asked,
        scope_id=scope_id,
        parent_channel_id=parent_channel_id,
        reply_to=reply_to,
        interaction_id=str(interaction.id) if through_interaction else None,
        channel_id=answer_in,
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


def bot_is_present(interaction: discord.Interaction) -> bool:
    """Whether the bot can read and post where ``interaction`` comes from: a server that
    added it (a guild installation authorizes the interaction; discord.py makes a guild
    object even for a server without the bot, so its presence says nothing), or its own DM."""
    if interaction.guild_id is not None:
        return interaction.is_guild_integration()
    return bool(interaction.context.dm_channel)


def requester(
    author: discord.abc.User, channel: object, guild_id: int | None, *, bot_absent: bool = False
) -> Requester:
    """Who asks, and where, as the access lists see it. ``bot_absent``: in a server that did
    not add the bot."""
    roles = [str(r.id) for r in getattr(author, "roles", ())]
    return Requester(
        user_id=str(author.id),
        role_ids=roles,
        channel_ids=channel_chain(channel),
        guild_id=_id(guild_id),
        bot_absent=bot_absent,
    )


def interaction_requester(interaction: discord.Interaction) -> Requester:
    """Who interacts, and where: a server where only the person installed the app counts as
    outside the bot's servers."""
    absent = interaction.guild_id is not None and not bot_is_present(interaction)
    return requester(interaction.user, interaction.channel, interaction.guild_id, bot_absent=absent)
