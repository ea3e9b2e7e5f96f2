"""The fake Discord's world: users, guilds, roles, members, channels, threads, messages.

These are the objects tests hold and pass back to the fake's API. Users, guilds, roles, members
and channels are mutable records owned by the fake (change them through its methods so the
gateway is told); messages and attachments are frozen snapshots: an edit stores a new
:class:`FakeMessage`, so the event log keeps what a message looked like at each point.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import discord

__all__ = [
    "ALL_PERMISSIONS",
    "AUTO",
    "DEFAULT_BOT_PERMISSIONS",
    "DEFAULT_EVERYONE_PERMISSIONS",
    "Auto",
    "ChannelType",
    "FakeAttachment",
    "FakeChannel",
    "FakeGuild",
    "FakeMember",
    "FakeMessage",
    "FakeRole",
    "FakeUser",
    "FakeWebhook",
    "Intent",
    "MessageFlag",
    "Overwrite",
    "Perm",
    "UserFile",
    "iter_components",
]


class Auto(enum.Enum):
    """Marker: let the fake work the value out, as Discord would."""

    AUTO = "AUTO"


AUTO: Final = Auto.AUTO


class Perm(enum.IntFlag):
    """Permission bits the fake checks (values from discord.py's ``Permissions``)."""

    CREATE_INSTANT_INVITE = 1 << 0
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    SEND_TTS_MESSAGES = 1 << 12
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CHANGE_NICKNAME = 1 << 26
    MANAGE_ROLES = 1 << 28
    USE_APPLICATION_COMMANDS = 1 << 31
    MANAGE_THREADS = 1 << 34
    CREATE_PUBLIC_THREADS = 1 << 35
    CREATE_PRIVATE_THREADS = 1 << 36
    SEND_MESSAGES_IN_THREADS = 1 << 38
    #: Lets a member's user-installed apps answer publicly (else Discord forces ephemeral).
    USE_EXTERNAL_APPS = 1 << 50


ALL_PERMISSIONS: Final = discord.Permissions.all().value

#: What @everyone gets in a new guild (Discord's default, which includes MENTION_EVERYONE).
DEFAULT_EVERYONE_PERMISSIONS: Final = discord.Permissions(
    create_instant_invite=True,
    view_channel=True,
    send_messages=True,
    send_tts_messages=True,
    mention_everyone=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    create_private_threads=True,
    embed_links=True,
    attach_files=True,
    add_reactions=True,
    use_external_emojis=True,
    use_external_stickers=True,
    read_message_history=True,
    use_application_commands=True,
    change_nickname=True,
    connect=True,
    speak=True,
    send_voice_messages=True,
    send_polls=True,
    use_external_apps=True,
).value

#: What the bot's managed role gets by default (what seed-bot's invite URL asks for).
DEFAULT_BOT_PERMISSIONS: Final = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    create_private_threads=True,
    embed_links=True,
    attach_files=True,
    add_reactions=True,
    read_message_history=True,
).value


