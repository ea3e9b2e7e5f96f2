"""Who may use the bot where: allow and deny lists for users, roles, channels (a category
counts for the channels in it) and servers. A deny always wins; an empty allow list allows
everyone. The server, role and channel allow lists confine the bot to the servers that added
it: outside them (DMs, group DMs, servers where only a person installed the app) nobody is
let in while one is set, unless the operator opens those places (``allow_outside_servers``),
and then only the user lists judge there. Deny lists hold everywhere."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    allow_users: frozenset[str] = frozenset()
    deny_users: frozenset[str] = frozenset()
    allow_roles: frozenset[str] = frozenset()
    deny_roles: frozenset[str] = frozenset()
    allow_channels: frozenset[str] = frozenset()
    deny_channels: frozenset[str] = frozenset()
    allow_guilds: frozenset[str] = frozenset()
    deny_guilds: frozenset[str] = frozenset()
    allow_outside_servers: bool = False

    @property
    def confined(self) -> bool:
        """Whether an allow list names servers, roles or channels: the bot is then meant for
        those servers only."""
        return bool(self.allow_guilds or self.allow_roles or self.allow_channels)


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks, and where: ``channel_ids`` holds the channel, its parent channel (for a
    thread) and its category, any of which may be listed. ``bot_absent``: a server that did
    not add the bot (only the person installed the app), which counts as outside the bot's
    servers, like a DM or a group DM (no ``guild_id``)."""

    user_id: str
    role_ids: Collection[str] = ()
    channel_ids: Collection[str] = ()
    guild_id: str | None = None
    bot_absent: bool = False

    @property
    def outside_servers(self) -> bool:
        return self.guild_id is None or self.bot_absent


OUTSIDE_SERVERS = "this bot is only available in the servers it is enabled in"


def denial_reason(policy: AccessPolicy, who: Requester) -> str | None:
    """Why ``who`` may not use the bot, or None when it may."""
    if who.user_id in policy.deny_users:
        return "you are not allowed to use this bot"
    if policy.allow_users and who.user_id not in policy.allow_users:
        return "you are not on this bot's list of allowed users"
    if who.guild_id is not None and who.guild_id in policy.deny_guilds:
        return "this bot is not enabled in this server"
    roles = set(who.role_ids)
    if roles & policy.deny_roles:
        return "one of your roles may not use this bot"
    channels = set(who.channel_ids)
    if channels & policy.deny_channels:
        return "this bot is not enabled in this channel"
    if who.outside_servers:
        if policy.confined and not policy.allow_outside_servers:
            return OUTSIDE_SERVERS
        return None
    if policy.allow_guilds and who.guild_id not in policy.allow_guilds:
        return "this bot is not enabled in this server"
    if policy.allow_roles and not roles & policy.allow_roles:
        return "this bot is limited to certain roles"
    if policy.allow_channels and not channels & policy.allow_channels:
        return "this bot is not enabled in this channel"
    return None
