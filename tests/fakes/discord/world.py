"""State of the fake Discord and its rendering into wire payloads.

:class:`World` owns every object, computes permissions the way Discord does (base permissions
from roles, then @everyone / role / member overwrites, threads inheriting their parent's), and
renders objects into the JSON payloads discord.py parses, shaped by discord.py's
``discord/types`` TypedDicts (checked statically by mypy and at runtime by :mod:`.schema`).
It does no networking; :class:`~.server.FakeDiscord` builds on it.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from .models import (
    ALL_PERMISSIONS,
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    ChannelType,
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeMessage,
    FakeRole,
    FakeUser,
    FakeWebhook,
    Intent,
    InteractionRef,
    MessageFlag,
    Overwrite,
    Perm,
)
from .snowflakes import SnowflakeFactory, iso_timestamp

if TYPE_CHECKING:
    from discord.types.appinfo import AppInfo, GatewayAppInfo
    from discord.types.channel import (
        DMChannel,
        GroupDMChannel,
        GuildChannel,
        NewsChannel,
        PermissionOverwrite,
        TextChannel,
        ThreadChannel,
    )
    from discord.types.guild import Guild
    from discord.types.interactions import PartialChannel, PartialThread
    from discord.types.member import Member, MemberWithUser
    from discord.types.message import Attachment, Message, MessageSnapshot, Reaction
    from discord.types.role import Role
    from discord.types.threads import Thread, ThreadMember
    from discord.types.user import PartialUser, User

__all__ = ["PrivilegedIntents", "World"]

DEFAULT_TOKEN = "FAKE.discord-bot-token.for-tests"
#: Bots in guilds without boosts may upload 10 MiB per file.
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
#: What Discord grants an app's interaction responses where its bot cannot be (a guild
#: without the bot, a DM or group DM between people): the response-only permissions.
INTERACTION_ONLY_PERMISSIONS = int(Perm.ATTACH_FILES | Perm.EMBED_LINKS | Perm.MENTION_EVERYONE)
#: Interaction contexts (``InteractionContextType``) by name, for messages.
CONTEXT_NAMES = {0: "guilds", 1: "DMs with the bot", 2: "private channels (DMs, group DMs)"}
DM_PERMISSIONS = int(
    Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.ATTACH_FILES
    | Perm.EMBED_LINKS
    | Perm.ADD_REACTIONS
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.MENTION_EVERYONE
)


@dataclass
class PrivilegedIntents:
    """Which privileged intents are switched on for the app in the developer portal."""

    message_content: bool = True
    members: bool = True
    presences: bool = False

    def disallowed(self, intents: int) -> int:
        """The requested privileged intent bits the app may not use."""
        bad = 0
        if intents & Intent.MESSAGE_CONTENT and not self.message_content:
            bad |= Intent.MESSAGE_CONTENT
        if intents & Intent.GUILD_MEMBERS and not self.members:
            bad |= Intent.GUILD_MEMBERS
        if intents & Intent.GUILD_PRESENCES and not self.presences:
            bad |= Intent.GUILD_PRESENCES
        return int(bad)

    @property
    def application_flags(self) -> int:
        flags = 0
        if self.presences:
            flags |= 1 << 12
        if self.members:
            flags |= 1 << 15
        if self.message_content:
            flags |= 1 << 19
        return flags


@dataclass(eq=False)
class RegisteredCommand:
    id: int
    guild_id: int | None
    payload: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.payload["name"])

    @property
    def type(self) -> int:
        return int(self.payload.get("type", 1))


@dataclass(eq=False)
class InteractionState:
    """Server-side state of one interaction (the test-facing handle wraps it)."""

    id: int
    token: str
    type: int
    user: FakeUser
    channel_id: int
    guild_id: int | None
    created_at: float
    payload: dict[str, Any]
    name: str | None = None
    custom_id: str | None = None
    #: Component / modal interactions: the message the component is on.
    source_message_id: int | None = None
    response_type: int | None = None
    original_message_id: int | None = None
    deferred_ephemeral: bool = False
    followup_ids: list[int] = field(default_factory=list)
    modal: dict[str, Any] | None = None
    #: Modal submissions: the interaction that opened the modal.
    triggering_id: int | None = None
    #: Application commands: 1 slash command, 2 user / 3 message context menu.
    command_type: int = 1
    #: Message context menu commands: the message the command was run on.
    target_message_id: int | None = None
    #: ``authorizing_integration_owners`` as sent ({"0": guild id or "0", "1": user id}).
    owners: dict[str, str] = field(default_factory=dict)
    #: ``context`` as sent: 0 guild, 1 bot DM, 2 private channel.
    context: int = 0
    #: The invoking member may not let external apps answer publicly (no USE_EXTERNAL_APPS
    #: in a guild without the bot): Discord makes every response of this interaction
    #: ephemeral.
    forced_ephemeral: bool = False

    @property
    def user_install_only(self) -> bool:
        """Authorized by a user install alone (no guild install of the app here): Discord
        then allows at most 5 follow-ups."""
        return "0" not in self.owners

    def ref(self, interactions: dict[int, InteractionState]) -> InteractionRef:
        """How messages created in response refer to this interaction."""
        triggering = interactions.get(self.triggering_id) if self.triggering_id else None
        if not self.name:
            name = ""
        elif self.command_type == 1:
            name = self.name.split()[0]
        else:
            name = self.name
        return InteractionRef(
            id=self.id,
            type=self.type,
            name=name,
            user=self.user,
            interacted_message_id=self.source_message_id,
            triggering=triggering.ref(interactions) if triggering is not None else None,
            owners=tuple(self.owners.items()),
            target_message_id=self.target_message_id,
        )


class World:
    """All state of the fake Discord, plus permission logic and payload rendering."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        bot_name: str = "Seed",
        privileged_intents: PrivilegedIntents | None = None,
        attachment_url_ttl: float = 24 * 3600,
    ) -> None:
        self._clock_offset = 0.0
        self.snowflake = SnowflakeFactory(self.now)
        self.token = token
        self.privileged_intents = privileged_intents or PrivilegedIntents()
        self.attachment_url_ttl = attachment_url_ttl
        self._cdn_secret = secrets.token_bytes(32)
        self.base_url = "http://127.0.0.1:0"

        self.users: dict[int, FakeUser] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.webhooks: dict[int, FakeWebhook] = {}
        self.messages: dict[int, FakeMessage] = {}
        self.ephemeral_messages: dict[int, FakeMessage] = {}
        self.channel_history: dict[int, list[int]] = {}
        self.reactions: dict[int, dict[str, list[int]]] = {}
        self.attachments: dict[int, FakeAttachment] = {}
        self.commands: dict[int, RegisteredCommand] = {}
        self.interactions: dict[int, InteractionState] = {}
        self.dm_by_user: dict[int, int] = {}
        #: Users who installed the app to their account (``FakeDiscord.install_for_user``).
        self.user_installs: set[int] = set()
        #: The portal's Installation → Installation Contexts: 0 Guild Install, 1 User Install
        #: (``FakeDiscord.set_installation_contexts``).
        self.installation_contexts: set[int] = {0, 1}
        self._positions = itertools.count(1)

        self.owner = self._new_user("app-owner", global_name="App Owner")
        self.bot_user = self._new_user(bot_name.lower(), global_name=None, bot=True)
        self.bot_user.username = bot_name
        self.application_id = self.bot_user.id
        self.application_name = bot_name

    # ----------------------------------------------------------------- time and ids

    def now(self) -> float:
        """The fake's clock (Unix seconds); see ``advance_time``."""
        return time.time() + self._clock_offset

    def advance_time(self, seconds: float) -> None:
        """Move the fake's clock forward: expires CDN URLs and interaction tokens, no sleeping."""
        self._clock_offset += seconds

    # ----------------------------------------------------------------- creation

    def _new_user(self, username: str, **kwargs: Any) -> FakeUser:
        user = FakeUser(id=self.snowflake(), username=username, **kwargs)
        self.users[user.id] = user
        return user

    def _new_guild(self, name: str, owner: FakeUser) -> FakeGuild:
        guild = FakeGuild(
            id=self.snowflake.next_millisecond(),
            name=name,
            owner_id=owner.id,
            created_at=self.now(),
        )
        self.guilds[guild.id] = guild
        guild.roles[guild.id] = FakeRole(
            id=guild.id,
            guild_id=guild.id,
            name="@everyone",
            permissions=DEFAULT_EVERYONE_PERMISSIONS,
            position=0,
        )
        return guild

    def _new_role(self, guild: FakeGuild, name: str, permissions: int, **kwargs: Any) -> FakeRole:
        role = FakeRole(
            id=self.snowflake(),
            guild_id=guild.id,
            name=name,
            permissions=permissions,
            position=len(guild.roles),
            **kwargs,
        )
        guild.roles[role.id] = role
        return role

    def _new_member(
        self, guild: FakeGuild, user: FakeUser, roles: Iterable[FakeRole], nick: str | None
    ) -> FakeMember:
        member = FakeMember(
            user=user,
            guild_id=guild.id,
            role_ids=[r.id for r in roles if not r.is_everyone],
            joined_at=self.now(),
            nick=nick,
        )
        guild.members[user.id] = member
        return member

    def _new_channel(self, **kwargs: Any) -> FakeChannel:
        channel = FakeChannel(
            id=kwargs.pop("id", None) or self.snowflake(), created_at=self.now(), **kwargs
        )
        self.channels[channel.id] = channel
        self.channel_history.setdefault(channel.id, [])
        if channel.guild_id is not None:
            self.guilds[channel.guild_id].channel_ids.append(channel.id)
        return channel

    def _new_bot_role(self, guild: FakeGuild, permissions: int) -> FakeRole:
        return self._new_role(
            guild,
            self.bot_user.username,
            permissions,
            managed=True,
            bot_id=self.bot_user.id,
        )

    # ----------------------------------------------------------------- lookups

    def guild_of(self, channel: FakeChannel) -> FakeGuild | None:
        return self.guilds.get(channel.guild_id) if channel.guild_id is not None else None

    def parent_of(self, channel: FakeChannel) -> FakeChannel:
        """The channel whose overwrites apply: the parent for a thread, else itself."""
        if channel.is_thread and channel.parent_id is not None:
            return self.channels[channel.parent_id]
        return channel

    def history(self, channel_id: int) -> list[FakeMessage]:
        return [self.messages[i] for i in self.channel_history.get(channel_id, [])]

    def find_message(self, message_id: int) -> FakeMessage | None:
        return self.messages.get(message_id) or self.ephemeral_messages.get(message_id)

    def shard_of(self, guild_id: int | None, shard_count: int) -> int:
        return 0 if guild_id is None else (guild_id >> 22) % shard_count

    # ----------------------------------------------------------------- permissions

    def base_permissions(self, guild: FakeGuild, user_id: int) -> int:
        if user_id == guild.owner_id:
            return ALL_PERMISSIONS
        member = guild.members.get(user_id)
        if member is None:
            return 0
        perms = guild.everyone.permissions
        for role_id in member.role_ids:
            role = guild.roles.get(role_id)
            if role is not None:
                perms |= role.permissions
        if perms & Perm.ADMINISTRATOR:
            return ALL_PERMISSIONS
        return perms

    def permissions_for(self, user_id: int, channel: FakeChannel) -> int:
        """The user's effective permissions in ``channel`` (0 when they cannot see it)."""
        if channel.is_dm:
            members = channel.recipient_ids or (channel.recipient_id, self.bot_user.id)
            return DM_PERMISSIONS if user_id in members else 0
        guild = self.guild_of(channel)
        if guild is None:
            return 0
        perms = self.base_permissions(guild, user_id)
        if perms == ALL_PERMISSIONS:
            return perms
        member = guild.members.get(user_id)
        target = self.parent_of(channel)
        everyone = target.overwrites.get(guild.id)
        if everyone is not None:
            perms = (perms & ~everyone.deny) | everyone.allow
        allow = deny = 0
        for ow in target.overwrites.values():
            if ow.type == 0 and member is not None and ow.target_id in member.role_ids:
                allow |= ow.allow
                deny |= ow.deny
        perms = (perms & ~deny) | allow
        own = target.overwrites.get(user_id)
        if own is not None and own.type == 1:
            perms = (perms & ~own.deny) | own.allow
        if not perms & Perm.VIEW_CHANNEL:
            return 0
        if not perms & Perm.SEND_MESSAGES:
            # Discord denies what depends on sending along with it.
            perms &= ~(
                Perm.SEND_TTS_MESSAGES
                | Perm.MENTION_EVERYONE
                | Perm.EMBED_LINKS
                | Perm.ATTACH_FILES
            )
        if (
            channel.is_private_thread
            and user_id not in channel.member_ids
            and not perms & Perm.MANAGE_THREADS
        ):
            return 0
        return perms

    def can_send(self, user_id: int, channel: FakeChannel) -> bool:
        needed = Perm.SEND_MESSAGES_IN_THREADS if channel.is_thread else Perm.SEND_MESSAGES
        perms = self.permissions_for(user_id, channel)
        return bool(perms & Perm.VIEW_CHANNEL) and bool(perms & needed)

    def bot_can_view(self, channel: FakeChannel) -> bool:
        return bool(self.permissions_for(self.bot_user.id, channel) & Perm.VIEW_CHANNEL)

    def bot_in_guild(self, guild_id: int) -> bool:
        guild = self.guilds.get(guild_id)
        return guild is not None and self.bot_user.id in guild.members

    # ----------------------------------------------------------------- installations

    def interaction_context(self, channel: FakeChannel) -> int:
        """Discord's ``context`` of an interaction in ``channel``: 0 GUILD, 1 BOT_DM,
        2 PRIVATE_CHANNEL (a DM or group DM the bot is not part of)."""
        if channel.is_private_channel:
            return 2
        return 1 if channel.is_dm else 0

    def authorizing_owners(
        self, integration_types: Iterable[int], user: FakeUser, channel: FakeChannel
    ) -> dict[str, str]:
        """``authorizing_integration_owners`` for ``user`` running a command of these
        ``integration_types`` in ``channel``: ``"0"`` (guild install) is the guild's id where
        the bot is a member, ``"0"`` in the bot's DM; ``"1"`` (user install) is the user's id
        if they installed the app. Empty when no installation authorizes it there."""
        types = set(integration_types)
        owners: dict[str, str] = {}
        context = self.interaction_context(channel)
        if 0 in types:
            if (
                context == 0
                and channel.guild_id is not None
                and self.bot_in_guild(channel.guild_id)
            ):
                owners["0"] = str(channel.guild_id)
            elif context == 1:
                owners["0"] = "0"
        if 1 in types and user.id in self.user_installs:
            owners["1"] = str(user.id)
        return owners

    def app_permissions_for(self, channel: FakeChannel) -> int:
        """The interaction's ``app_permissions``: the bot's own where it is (a guild that
        added it, its DM); in a guild without it, what @everyone may do in the channel plus
        the response permissions Discord always grants; just those in private channels."""
        if channel.is_private_channel:
            return INTERACTION_ONLY_PERMISSIONS
        guild = self.guild_of(channel)
        if guild is None or self.bot_user.id in guild.members:
            return self.permissions_for(self.bot_user.id, channel)
        perms = guild.everyone.permissions
        everyone = self.parent_of(channel).overwrites.get(guild.id)
        if everyone is not None:
            perms = (perms & ~everyone.deny) | everyone.allow
        return int(perms | INTERACTION_ONLY_PERMISSIONS)

    # ----------------------------------------------------------------- CDN signing

    def sign_path(self, path: str, issued: float | None = None) -> str:
        """``path`` plus Discord's ``ex``/``is``/``hm`` query (expiry, issue time, HMAC)."""
        issued_at = int(self.now() if issued is None else issued)
        expires = issued_at + int(self.attachment_url_ttl)
        ex, is_ = f"{expires:x}", f"{issued_at:x}"
        return f"{path}?ex={ex}&is={is_}&hm={self._signature(path, ex, is_)}&"

    def _signature(self, path: str, ex: str, is_: str) -> str:
        return hmac.new(self._cdn_secret, f"{path}|{ex}|{is_}".encode(), hashlib.sha256).hexdigest()

    def check_signature(self, path: str, ex: str, is_: str, hm: str) -> bool:
        return hmac.compare_digest(self._signature(path, ex, is_), hm)

    def attachment_url(self, attachment: FakeAttachment) -> str:
        return self.base_url + self.sign_path(attachment.path)

    def attachment_proxy_url(self, attachment: FakeAttachment) -> str:
        return self.base_url + "/media" + self.sign_path(attachment.path)

    # ----------------------------------------------------------------- payloads

    def user_payload(self, user: FakeUser) -> User:
        payload: User = {
            "id": str(user.id),
            "username": user.username,
            "discriminator": user.discriminator,
            "avatar": None,
            "global_name": user.global_name,
            "public_flags": 0,
        }
        if user.bot:
            payload["bot"] = True
        if user.system:
            payload["system"] = True
        return payload

    def me_payload(self) -> User:
        payload = self.user_payload(self.bot_user)
        payload.update(
            {
                "verified": True,
                "mfa_enabled": False,
                "email": None,
                "flags": 0,
                "locale": "en-US",
                "premium_type": 0,
            }
        )
        return payload

    def member_payload(self, member: FakeMember) -> Member:
        payload: Member = {
            "roles": [str(r) for r in member.role_ids],
            "joined_at": iso_timestamp(member.joined_at),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "premium_since": None,
        }
        if member.nick is not None:
            payload["nick"] = member.nick
        return payload

    def member_with_user_payload(self, member: FakeMember) -> MemberWithUser:
        payload = cast("MemberWithUser", dict(self.member_payload(member)))
        payload["user"] = self.user_payload(member.user)
        return payload

    def role_payload(self, role: FakeRole) -> Role:
        payload: Role = {
            "id": str(role.id),
            "name": role.name,
            "color": role.color,
            "colors": {
                "primary_color": role.color,
                "secondary_color": None,
                "tertiary_color": None,
            },
            "hoist": role.hoist,
            "position": role.position,
            "permissions": str(role.permissions),
            "managed": role.managed,
            "mentionable": role.mentionable,
            "flags": 0,
            "icon": None,
            "unicode_emoji": None,
        }
        if role.bot_id is not None:
            payload["tags"] = {"bot_id": str(role.bot_id)}
        return payload

    def overwrites_payload(self, channel: FakeChannel) -> list[PermissionOverwrite]:
        return [
            {
                "id": str(ow.target_id),
                "type": 0 if ow.type == 0 else 1,
                "allow": str(ow.allow),
                "deny": str(ow.deny),
            }
            for ow in channel.overwrites.values()
        ]

    def thread_member_payload(self, thread: FakeChannel, user_id: int) -> ThreadMember:
        return {
            "id": str(thread.id),
            "user_id": str(user_id),
            "join_timestamp": iso_timestamp(thread.member_ids.get(user_id, thread.created_at)),
            "flags": 1,
        }

    def thread_payload(self, thread: FakeChannel) -> Thread:
        assert thread.guild_id is not None and thread.parent_id is not None
        payload: Thread = {
            "id": str(thread.id),
            "guild_id": str(thread.guild_id),
            "parent_id": str(thread.parent_id),
            "owner_id": str(thread.owner_id),
            "name": thread.name,
            "type": 12 if thread.is_private_thread else 10 if thread.type == 10 else 11,
            "member_count": min(len(thread.member_ids), 50),
            "message_count": thread.message_count,
            "total_message_sent": thread.total_message_sent,
            "rate_limit_per_user": thread.rate_limit_per_user,
            "thread_metadata": {
                "archived": thread.archived,
                "auto_archive_duration": _archive_duration(thread.auto_archive_duration),
                "archive_timestamp": iso_timestamp(thread.archive_timestamp or thread.created_at),
                "locked": thread.locked,
                "create_timestamp": iso_timestamp(thread.created_at),
            },
            "last_message_id": _opt_id(thread.last_message_id),
            "flags": 0,
        }
        if thread.is_private_thread:
            payload["thread_metadata"]["invitable"] = thread.invitable
        if self.bot_user.id in thread.member_ids:
            payload["member"] = self.thread_member_payload(thread, self.bot_user.id)
        return payload

    def channel_payload(self, channel: FakeChannel) -> GuildChannel | DMChannel | GroupDMChannel:
        """The channel as ``GET /channels/{id}`` and gateway channel events render it."""
        if channel.is_dm and channel.recipient_ids:
            return self.private_channel_payload(channel, viewer_id=None)
        if channel.is_dm:
            recipient = self.users[channel.recipient_id or 0]
            return {
                "id": str(channel.id),
                "type": 1,
                # discord.py's TypedDict requires a name; Discord leaves it empty for DMs.
                "name": "",
                "last_message_id": _opt_id(channel.last_message_id),
                "recipients": [
                    {
                        "id": str(recipient.id),
                        "username": recipient.username,
                        "discriminator": recipient.discriminator,
                        "avatar": None,
                        "global_name": recipient.global_name,
                    }
                ],
            }
        assert channel.guild_id is not None
        if channel.is_thread:
            thread = self.thread_payload(channel)
            as_channel: ThreadChannel = {
                "id": thread["id"],
                "type": thread["type"],
                "name": thread["name"],
                "guild_id": thread["guild_id"],
                "parent_id": thread["parent_id"],
                "owner_id": thread["owner_id"],
                "nsfw": False,
                "last_message_id": _opt_id(channel.last_message_id),
                "rate_limit_per_user": channel.rate_limit_per_user,
                "message_count": channel.message_count,
                "member_count": thread["member_count"],
                "total_message_sent": channel.total_message_sent,
                "thread_metadata": thread["thread_metadata"],
                "flags": 0,
            }
            if "member" in thread:
                as_channel["member"] = thread["member"]
            return as_channel
        if channel.type == ChannelType.CATEGORY:
            return {
                "id": str(channel.id),
                "type": 4,
                "name": channel.name,
                "guild_id": str(channel.guild_id),
                "position": channel.position,
                "permission_overwrites": self.overwrites_payload(channel),
                "nsfw": channel.nsfw,
                "parent_id": None,
            }
        text: TextChannel = {
            "id": str(channel.id),
            "type": 0,
            "name": channel.name,
            "guild_id": str(channel.guild_id),
            "position": channel.position,
            "permission_overwrites": self.overwrites_payload(channel),
            "nsfw": channel.nsfw,
            "parent_id": _opt_id(channel.parent_id),
            "last_message_id": _opt_id(channel.last_message_id),
            "rate_limit_per_user": channel.rate_limit_per_user,
            "default_auto_archive_duration": 1440,
        }
        if channel.topic is not None:
            text["topic"] = channel.topic
        if channel.type == ChannelType.NEWS:
            return cast("NewsChannel", {**text, "type": 5})
        return text

    def private_channel_payload(
        self, channel: FakeChannel, *, viewer_id: int | None
    ) -> DMChannel | GroupDMChannel:
        """A DM or group DM between people, as an interaction from ``viewer_id`` shows it
        (its ``recipients`` are the others in it)."""
        recipients: list[PartialUser] = [
            {
                "id": str(user.id),
                "username": user.username,
                "discriminator": user.discriminator,
                "avatar": None,
                "global_name": user.global_name,
            }
            for user in (self.users[i] for i in channel.recipient_ids if i != viewer_id)
        ]
        if channel.type == ChannelType.GROUP_DM:
            return {
                "id": str(channel.id),
                "type": 3,
                "name": channel.name,
                "icon": None,
                "owner_id": str(channel.owner_id or channel.recipient_ids[0]),
                "recipients": recipients,
            }
        return {
            "id": str(channel.id),
            "type": 1,
            "name": "",
            "last_message_id": _opt_id(channel.last_message_id),
            "recipients": recipients,
        }

    def partial_channel_payload(
        self, channel: FakeChannel, user_id: int
    ) -> PartialChannel | PartialThread:
        """A channel as it appears in an interaction's ``resolved.channels``."""
        perms = str(self.permissions_for(user_id, channel))
        if channel.is_thread:
            thread = self.thread_payload(channel)
            return {
                "id": thread["id"],
                "name": thread["name"],
                "permissions": perms,
                "type": thread["type"],
                "thread_metadata": thread["thread_metadata"],
                "parent_id": thread["parent_id"],
                "owner_id": thread["owner_id"],
                "message_count": thread["message_count"],
                "member_count": thread["member_count"],
                "rate_limit_per_user": thread["rate_limit_per_user"],
                "total_message_sent": thread["total_message_sent"],
                "flags": 0,
            }
        return {
            "id": str(channel.id),
            "name": channel.name,
            "permissions": perms,
            "type": 4 if channel.type == ChannelType.CATEGORY else 5 if channel.type == 5 else 0,
            "position": channel.position,
            "nsfw": channel.nsfw,
            "flags": 0,
            "rate_limit_per_user": channel.rate_limit_per_user,
            "parent_id": _opt_id(channel.parent_id),
            "last_message_id": _opt_id(channel.last_message_id),
        }

    def guild_payload(
        self, guild: FakeGuild, *, members: Iterable[FakeMember], full: bool = True
    ) -> Guild:
        """GUILD_CREATE (``full``) or ``GET /guilds/{id}`` (no channels/members/threads)."""
        payload: Guild = {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "emojis": [],
            "stickers": [],
            "features": [],
            "description": None,
            "incidents_data": None,
            "owner_id": str(guild.owner_id),
            "region": "deprecated",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": [self.role_payload(r) for r in guild.roles.values()],
            "mfa_level": 0,
            "nsfw_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "banner": None,
            "premium_tier": 0,
            "preferred_locale": guild.preferred_locale,
            "public_updates_channel_id": None,
            "stage_instances": [],
            "guild_scheduled_events": [],
            "premium_subscription_count": 0,
            "max_members": 500000,
            "max_video_channel_users": 25,
        }
        if full:
            channels = [self.channels[c] for c in guild.channel_ids]
            bot_member = guild.members.get(self.bot_user.id)
            payload.update(
                {
                    "joined_at": iso_timestamp(
                        bot_member.joined_at if bot_member else guild.created_at
                    ),
                    "large": len(guild.members) > 250,
                    "unavailable": False,
                    "member_count": len(guild.members),
                    "voice_states": [],
                    "members": [cast("Member", self.member_with_user_payload(m)) for m in members],
                    "channels": [
                        cast("GuildChannel", self.channel_payload(c))
                        for c in channels
                        if not c.is_thread
                    ],
                    "threads": [
                        self.thread_payload(c)
                        for c in channels
                        if c.is_thread and not c.archived and self.bot_can_view(c)
                    ],
                    "presences": [],
                    "soundboard_sounds": [],
                }
            )
        return payload

    def attachment_payload(self, attachment: FakeAttachment) -> Attachment:
        payload: Attachment = {
            "id": str(attachment.id),
            "filename": attachment.filename,
            "size": attachment.size,
            "url": self.attachment_url(attachment),
            "proxy_url": self.attachment_proxy_url(attachment),
            "flags": 0,
        }
        if attachment.content_type is not None:
            payload["content_type"] = attachment.content_type
        if attachment.width is not None and attachment.height is not None:
            payload["width"] = attachment.width
            payload["height"] = attachment.height
        if attachment.description is not None:
            payload["description"] = attachment.description
        if attachment.ephemeral:
            payload["ephemeral"] = True
        return payload

    def message_payload(
        self,
        message: FakeMessage,
        *,
        content_visible: bool = True,
        depth: int = 0,
    ) -> Message:
        """A message; ``content_visible=False`` empties content like Discord does without the
        Message Content intent (see :meth:`content_visible_to_bot`)."""
        guild = self.guilds.get(message.guild_id) if message.guild_id is not None else None
        channel = self.channels.get(message.channel_id)
        show = content_visible or self.content_visible_to_bot(message)
        mentions: list[Any] = []
        for user_id in message.mention_user_ids:
            user = self.users.get(user_id)
            if user is None:
                continue
            entry: dict[str, Any] = dict(self.user_payload(user))
            if guild is not None and user_id in guild.members:
                entry["member"] = self.member_payload(guild.members[user_id])
            mentions.append(entry)
        payload: Message = {
            "id": str(message.id),
            "channel_id": str(message.channel_id),
            "author": self.user_payload(message.author),
            "content": message.content if show else "",
            "timestamp": iso_timestamp(message.timestamp),
            "edited_timestamp": (
                iso_timestamp(message.edited_timestamp) if message.edited_timestamp else None
            ),
            "tts": message.tts,
            "mention_everyone": message.mention_everyone,
            "mentions": mentions,
            "mention_roles": [str(r) for r in message.mention_role_ids],
            "attachments": (
                [self.attachment_payload(a) for a in message.attachments] if show else []
            ),
            "embeds": [cast("Any", dict(e)) for e in message.embeds] if show else [],
            "components": [cast("Any", dict(c)) for c in message.components] if show else [],
            "pinned": False,
            "type": cast("Any", message.type),
            "flags": message.flags,
        }
        if guild is not None:
            payload["guild_id"] = str(guild.id)
            member = guild.members.get(message.author.id)
            if member is not None and message.webhook_id is None:
                payload["member"] = self.member_payload(member)
        if message.webhook_id is not None:
            payload["webhook_id"] = str(message.webhook_id)
        if message.application_id is not None:
            payload["application_id"] = str(message.application_id)
        if message.nonce is not None:
            payload["nonce"] = message.nonce
        if message.message_reference is not None:
            ref = message.message_reference
            reference: dict[str, Any] = {
                "type": ref.get("type", 0),
                "channel_id": str(ref["channel_id"]),
            }
            if ref.get("message_id") is not None:
                reference["message_id"] = str(ref["message_id"])
            if ref.get("guild_id") is not None:
                reference["guild_id"] = str(ref["guild_id"])
            payload["message_reference"] = cast("Any", reference)
            if message.type in (19, 21) and depth == 0:
                target = self.messages.get(int(ref.get("message_id") or 0))
                payload["referenced_message"] = (
                    self.message_payload(target, content_visible=content_visible, depth=1)
                    if target is not None
                    else None
                )
        if message.snapshots:
            payload_any = cast("dict[str, Any]", payload)
            payload_any["message_snapshots"] = [
                {"message": self.snapshot_payload(s, content_visible=show)}
                for s in message.snapshots
            ]
        if message.interaction is not None:
            ref_i = message.interaction
            payload["interaction_metadata"] = self._interaction_metadata(ref_i, message.guild_id)
            payload["interaction"] = {
                "id": str(ref_i.id),
                "type": cast("Any", ref_i.type),
                "name": ref_i.name,
                "user": self.user_payload(ref_i.user),
            }
        if message.thread_id is not None and message.thread_id in self.channels and depth == 0:
            payload["thread"] = self.thread_payload(self.channels[message.thread_id])
        if channel is not None and channel.is_thread:
            history = self.channel_history.get(channel.id, [])
            if message.id in history:
                payload["position"] = history.index(message.id)
        reactions = self.reactions.get(message.id)
        if reactions:
            payload["reactions"] = [
                self._reaction_payload(emoji, users) for emoji, users in reactions.items() if users
            ]
        return payload

    def snapshot_payload(self, message: FakeMessage, *, content_visible: bool) -> MessageSnapshot:
        """A forwarded message as a forward's ``message_snapshots[].message`` carries it
        (content, attachments with freshly signed URLs, embeds, ...; no author or ids)."""
        snapshot: MessageSnapshot = {
            "type": cast("Any", message.type),
            "content": message.content if content_visible else "",
            "embeds": [cast("Any", dict(e)) for e in message.embeds] if content_visible else [],
            "attachments": (
                [self.attachment_payload(a) for a in message.attachments] if content_visible else []
            ),
            "timestamp": iso_timestamp(message.timestamp),
            "edited_timestamp": (
                iso_timestamp(message.edited_timestamp) if message.edited_timestamp else None
            ),
            "flags": message.flags,
            "mentions": [
                cast("Any", self.user_payload(self.users[u]))
                for u in message.mention_user_ids
                if u in self.users
            ],
            "mention_roles": [str(r) for r in message.mention_role_ids],
        }
        if message.components and content_visible:
            snapshot["components"] = [cast("Any", dict(c)) for c in message.components]
        return snapshot

    def _interaction_metadata(self, ref: InteractionRef, guild_id: int | None) -> Any:
        metadata: dict[str, Any] = {
            "id": str(ref.id),
            "type": ref.type,
            "user": self.user_payload(ref.user),
            "authorizing_integration_owners": dict(ref.owners)
            or self._integration_owners(guild_id),
        }
        if ref.type == 2 and ref.target_message_id is not None:
            metadata["target_message_id"] = str(ref.target_message_id)
        if ref.type == 3 and ref.interacted_message_id is not None:
            metadata["interacted_message_id"] = str(ref.interacted_message_id)
        if ref.type == 5 and ref.triggering is not None:
            metadata["triggering_interaction_metadata"] = self._interaction_metadata(
                ref.triggering, guild_id
            )
        return metadata

    def _reaction_payload(self, emoji: str, users: list[int]) -> Reaction:
        name, _, emoji_id = emoji.partition(":")
        return {
            "count": len(users),
            "me": self.bot_user.id in users,
            "emoji": {"id": emoji_id or None, "name": name},
            "me_burst": False,
            "count_details": {"burst": 0, "normal": len(users)},
            "burst_colors": [],
        }

    def _integration_owners(self, guild_id: int | None) -> dict[Any, Any]:
        return {"0": str(guild_id) if guild_id is not None else "0"}

    def content_visible_to_bot(self, message: FakeMessage) -> bool:
        """Discord's exceptions to the Message Content intent: the app's own messages, DMs,
        and messages that mention the app."""
        if message.author.id == self.bot_user.id:
            return True
        if message.guild_id is None:
            return True
        return self.bot_user.id in message.mention_user_ids

    def application_payload(self) -> AppInfo:
        return {
            "id": str(self.application_id),
            "name": self.application_name,
            "verify_key": "0" * 64,
            "icon": None,
            "summary": "",
            "description": "A fake application for tests",
            "flags": self.privileged_intents.application_flags,
            "owner": self.user_payload(self.owner),
            "bot_public": True,
            "bot_require_code_grant": False,
            "interactions_endpoint_url": None,
            "redirect_uris": [],
            "rpc_origins": [],
            "approximate_user_install_count": len(self.user_installs),
            "integration_types_config": self._integration_types_config(),
        }

    def _integration_types_config(self) -> dict[Any, Any]:
        """The portal's default install settings per enabled installation context."""
        params = {
            0: {
                "scopes": ["applications.commands", "bot"],
                "permissions": str(DEFAULT_BOT_PERMISSIONS),
            },
            1: {"scopes": ["applications.commands"], "permissions": "0"},
        }
        return {
            str(kind): {"oauth2_install_params": params[kind]}
            for kind in sorted(self.installation_contexts)
        }

    def gateway_application_payload(self) -> GatewayAppInfo:
        return {
            "id": str(self.application_id),
            "flags": self.privileged_intents.application_flags,
        }

    # ----------------------------------------------------------------- misc helpers

    def bot_member_defaults(self, guild: FakeGuild, bot_permissions: int | None) -> None:
        role = self._new_bot_role(
            guild, DEFAULT_BOT_PERMISSIONS if bot_permissions is None else bot_permissions
        )
        self._new_member(guild, self.bot_user, [role], None)

    def bot_role(self, guild: FakeGuild) -> FakeRole:
        for role in guild.roles.values():
            if role.bot_id == self.bot_user.id:
                return role
        raise AssertionError(f"no managed role for the bot in {guild!r}")

    def new_message(self, **kwargs: Any) -> FakeMessage:
        return FakeMessage(
            id=kwargs.pop("id", None) or self.snowflake(), timestamp=self.now(), **kwargs
        )

    def store_message(self, message: FakeMessage) -> None:
        """Add a (non-ephemeral) message to its channel, updating counters."""
        self.messages[message.id] = message
        history = self.channel_history.setdefault(message.channel_id, [])
        history.append(message.id)
        channel = self.channels.get(message.channel_id)
        if channel is not None:
            channel.last_message_id = message.id
            if channel.is_thread and message.type not in (21,):
                channel.message_count += 1
                channel.total_message_sent += 1

    def replace_message(self, message: FakeMessage) -> None:
        if message.id in self.ephemeral_messages:
            self.ephemeral_messages[message.id] = message
        else:
            self.messages[message.id] = message

    def remove_message(self, message: FakeMessage) -> None:
        if self.ephemeral_messages.pop(message.id, None) is not None:
            return
        self.messages.pop(message.id, None)
        history = self.channel_history.get(message.channel_id, [])
        if message.id in history:
            history.remove(message.id)
        channel = self.channels.get(message.channel_id)
        if channel is not None and channel.is_thread:
            channel.message_count = max(0, channel.message_count - 1)
        self.reactions.pop(message.id, None)

    def is_ephemeral(self, message: FakeMessage) -> bool:
        return bool(message.flags & MessageFlag.EPHEMERAL)

    def to_overwrite_map(
        self, overwrites: Mapping[FakeRole | FakeUser | FakeMember, tuple[int, int]] | None
    ) -> dict[int, Overwrite]:
        result: dict[int, Overwrite] = {}
        for target, (allow, deny) in (overwrites or {}).items():
            kind = 0 if isinstance(target, FakeRole) else 1
            result[target.id] = Overwrite(target_id=target.id, type=kind, allow=allow, deny=deny)
        return result


def _opt_id(value: int | None) -> str | None:
    return None if value is None else str(value)


def _archive_duration(value: int) -> Any:
    return value if value in (60, 1440, 4320, 10080) else 1440