class Intent(enum.IntFlag):
    """Gateway intents the fake honours."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    GUILD_MESSAGE_TYPING = 1 << 11
    DIRECT_MESSAGES = 1 << 12
    DIRECT_MESSAGE_REACTIONS = 1 << 13
    DIRECT_MESSAGE_TYPING = 1 << 14
    MESSAGE_CONTENT = 1 << 15


class MessageFlag(enum.IntFlag):
    CROSSPOSTED = 1 << 0
    SUPPRESS_EMBEDS = 1 << 2
    EPHEMERAL = 1 << 6
    LOADING = 1 << 7
    SUPPRESS_NOTIFICATIONS = 1 << 12
    IS_VOICE_MESSAGE = 1 << 13
    #: A forward: the message carries ``message_snapshots`` (discord.py: ``flags.forwarded``).
    HAS_SNAPSHOT = 1 << 14
    IS_COMPONENTS_V2 = 1 << 15


class ChannelType(enum.IntEnum):
    TEXT = 0
    DM = 1
    GROUP_DM = 3
    CATEGORY = 4
    NEWS = 5
    NEWS_THREAD = 10
    PUBLIC_THREAD = 11
    PRIVATE_THREAD = 12


@dataclass(eq=False)
class FakeUser:
    """A Discord user (a person, a bot, or the pseudo-user behind a webhook)."""

    id: int
    username: str
    global_name: str | None = None
    bot: bool = False
    system: bool = False
    #: Whether the user accepts DMs from the bot (``False``: 50007 on send).
    dms_open: bool = True
    discriminator: str = "0"

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    @property
    def display_name(self) -> str:
        return self.global_name or self.username

    def __repr__(self) -> str:
        return f"<FakeUser {self.username!r} id={self.id}{' bot' if self.bot else ''}>"


@dataclass(eq=False)
class FakeWebhook:
    """A channel webhook; ``user`` is what its messages show as author."""

    id: int
    token: str
    channel_id: int
    guild_id: int
    name: str
    user: FakeUser


@dataclass(eq=False)
class FakeRole:
    id: int
    guild_id: int
    name: str
    permissions: int
    position: int
    mentionable: bool = False
    hoist: bool = False
    color: int = 0
    managed: bool = False
    #: For the managed role Discord creates for a bot.
    bot_id: int | None = None

    @property
    def is_everyone(self) -> bool:
        return self.id == self.guild_id

    @property
    def mention(self) -> str:
        return "@everyone" if self.is_everyone else f"<@&{self.id}>"

    def __repr__(self) -> str:
        return f"<FakeRole {self.name!r} id={self.id}>"


@dataclass(eq=False)
class FakeMember:
    user: FakeUser
    guild_id: int
    role_ids: list[int]
    joined_at: float
    nick: str | None = None

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def mention(self) -> str:
        return self.user.mention


@dataclass(eq=False)
class Overwrite:
    """A channel permission overwrite; ``type`` 0 is a role, 1 a member."""

    target_id: int
    type: int
    allow: int = 0
    deny: int = 0


@dataclass(eq=False)
class FakeGuild:
    id: int
    name: str
    owner_id: int
    created_at: float
    roles: dict[int, FakeRole] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)
    channel_ids: list[int] = field(default_factory=list)
    preferred_locale: str = "en-US"

    @property
    def everyone(self) -> FakeRole:
        return self.roles[self.id]

    def __repr__(self) -> str:
        return f"<FakeGuild {self.name!r} id={self.id}>"


@dataclass(eq=False)
class FakeChannel:
    """Any channel: guild text/news/category, thread, DM or group DM (see ``type``).

    A DM with ``recipient_id`` is the bot's DM with that user; a DM or group DM with
    ``recipient_ids`` is a private channel between people that the bot is not part of
    (``FakeDiscord.create_private_channel``), where only user-installed apps reach.
    """

    id: int
    type: int
    name: str
    guild_id: int | None
    created_at: float
    parent_id: int | None = None
    position: int = 0
    topic: str | None = None
    nsfw: bool = False
    overwrites: dict[int, Overwrite] = field(default_factory=dict)
    last_message_id: int | None = None
    rate_limit_per_user: int = 0
    #: DMs: the other person.
    recipient_id: int | None = None
    #: Private channels without the bot (DM between two users, group DM): who is in it.
    recipient_ids: tuple[int, ...] = ()
    # Threads only:
    owner_id: int | None = None
    archived: bool = False
    locked: bool = False
    invitable: bool = True
    auto_archive_duration: int = 1440
    archive_timestamp: float = 0.0
    #: Thread members: user id -> join time.
    member_ids: dict[int, float] = field(default_factory=dict)
    message_count: int = 0
    total_message_sent: int = 0
    #: Set for a thread started from a message (whose id is also the thread's id).
    starter_message_id: int | None = None

    @property
    def is_thread(self) -> bool:
        return self.type in (
            ChannelType.NEWS_THREAD,
            ChannelType.PUBLIC_THREAD,
            ChannelType.PRIVATE_THREAD,
        )

    @property
    def is_private_thread(self) -> bool:
        return self.type == ChannelType.PRIVATE_THREAD

    @property
    def is_dm(self) -> bool:
        """A DM or group DM (with the bot, or between people without it)."""
        return self.type in (ChannelType.DM, ChannelType.GROUP_DM)

    @property
    def is_bot_dm(self) -> bool:
        """The bot's own DM with a user (interaction context 1, BOT_DM)."""
        return self.type == ChannelType.DM and not self.recipient_ids

    @property
    def is_private_channel(self) -> bool:
        """A DM or group DM the bot is not part of (interaction context 2)."""
        return self.is_dm and bool(self.recipient_ids)

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    def __repr__(self) -> str:
        known = {c.value for c in ChannelType}
        kind = ChannelType(self.type).name.lower() if self.type in known else str(self.type)
        return f"<FakeChannel {kind} {self.name!r} id={self.id}>"


@dataclass(frozen=True)
class GeneratedBytes:
    """A large file's content, made up as the CDN serves it (a bench's hundred 50 MB videos
    are never held): ``size`` bytes of a repeating pattern."""

    size: int
    chunk: int = 256 * 1024

    def __len__(self) -> int:
        return self.size

    def chunks(self) -> Iterator[bytes]:
        block = bytes(range(256)) * (self.chunk // 256)
        left = self.size
        while left > 0:
            yield block[:left]
            left -= len(block)


FileData = bytes | GeneratedBytes


@dataclass(frozen=True)
class UserFile:
    """A file a test user attaches (to a message, or as a slash command attachment option).

    ``content_type``: ``AUTO`` (Discord derives it from the file name), a string (also a
    misleading one), or ``None`` for an attachment without any content type.
    """

    filename: str
    data: FileData = field(repr=False)
    content_type: str | Auto | None = AUTO
    description: str | None = None
    #: ``AUTO`` reads image dimensions from the header; ``None`` omits them.
    size: tuple[int, int] | Auto | None = AUTO


@dataclass(frozen=True)
class FakeAttachment:
    """An uploaded file, served by the fake CDN at a signed, expiring URL."""

    id: int
    filename: str
    data: FileData = field(repr=False)
    content_type: str | None
    #: First path segment after the kind: the channel id (or the application id for
    #: slash command attachment options, which live under ``ephemeral-attachments``).
    owner_id: int
    width: int | None = None
    height: int | None = None
    description: str | None = None
    ephemeral: bool = False

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def kind(self) -> str:
        return "ephemeral-attachments" if self.ephemeral else "attachments"

    @property
    def path(self) -> str:
        """The CDN path, e.g. ``/attachments/{channel_id}/{id}/{filename}``."""
        from urllib.parse import quote

        # One path segment whatever the name holds (Discord never lets a name add segments).
        return f"/{self.kind}/{self.owner_id}/{self.id}/{quote(self.filename, safe='')}"


@dataclass(frozen=True)
class InteractionRef:
    """What a message created by an interaction response knows about the interaction."""

    id: int
    type: int
    name: str
    user: FakeUser
    #: Component interactions: the message holding the component.
    interacted_message_id: int | None = None
    #: Modal submissions: the interaction that opened the modal.
    triggering: InteractionRef | None = None
    #: ``authorizing_integration_owners`` as (key, id) pairs, e.g. ``(("1", "<user id>"),)``.
    owners: tuple[tuple[str, str], ...] = ()
    #: Message context menu commands: the message the command was run on.
    target_message_id: int | None = None


@dataclass(frozen=True)
class FakeMessage:
    """A message as stored at one point in time (edits create new snapshots)."""

    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    timestamp: float
    content: str = ""
    type: int = 0
    edited_timestamp: float | None = None
    attachments: tuple[FakeAttachment, ...] = ()
    embeds: tuple[dict[str, Any], ...] = ()
    components: tuple[dict[str, Any], ...] = ()
    flags: int = 0
    tts: bool = False
    #: Users/roles/everyone actually mentioned (pinged), as in the payload's ``mentions``.
    mention_user_ids: tuple[int, ...] = ()
    mention_role_ids: tuple[int, ...] = ()
    mention_everyone: bool = False
    #: Stored message reference ``{type, message_id, channel_id, guild_id}``.
    message_reference: Mapping[str, Any] | None = None
    #: The ``message_reference`` object exactly as the bot sent it (bot messages only).
    sent_message_reference: Mapping[str, Any] | None = None
    #: ``allowed_mentions`` exactly as the bot sent it (``None`` if the request had none).
    allowed_mentions: Mapping[str, Any] | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    interaction: InteractionRef | None = None
    nonce: str | int | None = None
    #: The thread started from this message, if any.
    thread_id: int | None = None
    #: The raw request body (JSON or ``payload_json``) that created/last edited it (bot only).
    request_body: Mapping[str, Any] | None = None
    #: A forward (``message_reference.type`` 1): the forwarded message as it was, rendered as
    #: ``message_snapshots`` (see ``FakeDiscord.forward``).
    snapshots: tuple[FakeMessage, ...] = ()

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & MessageFlag.EPHEMERAL)

    @property
    def loading(self) -> bool:
        """A deferred interaction response still "thinking"."""
        return bool(self.flags & MessageFlag.LOADING)

    @property
    def is_forward(self) -> bool:
        return bool(self.snapshots)

    @property
    def referenced_message_id(self) -> int | None:
        if self.message_reference is None:
            return None
        value = self.message_reference.get("message_id")
        return int(value) if value is not None else None

    @property
    def filenames(self) -> list[str]:
        return [a.filename for a in self.attachments]

    @property
    def files(self) -> list[tuple[str, bytes]]:
        """(filename, bytes) of every attachment (generated ones made up whole)."""
        return [
            (a.filename, a.data if isinstance(a.data, bytes) else b"".join(a.data.chunks()))
            for a in self.attachments
        ]

    def mentions(self, user: FakeUser | FakeMember) -> bool:
        return user.id in self.mention_user_ids

    def custom_ids(self) -> list[str]:
        """custom_id of every interactive component, in order."""
        return [str(c["custom_id"]) for c in iter_components(self.components) if "custom_id" in c]

    def __repr__(self) -> str:
        text = self.content if len(self.content) <= 40 else self.content[:37] + "..."
        return (
            f"<FakeMessage id={self.id} channel={self.channel_id} "
            f"author={self.author.username!r} content={text!r}"
            f"{' files=' + str(self.filenames) if self.attachments else ''}>"
        )


def iter_components(components: Any) -> Iterator[dict[str, Any]]:
    """Every component in a message's component tree (rows, containers, sections, ...)."""
    if isinstance(components, list | tuple):
        for item in components:
            yield from iter_components(item)
    elif isinstance(components, dict):
        yield components
        for key in ("components", "accessory", "component"):
            if key in components:
                yield from iter_components(components[key])
