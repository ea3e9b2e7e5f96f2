"""``FakeDiscord``: the fake's server (REST + gateway + CDN on one loopback port) and its
test-facing API (build a world, act as users, inject faults, read and wait on the event log).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import discord
from aiohttp import web

from .cdn import handle_cdn
from .errors import ApiError, check_message_body
from .events import (
    Event,
    HttpRequest,
    InteractionCreated,
    MessageCreated,
    MessageDeleted,
    MessageEdited,
    Problem,
    ReactionAdded,
    ThreadCreated,
    ThreadMemberAdded,
    ThreadUpdated,
    TypingStarted,
    UploadedFile,
)
from .gateway import Gateway, GatewaySession
from .interactions import FakeInteraction, build_command_options
from .media import guess_content_type, image_size
from .models import (
    AUTO,
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
    UserFile,
    iter_components,
)
from .rest import Fault, RestApi
from .unfurl import handle_external
from .world import (
    ATTACHMENT_SIZE_LIMIT,
    CONTEXT_NAMES,
    DEFAULT_TOKEN,
    InteractionState,
    PrivilegedIntents,
    RegisteredCommand,
    World,
)

__all__ = ["FakeDiscord"]

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)
PermissionsLike = discord.Permissions | int

_USER_MENTION = re.compile(r"<@!?(\d{15,21})>")
_ROLE_MENTION = re.compile(r"<@&(\d{15,21})>")
_EVERYONE = re.compile(r"@(?:everyone|here)\b")


def _perm_value(value: PermissionsLike | None) -> int | None:
    if value is None:
        return None
    return value.value if isinstance(value, discord.Permissions) else int(value)


class FakeDiscord(World):
    """A fake Discord (REST API, gateway, CDN) on ``127.0.0.1`` for the real discord.py client.

    Use it through the ``fake_discord`` fixture, or::

        async with FakeDiscord() as fake:
            point_discord_at(fake.api_base, fake.gateway_url)
            ...
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        bot_name: str = "Seed",
        host: str = "127.0.0.1",
        port: int = 0,
        privileged_intents: PrivilegedIntents | None = None,
        heartbeat_interval_ms: int = 41250,
        transport_compression: bool = False,
        recommended_shards: int = 1,
        interaction_deadline: float = 3.0,
        interaction_token_ttl: float = 15 * 60,
        attachment_url_ttl: float = 24 * 3600,
        validate_payloads: bool = True,
    ) -> None:
        super().__init__(
            token=token,
            bot_name=bot_name,
            privileged_intents=privileged_intents,
            attachment_url_ttl=attachment_url_ttl,
        )
        self.host = host
        self._port = port
        self.recommended_shards = recommended_shards
        self.interaction_deadline = interaction_deadline
        self.interaction_token_ttl = interaction_token_ttl
        self.validate_payloads = validate_payloads
        self.gateway = Gateway(
            self,
            heartbeat_interval_ms=heartbeat_interval_ms,
            transport_compression=transport_compression,
        )
        self.rest = RestApi(self)
        self._events: list[Event] = []
        self._changed = asyncio.Event()
        self.problems: list[str] = []
        self._runner: web.AppRunner | None = None
        # The media proxy's files (see unfurl.py): key -> (bytes, content type).
        self.external_media: dict[str, tuple[bytes, str]] = {}

    # ================================================================ lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{tail:.*}", self.rest.handle)
        app.router.add_get("/gateway/", self.gateway.handle)
        app.router.add_get("/gateway-resume/", self.gateway.handle)
        for prefix in ("", "/media"):
            for kind in ("attachments", "ephemeral-attachments"):
                app.router.add_get(
                    f"{prefix}/{kind}/{{owner_id}}/{{attachment_id}}/{{filename}}",
                    self._cdn,
                )
        app.router.add_get("/external/{key}/{tail:.*}", self._external)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self.base_url = f"http://{self.host}:{self._port}"

    async def close(self) -> None:
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        return self._port

    @property
    def api_base(self) -> str:
        """What ``discord.http.Route.BASE`` must be (``http://127.0.0.1:PORT/api/v10``)."""
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """The first gateway URL (``DiscordWebSocket.DEFAULT_GATEWAY``, ``GET /gateway/bot``)."""
        return f"ws://{self.host}:{self._port}/gateway/"

    @property
    def resume_gateway_url(self) -> str:
        """READY's ``resume_gateway_url``: a different path, so tests can see where RESUME went."""
        return f"ws://{self.host}:{self._port}/gateway-resume/"

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        return await handle_cdn(self, request)

    async def _external(self, request: web.Request) -> web.StreamResponse:
        return await handle_external(self, request)

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        self.problem(f"request to unknown URL {request.method} {request.path_qs}")
        return web.Response(status=404, text="404: Not Found")

    # ================================================================ event log

    @property
    def events(self) -> Sequence[Event]:
        """Everything that happened, in order (requests, gateway, messages, threads, ...)."""
        return tuple(self._events)

    @property
    def requests(self) -> list[HttpRequest]:
        return [e for e in self._events if isinstance(e, HttpRequest)]

    def events_of(self, kind: type[E], *, since: int = 0) -> list[E]:
        return [e for e in self._events[since:] if isinstance(e, kind)]

    def mark(self) -> int:
        """A cursor into the log: pass it as ``since=`` to only see later events."""
        return len(self._events)

    def record(self, event: Event) -> None:
        self._events.append(event)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def problem(self, message: str) -> None:
        """Log loudly and remember something a test should notice (see ``assert_no_problems``)."""
        log.error("fake Discord: %s", message)
        self.problems.append(message)
        self.record(Problem(message=message))

    def assert_no_problems(self) -> None:
        if self.problems:
            listed = "\n  ".join(self.problems)
            raise AssertionError(f"the fake Discord saw problems:\n  {listed}")

    # ================================================================ waiting

    async def wait_for(
        self,
        predicate: Callable[[Event], bool],
        *,
        timeout: float = 5.0,
        since: int = 0,
        what: str | None = None,
    ) -> Event:
        """The first event (from ``since``, default: the whole log) matching ``predicate``,
        waiting for it to happen. Raises ``AssertionError`` with the recent events on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        index = since
        while True:
            while index < len(self._events):
                event = self._events[index]
                index += 1
                if predicate(event):
                    return event
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(self._timeout_report(what or repr(predicate), timeout, since))
            changed = self._changed
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that races with the event being set.
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                pass

    async def wait_for_event(
        self,
        kind: type[E],
        predicate: Callable[[E], bool] | None = None,
        *,
        timeout: float = 5.0,
        since: int = 0,
        what: str | None = None,
    ) -> E:
        """Like :meth:`wait_for`, for one event class (typed)."""

        def match(event: Event) -> bool:
            return isinstance(event, kind) and (predicate is None or predicate(event))

        event = await self.wait_for(
            match, timeout=timeout, since=since, what=what or f"a {kind.__name__} event"
        )
        assert isinstance(event, kind)
        return event

    async def wait_for_message(
        self,
        channel: FakeChannel | int | None = None,
        predicate: Callable[[FakeMessage], bool] | None = None,
        *,
        by_bot: bool | None = True,
        contains: str | None = None,
        include_loading: bool = False,
        timeout: float = 5.0,
        since: int = 0,
    ) -> FakeMessage:
        """A created message (by default one the bot created) in ``channel``.

        Skips the empty "thinking" placeholder of a deferred interaction response unless
        ``include_loading`` (the answer arrives as its edit: use ``wait_for_edit`` or the
        interaction's ``wait_original``/``wait_followup``)."""
        channel_id = channel.id if isinstance(channel, FakeChannel) else channel

        def match(event: MessageCreated) -> bool:
            m = event.message
            return (
                (channel_id is None or m.channel_id == channel_id)
                and (by_bot is None or event.by_bot == by_bot)
                and (contains is None or contains in m.content)
                and (include_loading or not m.loading)
                and (predicate is None or predicate(m))
            )

        where = f" in channel {channel_id}" if channel_id else ""
        who = {True: "the bot", False: "a user", None: "anyone"}[by_bot]
        text = f" containing {contains!r}" if contains else ""
        event = await self.wait_for_event(
            MessageCreated,
            match,
            timeout=timeout,
            since=since,
            what=f"a message by {who}{where}{text}",
        )
        return event.message

    async def wait_for_post(
        self,
        channel: FakeChannel | int,
        predicate: Callable[[FakeMessage], bool] | None = None,
        *,
        contains: str | None = None,
        timeout: float = 5.0,
        since: int = 0,
    ) -> FakeMessage:
        """A message of the bot's in ``channel`` as it stands once created or edited into
        matching (``contains``, ``predicate``): an answer the bot may post anew or edit its
        status message into."""
        channel_id = channel.id if isinstance(channel, FakeChannel) else channel

        def match(event: Event) -> bool:
            if isinstance(event, MessageCreated) and event.by_bot:
                m = event.message
            elif isinstance(event, MessageEdited) and event.after.author.id == self.bot_user.id:
                m = event.after
            else:
                return False
            return (
                m.channel_id == channel_id
                and not m.loading
                and (contains is None or contains in m.content)
                and (predicate is None or predicate(m))
            )

        text = f" containing {contains!r}" if contains else ""
        found = await self.wait_for(
            match,
            timeout=timeout,
            since=since,
            what=f"a message posted or edited by the bot in channel {channel_id}{text}",
        )
        return found.message if isinstance(found, MessageCreated) else found.after  # type: ignore[attr-defined]

    async def wait_for_edit(
        self,
        message: FakeMessage | int,
        predicate: Callable[[FakeMessage], bool] | None = None,
        *,
        timeout: float = 5.0,
        since: int = 0,
    ) -> FakeMessage:
        """The message after an edit matching ``predicate``."""
        message_id = message.id if isinstance(message, FakeMessage) else message
        event = await self.wait_for_event(
            MessageEdited,
            lambda e: e.after.id == message_id and (predicate is None or predicate(e.after)),
            timeout=timeout,
            since=since,
            what=f"an edit of message {message_id}",
        )
        return event.after

    async def wait_for_thread(
        self,
        parent: FakeChannel | int | None = None,
        *,
        from_message: FakeMessage | int | None = None,
        by_bot: bool | None = True,
        timeout: float = 5.0,
        since: int = 0,
    ) -> FakeChannel:
        """A thread created (by default by the bot), optionally in ``parent`` / on a message."""
        parent_id = parent.id if isinstance(parent, FakeChannel) else parent
        message_id = from_message.id if isinstance(from_message, FakeMessage) else from_message
        event = await self.wait_for_event(
            ThreadCreated,
            lambda e: (
                (parent_id is None or e.parent_id == parent_id)
                and (message_id is None or e.from_message_id == message_id)
                and (by_bot is None or e.by_bot == by_bot)
            ),
            timeout=timeout,
            since=since,
            what=f"a thread in {parent_id} from message {message_id}",
        )
        return self.channels[event.thread_id]

    async def wait_for_typing(
        self, channel: FakeChannel | int, *, timeout: float = 5.0, since: int = 0
    ) -> TypingStarted:
        channel_id = channel.id if isinstance(channel, FakeChannel) else channel
        return await self.wait_for_event(
            TypingStarted,
            lambda e: e.channel_id == channel_id and e.by_bot,
            timeout=timeout,
            since=since,
            what=f"the bot typing in {channel_id}",
        )

    async def wait_for_request(
        self,
        route: str,
        predicate: Callable[[HttpRequest], bool] | None = None,
        *,
        timeout: float = 5.0,
        since: int = 0,
    ) -> HttpRequest:
        """A REST request to ``route`` (e.g. ``"POST /channels/{channel_id}/messages"``)."""
        return await self.wait_for_event(
            HttpRequest,
            lambda e: e.route == route and (predicate is None or predicate(e)),
            timeout=timeout,
            since=since,
            what=f"a request {route}",
        )

    def _timeout_report(self, what: str, timeout: float, since: int) -> str:
        recent = self._events[max(since, len(self._events) - 25) :]
        lines = [
            f"  #{len(self._events) - len(recent) + i}: {e.describe()}"
            for i, e in enumerate(recent)
        ]
        report = f"timed out after {timeout}s waiting for {what}.\nRecent events:\n" + (
            "\n".join(lines) or "  (none)"
        )
        if self.problems:
            report += "\nProblems:\n  " + "\n  ".join(self.problems)
        return report

    # ================================================================ gateway control

    @property
    def sessions(self) -> list[GatewaySession]:
        """Live gateway sessions (connected or resumable)."""
        return self.gateway.live_sessions()

    def connected_sessions(self) -> list[GatewaySession]:
        return [s for s in self.gateway.live_sessions() if s.connected]

    async def sync_gateway(self, *, timeout: float = 5.0) -> None:
        """Wait until every connected client has parsed everything dispatched so far."""
        await asyncio.gather(*(s.barrier(timeout) for s in self.connected_sessions()))

    def drop_gateway(self, *, shard_id: int | None = None, code: int | None = None) -> int:
        """Kill gateway connections (all, or one shard's): ``code=None`` drops the TCP
        connection without a close frame, a number closes with that code. Sessions stay
        resumable. Returns how many connections were dropped."""
        dropped = 0
        for session in self.connected_sessions():
            if shard_id is not None and session.shard_id != shard_id:
                continue
            connection = session.connection
            assert connection is not None
            if code is None:
                connection.abort()
            else:
                connection.close(code, "Dropped by the test")
            dropped += 1
        return dropped

    def refuse_gateway(self, refuse: bool = True) -> None:
        """While ``refuse``, answer new gateway connections with HTTP 503 (a gateway outage:
        clients keep retrying). Connections already open are left alone."""
        self.gateway.refusing = refuse

    def request_reconnect(self, *, shard_id: int | None = None) -> None:
        """Send op 7 RECONNECT, as Discord does before moving a session."""
        for session in self.connected_sessions():
            if shard_id is None or session.shard_id == shard_id:
                assert session.connection is not None
                session.connection.send_op(7, None)

    def invalidate_sessions(self, *, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION (``resumable=False`` also forgets the sessions)."""
        for session in self.connected_sessions():
            assert session.connection is not None
            session.connection.send_op(9, resumable)
            if not resumable:
                session.invalidated = True

    # ================================================================ fault injection

    def rate_limit(
        self,
        route: str,
        *,
        retry_after: float = 0.05,
        times: int = 1,
        is_global: bool = False,
        scope: str = "user",
        where: Callable[[HttpRequest], bool] | None = None,
    ) -> None:
        """Answer the next ``times`` requests to ``route`` (a template like
        ``"POST /channels/{channel_id}/messages"``) with 429."""
        self.rest.faults.append(
            Fault(
                route=route,
                status=429,
                remaining=times,
                retry_after=retry_after,
                is_global=is_global,
                scope=scope,
                where=where,
            )
        )

    def fail(
        self,
        route: str,
        *,
        status: int = 503,
        times: int = 1,
        body: Mapping[str, Any] | None = None,
        where: Callable[[HttpRequest], bool] | None = None,
    ) -> None:
        """Answer the next ``times`` requests to ``route`` with ``status`` (5xx by default).

        discord.py's HTTPClient retries 500/502/504/524 itself after sleeping 1 s, 3 s, ...
        (and interaction webhooks retry every 5xx): use 503 to fail fast."""
        self.rest.faults.append(
            Fault(route=route, status=status, remaining=times, body=dict(body or {}), where=where)
        )

    def install_commands(
        self,
        commands: Sequence[Mapping[str, Any]] | discord.app_commands.CommandTree[Any],
        *,
        guild: FakeGuild | None = None,
    ) -> list[dict[str, Any]]:
        """Register application commands as an earlier deploy (``seed-bot sync``) would have:
        a bulk overwrite of the global commands (or ``guild``'s), from payloads or from a
        ``CommandTree`` (its global commands, or those added for ``guild``). Raises
        :class:`ApiError` for definitions Discord would refuse."""
        if isinstance(commands, discord.app_commands.CommandTree):
            tree = commands
            target = discord.Object(guild.id) if guild is not None else None
            payloads: list[Any] = [c.to_dict(tree) for c in tree.get_commands(guild=target)]
        else:
            payloads = [dict(c) for c in commands]
        return self.rest.overwrite_commands(guild.id if guild else None, payloads)

    def set_privileged_intents(
        self,
        *,
        message_content: bool | None = None,
        members: bool | None = None,
        presences: bool | None = None,
    ) -> None:
        """Switch the app's privileged intents in the "developer portal" (for the next
        IDENTIFY; an IDENTIFY asking for a disabled one is closed with 4014)."""
        if message_content is not None:
            self.privileged_intents.message_content = message_content
        if members is not None:
            self.privileged_intents.members = members
        if presences is not None:
            self.privileged_intents.presences = presences

    # ================================================================ world building

    def create_user(
        self,
        name: str,
        *,
        global_name: str | None = None,
        bot: bool = False,
        dms_open: bool = True,
    ) -> FakeUser:
        """A user (not yet in any guild)."""
        return self._new_user(name, global_name=global_name, bot=bot, dms_open=dms_open)

    def create_guild(
        self,
        name: str = "Test Server",
        *,
        owner: FakeUser | None = None,
        bot_permissions: PermissionsLike | None = None,
        everyone_permissions: PermissionsLike | None = None,
        bot_member: bool = True,
    ) -> FakeGuild:
        """A guild with an @everyone role, an owner, and (``bot_member``) the bot as a member
        holding a managed role with ``bot_permissions``."""
        owner = owner or self.create_user(f"{name.lower().replace(' ', '-')}-owner")
        guild = self._new_guild(name, owner)
        everyone = _perm_value(everyone_permissions)
        if everyone is not None:
            guild.everyone.permissions = everyone
        self._new_member(guild, owner, [], None)
        if bot_member:
            self.bot_member_defaults(guild, _perm_value(bot_permissions))
            self.gateway.dispatch(
                "GUILD_CREATE",
                lambda s: self.guild_create_payload(guild, s),
                guild_id=guild.id,
                intent=Intent.GUILDS,
            )
        return guild

    def create_role(
        self,
        guild: FakeGuild,
        name: str,
        *,
        permissions: PermissionsLike = 0,
        mentionable: bool = False,
        hoist: bool = False,
        color: int = 0,
    ) -> FakeRole:
        role = self._new_role(
            guild,
            name,
            _perm_value(permissions) or 0,
            mentionable=mentionable,
            hoist=hoist,
            color=color,
        )
        self._dispatch_role("GUILD_ROLE_CREATE", role)
        return role

    def set_role_permissions(self, role: FakeRole, permissions: PermissionsLike) -> None:
        role.permissions = _perm_value(permissions) or 0
        self._dispatch_role("GUILD_ROLE_UPDATE", role)

    def set_bot_permissions(self, guild: FakeGuild, permissions: PermissionsLike) -> None:
        """Set the permissions of the bot's managed role in ``guild``."""
        self.set_role_permissions(self.bot_role(guild), permissions)

    def add_member(
        self,
        guild: FakeGuild,
        user: FakeUser,
        *,
        roles: Iterable[FakeRole] = (),
        nick: str | None = None,
    ) -> FakeMember:
        member = self._new_member(guild, user, roles, nick)
        self.gateway.dispatch(
            "GUILD_MEMBER_ADD",
            lambda s: {**self.member_with_user_payload(member), "guild_id": str(guild.id)},
            guild_id=guild.id,
            intent=Intent.GUILD_MEMBERS,
        )
        return member

    def set_member_roles(self, guild: FakeGuild, user: FakeUser, roles: Iterable[FakeRole]) -> None:
        member = guild.members[user.id]
        member.role_ids = [r.id for r in roles if not r.is_everyone]
        self.gateway.dispatch(
            "GUILD_MEMBER_UPDATE",
            lambda s: {
                "guild_id": str(guild.id),
                "roles": [str(r) for r in member.role_ids],
                "user": self.user_payload(user),
                "avatar": None,
                "joined_at": self.member_payload(member)["joined_at"],
                "flags": 0,
            },
            guild_id=guild.id,
            intent=None if user.id == self.bot_user.id else Intent.GUILD_MEMBERS,
        )

    def create_category(
        self,
        guild: FakeGuild,
        name: str,
        *,
        overwrites: Mapping[FakeRole | FakeUser | FakeMember, tuple[int, int]] | None = None,
    ) -> FakeChannel:
        channel = self._new_channel(
            type=ChannelType.CATEGORY,
            name=name,
            guild_id=guild.id,
            position=next(self._positions),
            overwrites=self.to_overwrite_map(overwrites),
        )
        self._dispatch_channel("CHANNEL_CREATE", channel)
        return channel

    def create_text_channel(
        self,
        guild: FakeGuild,
        name: str = "general",
        *,
        category: FakeChannel | None = None,
        topic: str | None = None,
        nsfw: bool = False,
        news: bool = False,
        overwrites: Mapping[FakeRole | FakeUser | FakeMember, tuple[int, int]] | None = None,
    ) -> FakeChannel:
        """A text (or news) channel; under a category without ``overwrites`` it is synced to
        the category's overwrites, as Discord does."""
        if overwrites is None and category is not None:
            ows = {k: dataclasses.replace(v) for k, v in category.overwrites.items()}
        else:
            ows = self.to_overwrite_map(overwrites)
        channel = self._new_channel(
            type=ChannelType.NEWS if news else ChannelType.TEXT,
            name=name,
            guild_id=guild.id,
            parent_id=category.id if category else None,
            position=next(self._positions),
            topic=topic,
            nsfw=nsfw,
            overwrites=ows,
        )
        self._dispatch_channel("CHANNEL_CREATE", channel)
        return channel

    def set_overwrite(
        self,
        channel: FakeChannel,
        target: FakeRole | FakeUser | FakeMember,
        *,
        allow: PermissionsLike = 0,
        deny: PermissionsLike = 0,
    ) -> None:
        """Set (replace) a permission overwrite on a channel or category (``allow``/``deny``
        as ints or ``discord.Permissions``). Use on a thread's parent to affect the thread."""
        assert not channel.is_thread, "threads have no overwrites: set them on the parent"
        kind = 0 if isinstance(target, FakeRole) else 1
        channel.overwrites[target.id] = Overwrite(
            target_id=target.id,
            type=kind,
            allow=_perm_value(allow) or 0,
            deny=_perm_value(deny) or 0,
        )
        self._dispatch_channel("CHANNEL_UPDATE", channel)

    def clear_overwrite(
        self, channel: FakeChannel, target: FakeRole | FakeUser | FakeMember
    ) -> None:
        channel.overwrites.pop(target.id, None)
        self._dispatch_channel("CHANNEL_UPDATE", channel)

    def deny_bot(self, channel: FakeChannel, *permissions: Perm) -> None:
        """Convenience: a member overwrite denying the bot ``permissions`` in ``channel``."""
        deny = 0
        for perm in permissions:
            deny |= int(perm)
        existing = channel.overwrites.get(self.bot_user.id)
        allow = existing.allow & ~deny if existing else 0
        deny |= existing.deny if existing else 0
        self.set_overwrite(channel, self.bot_user, allow=allow, deny=deny)

    def create_webhook(self, channel: FakeChannel, name: str = "Captain Hook") -> FakeWebhook:
        assert channel.guild_id is not None, "webhooks live in guild channels"
        webhook_id = self.snowflake()
        user = FakeUser(id=webhook_id, username=name, bot=True, discriminator="0000")
        self.users[webhook_id] = user
        webhook = FakeWebhook(
            id=webhook_id,
            token=secrets.token_urlsafe(48),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            name=name,
            user=user,
        )
        self.webhooks[webhook_id] = webhook
        return webhook

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        """The DM channel between ``user`` and the bot (created on first use)."""
        existing = self.dm_by_user.get(user.id)
        if existing is not None:
            return self.channels[existing]
        channel = self._new_channel(
            type=ChannelType.DM, name="", guild_id=None, recipient_id=user.id
        )
        self.dm_by_user[user.id] = channel.id
        return channel

    def create_private_channel(
        self, *users: FakeUser, name: str | None = None, group: bool | None = None
    ) -> FakeChannel:
        """A DM between two people (``group`` false) or a group DM (3+ people, a ``name``
        or ``group=True``; owned by the first user), without the bot: the bot gets no gateway
        events from it and channel routes answer 403 Missing Access; only a user-installed
        app's interactions reach it (interaction ``context`` 2, PRIVATE_CHANNEL)."""
        if len(users) < 2 or self.bot_user in users:
            raise AssertionError("a private channel is between two or more people, not the bot")
        is_group = group if group is not None else (len(users) > 2 or name is not None)
        if not is_group and len(users) != 2:
            raise AssertionError("a DM is between exactly two people")
        return self._new_channel(
            type=ChannelType.GROUP_DM if is_group else ChannelType.DM,
            name=(name or ", ".join(u.username for u in users)) if is_group else "",
            guild_id=None,
            recipient_ids=tuple(u.id for u in users),
            owner_id=users[0].id if is_group else None,
        )

    def install_for_user(self, user: FakeUser | FakeMember) -> None:
        """``user`` adds the app to their account (User Install, ``applications.commands``
        scope): commands synced with integration type 1 become available to them wherever the
        command's ``contexts`` allow, with ``authorizing_integration_owners["1"]`` = their id."""
        actor = user.user if isinstance(user, FakeMember) else user
        if 1 not in self.installation_contexts:
            raise AssertionError(
                "User Install is not enabled for the app (set_installation_contexts)"
            )
        self.user_installs.add(actor.id)

    def set_installation_contexts(
        self, *, guild: bool | None = None, user: bool | None = None
    ) -> None:
        """Tick Guild Install / User Install on the portal's Installation page: shown in the
        application's ``integration_types_config`` (discord.py: ``AppInfo.guild_integration_config``
        / ``user_integration_config``); ``install_for_user`` needs User Install."""
        for kind, enabled in ((0, guild), (1, user)):
            if enabled is True:
                self.installation_contexts.add(kind)
            elif enabled is False:
                self.installation_contexts.discard(kind)

    def uninstall_for_user(self, user: FakeUser | FakeMember) -> None:
        """``user`` removes the app from their account (see ``install_for_user``)."""
        actor = user.user if isinstance(user, FakeMember) else user
        self.user_installs.discard(actor.id)

    def expire_interaction(self, interaction: FakeInteraction) -> None:
        """Age ``interaction`` past its token's 15 minutes (``interaction_token_ttl``) without
        moving the fake's clock: its webhook routes (original response, follow-ups) answer 401
        50027 Invalid Webhook Token, as Discord does. ``advance_time`` ages everything."""
        interaction.state.created_at = self.now() - self.interaction_token_ttl - 1

    async def create_thread(
        self,
        owner: FakeUser,
        channel: FakeChannel,
        name: str,
        *,
        private: bool = False,
        from_message: FakeMessage | None = None,
        members: Iterable[FakeUser] = (),
    ) -> FakeChannel:
        """A thread created by a user (THREAD_CREATE goes to the bot if it can see it)."""
        perms = self.permissions_for(owner.id, channel)
        needed = Perm.CREATE_PRIVATE_THREADS if private else Perm.CREATE_PUBLIC_THREADS
        if not perms & needed:
            raise AssertionError(f"{owner!r} may not create threads in {channel!r}")
        thread = self.make_thread(
            channel,
            name=name,
            owner=owner,
            type_=ChannelType.PRIVATE_THREAD if private else ChannelType.PUBLIC_THREAD,
            from_message=from_message,
            auto_archive_duration=1440,
            invitable=True,
            by_bot=False,
        )
        for user in members:
            await self.add_thread_member(thread, user)
        return thread

    async def add_thread_member(self, thread: FakeChannel, user: FakeUser) -> None:
        thread.member_ids.setdefault(user.id, self.now())
        self.record(ThreadMemberAdded(thread_id=thread.id, user_id=user.id, by_bot=False))
        if user.id == self.bot_user.id:
            self._dispatch_thread("THREAD_CREATE", thread)

    async def archive_thread(self, thread: FakeChannel, *, locked: bool = False) -> None:
        thread.archived = True
        thread.locked = locked
        thread.archive_timestamp = self.now()
        self.record(ThreadUpdated(thread_id=thread.id, archived=True, locked=locked, by_bot=False))
        self._dispatch_thread("THREAD_UPDATE", thread)

    # ================================================================ users acting

    async def send_message(
        self,
        author: FakeUser | FakeMember | FakeWebhook,
        channel: FakeChannel,
        content: str = "",
        *,
        files: Sequence[UserFile] = (),
        embeds: Sequence[Mapping[str, Any]] = (),
        reply_to: FakeMessage | None = None,
        ping_reply: bool = True,
        mentions: Sequence[FakeUser | FakeMember] | None = None,
        mention_roles: Sequence[FakeRole] | None = None,
        mention_everyone: bool | None = None,
        tts: bool = False,
    ) -> FakeMessage:
        """``author`` posts a message in ``channel`` (a text channel, thread or DM).

        Mentions are parsed from ``content`` like Discord does (``<@id>``, ``<@&id>``,
        ``@everyone``/``@here``, subject to the author's permissions); pass ``mentions`` /
        ``mention_roles`` / ``mention_everyone`` to set them exactly instead. A reply
        (``reply_to``) pings the replied-to author unless ``ping_reply=False``.
        """
        webhook = author if isinstance(author, FakeWebhook) else None
        user = author.user if isinstance(author, FakeMember | FakeWebhook) else author
        if webhook is None and not self.can_send(user.id, channel):
            raise AssertionError(f"{user!r} cannot send messages in {channel!r}")
        if webhook is not None and webhook.channel_id != self.parent_of(channel).id:
            raise AssertionError(f"webhook {webhook.name!r} does not belong to {channel!r}")
        if reply_to is not None and reply_to.channel_id != channel.id:
            raise AssertionError("a reply must be in the replied-to message's channel")
        users, roles, everyone = self._parse_mentions(
            user.id, channel, content, allowed=None, reply_to=reply_to, ping_reply=ping_reply
        )
        if mentions is not None:
            users = [m.id for m in mentions]
        if mention_roles is not None:
            roles = [r.id for r in mention_roles]
        if mention_everyone is not None:
            everyone = mention_everyone
        attachments = tuple(self.upload_attachment(f, channel.id) for f in files)
        reference = None
        if reply_to is not None:
            reference = {
                "type": 0,
                "message_id": reply_to.id,
                "channel_id": channel.id,
                "guild_id": channel.guild_id,
            }
        message = self.new_message(
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=user,
            content=content,
            type=19 if reply_to is not None else 0,
            attachments=attachments,
            embeds=tuple(dict(e) for e in embeds),
            tts=tts,
            mention_user_ids=tuple(dict.fromkeys(users)),
            mention_role_ids=tuple(dict.fromkeys(roles)),
            mention_everyone=everyone,
            message_reference=reference,
            webhook_id=webhook.id if webhook else None,
        )
        self._unarchive_on_message(channel, by_bot=False)
        self.store_message(message)
        self.record(MessageCreated(message=message, via="user"))
        self.dispatch_message("MESSAGE_CREATE", message)
        return message

    async def forward(
        self,
        message: FakeMessage,
        to_channel: FakeChannel,
        by_user: FakeUser | FakeMember,
        *,
        comment: str | None = None,
    ) -> FakeMessage:
        """``by_user`` forwards ``message`` to ``to_channel`` (Forward in the Discord client).

        Discord creates a new message by ``by_user`` with no content of its own, flag
        HAS_SNAPSHOT, ``message_reference`` ``{type: 1 (FORWARD), message_id, channel_id,
        guild_id}`` of the original and ``message_snapshots`` ``[{"message": {type, content,
        embeds, attachments, timestamp, edited_timestamp, flags, mentions, mention_roles}}]``:
        the original as it is now (later edits do not change the snapshot). The snapshot's
        attachments are the original files, their URLs signed afresh on every read, over the
        gateway (MESSAGE_CREATE, if the bot can see ``to_channel``) and REST alike. A forward
        pings no one. ``comment`` is sent afterwards as a message of its own, as the client
        does; the forward is returned."""
        user = by_user.user if isinstance(by_user, FakeMember) else by_user
        original = self.find_message(message.id)
        if original is None or original.ephemeral:
            raise AssertionError(f"{message!r} cannot be forwarded (deleted or ephemeral)")
        source = self.channels[original.channel_id]
        if not self.permissions_for(user.id, source) & Perm.VIEW_CHANNEL:
            raise AssertionError(f"{user!r} cannot see {source!r}")
        if not self.can_send(user.id, to_channel):
            raise AssertionError(f"{user!r} cannot send messages in {to_channel!r}")
        snapshot = original.snapshots[0] if original.snapshots else original
        forward = self.new_message(
            channel_id=to_channel.id,
            guild_id=to_channel.guild_id,
            author=user,
            content="",
            type=0,
            flags=int(MessageFlag.HAS_SNAPSHOT),
            message_reference={
                "type": 1,
                "message_id": original.id,
                "channel_id": original.channel_id,
                "guild_id": original.guild_id,
            },
            snapshots=(snapshot,),
        )
        self._unarchive_on_message(to_channel, by_bot=False)
        self.store_message(forward)
        self.record(MessageCreated(message=forward, via="user"))
        self.dispatch_message("MESSAGE_CREATE", forward)
        if comment:
            await self.send_message(user, to_channel, comment)
        return forward

    async def edit_message(
        self,
        message: FakeMessage,
        content: str | None = None,
        *,
        embeds: Sequence[Mapping[str, Any]] | None = None,
    ) -> FakeMessage:
        """A user edits their message (MESSAGE_UPDATE)."""
        current = self.find_message(message.id)
        if current is None:
            raise AssertionError(f"{message!r} no longer exists")
        channel = self.channels[current.channel_id]
        users, roles, everyone = self._parse_mentions(
            current.author.id,
            channel,
            current.content if content is None else content,
            allowed=None,
            reply_to=None,
            ping_reply=False,
        )
        updated = dataclasses.replace(
            current,
            content=current.content if content is None else content,
            embeds=current.embeds if embeds is None else tuple(dict(e) for e in embeds),
            edited_timestamp=self.now(),
            mention_user_ids=tuple(dict.fromkeys([*current.mention_user_ids, *users])),
            mention_role_ids=tuple(dict.fromkeys(roles)),
            mention_everyone=everyone,
        )
        self.replace_message(updated)
        self.record(MessageEdited(before=current, after=updated, via="user"))
        self.dispatch_message("MESSAGE_UPDATE", updated)
        return updated

    async def unfurl(
        self, message: FakeMessage, embeds: Sequence[Mapping[str, Any]]
    ) -> FakeMessage:
        """Discord unfurls the links of ``message`` (see unfurl.py): the embeds are added
        in a MESSAGE_UPDATE, without an edit (``edited_timestamp`` stays)."""
        current = self.find_message(message.id)
        if current is None:
            raise AssertionError(f"{message!r} no longer exists")
        updated = dataclasses.replace(current, embeds=tuple(dict(e) for e in embeds))
        self.replace_message(updated)
        self.dispatch_message("MESSAGE_UPDATE", updated)
        return updated

    async def delete_message(self, message: FakeMessage) -> None:
        """A user (or a moderator) deletes a message (MESSAGE_DELETE)."""
        current = self.find_message(message.id)
        if current is None:
            raise AssertionError(f"{message!r} no longer exists")
        self._delete(current, via="user")

    async def bulk_delete_messages(self, messages: Sequence[FakeMessage]) -> None:
        """A moderator deletes 2 to 100 messages of one server channel at once (Discord's
        bulk delete, also what moderation bots use): one MESSAGE_DELETE_BULK, no
        MESSAGE_DELETE per message."""
        current = [self.find_message(m.id) for m in messages]
        if any(m is None for m in current):
            raise AssertionError("a message to bulk-delete no longer exists")
        found = [m for m in current if m is not None]
        channels = {m.channel_id for m in found}
        if not 2 <= len(found) <= 100 or len(channels) != 1:
            raise AssertionError("a bulk delete takes 2 to 100 messages of one channel")
        channel = self.channels[channels.pop()]
        if channel.is_dm:
            raise AssertionError("Discord has no bulk delete in DMs")
        for message in found:
            self.remove_message(message)
            self.record(MessageDeleted(message=message, via="user"))
        if not self.bot_can_view(channel):
            return
        payload: dict[str, Any] = {
            "ids": [str(m.id) for m in found],
            "channel_id": str(channel.id),
            "guild_id": str(channel.guild_id),
        }
        self.gateway.dispatch(
            "MESSAGE_DELETE_BULK",
            lambda s: payload,
            guild_id=channel.guild_id,
            intent=Intent.GUILD_MESSAGES,
        )

    async def add_reaction(self, user: FakeUser, message: FakeMessage, emoji: str) -> None:
        users = self.reactions.setdefault(message.id, {}).setdefault(emoji, [])
        if user.id not in users:
            users.append(user.id)
        self.record(
            ReactionAdded(
                channel_id=message.channel_id,
                message_id=message.id,
                emoji=emoji,
                user_id=user.id,
                by_bot=False,
            )
        )
        self.dispatch_reaction("MESSAGE_REACTION_ADD", message, emoji, user.id)

    # ================================================================ interactions

    async def invoke_command(
        self,
        user: FakeUser | FakeMember,
        channel: FakeChannel,
        command: str,
        options: Mapping[str, Any] | None = None,
        *,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """``user`` runs slash command ``command`` (``"name"``, ``"name sub"`` or
        ``"name group sub"``) in ``channel``, as the Discord client would: only commands the
        bot has synced (guild ones first, then global) and that the user may see; options are
        checked and typed against the synced definition. Option values: ``str``, ``int``,
        ``float``, ``bool``, ``FakeUser``/``FakeMember``, ``FakeRole``, ``FakeChannel``, or
        ``UserFile`` for attachment options (uploaded to the CDN, listed in ``resolved``).
        """
        actor = user.user if isinstance(user, FakeMember) else user
        path = command.split()
        registered = self._find_command(path[0], channel)
        owners = self._authorize(registered, actor, channel, f"/{path[0]}")
        options_payload, resolved = build_command_options(
            self, registered.payload, path, dict(options or {}), actor, channel
        )
        data: dict[str, Any] = {
            "id": str(registered.id),
            "name": registered.name,
            "type": 1,
        }
        if options_payload:
            data["options"] = options_payload
        if resolved:
            data["resolved"] = resolved
        return self._command_interaction(actor, channel, registered, data, command, locale, owners)

    async def invoke_message_command(
        self,
        user: FakeUser | FakeMember,
        message: FakeMessage,
        command: str,
        *,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """``user`` right-clicks ``message`` → Apps → ``command`` (a message context menu
        command, type 3): an APPLICATION_COMMAND interaction with ``data.type`` 3,
        ``target_id`` and the message in ``resolved.messages`` (with its content, whatever
        the intents: Discord always sends the target). Checked like ``invoke_command``: only
        a synced command, in a context and installation it was synced for; the message may be
        in a guild without the bot or a private channel (``create_private_channel``)."""
        actor = user.user if isinstance(user, FakeMember) else user
        current = self.find_message(message.id)
        if current is None:
            raise AssertionError(f"{message!r} no longer exists")
        channel = self.channels[current.channel_id]
        registered = self._find_command(command, channel, kind=3)
        owners = self._authorize(registered, actor, channel, f"message command {command!r}")
        data: dict[str, Any] = {
            "id": str(registered.id),
            "name": registered.name,
            "type": 3,
            "target_id": str(current.id),
            "resolved": {"messages": {str(current.id): self.message_payload(current)}},
        }
        return self._command_interaction(
            actor, channel, registered, data, command, locale, owners, target_message_id=current.id
        )

    def _command_interaction(
        self,
        actor: FakeUser,
        channel: FakeChannel,
        registered: RegisteredCommand,
        data: dict[str, Any],
        name: str,
        locale: str,
        owners: dict[str, str],
        *,
        target_message_id: int | None = None,
    ) -> FakeInteraction:
        """An APPLICATION_COMMAND interaction (type 2) running ``registered``."""
        if registered.guild_id is not None:
            data["guild_id"] = str(registered.guild_id)
        return self._start_interaction(
            actor,
            channel,
            type_=2,
            data=data,
            name=name,
            locale=locale,
            owners=owners,
            command_type=registered.type,
            target_message_id=target_message_id,
        )

    async def autocomplete(
        self,
        user: FakeUser | FakeMember,
        channel: FakeChannel,
        command: str,
        options: Mapping[str, Any],
        *,
        focused: str,
    ) -> FakeInteraction:
        """``user`` is typing option ``focused`` of ``command`` (an APPLICATION_COMMAND_
        AUTOCOMPLETE interaction); the bot answers with callback type 8 (``data.choices``)."""
        actor = user.user if isinstance(user, FakeMember) else user
        path = command.split()
        registered = self._find_command(path[0], channel)
        owners = self._authorize(registered, actor, channel, f"/{path[0]}")
        options_payload, _ = build_command_options(
            self, registered.payload, path, dict(options), actor, channel, partial=True
        )
        leaf = options_payload
        while leaf and leaf[0].get("type") in (1, 2):
            leaf = leaf[0]["options"]
        for option in leaf:
            if option["name"] == focused:
                option["focused"] = True
                break
        else:
            raise AssertionError(f"option {focused!r} is not among the given options")
        data: dict[str, Any] = {"id": str(registered.id), "name": registered.name, "type": 1}
        data["options"] = options_payload
        if registered.guild_id is not None:
            data["guild_id"] = str(registered.guild_id)
        return self._start_interaction(
            actor, channel, type_=4, data=data, name=command, owners=owners
        )

    async def press_button(
        self, user: FakeUser | FakeMember, message: FakeMessage, custom_id: str
    ) -> FakeInteraction:
        """``user`` clicks the button ``custom_id`` on ``message`` (a bot message)."""
        component = self._find_component(message, custom_id)
        if component.get("type") != 2:
            raise AssertionError(f"component {custom_id!r} is not a button: {component!r}")
        return self._component_interaction(
            user, message, {"custom_id": custom_id, "component_type": 2}
        )

    async def choose(
        self,
        user: FakeUser | FakeMember,
        message: FakeMessage,
        custom_id: str,
        values: Sequence[str],
    ) -> FakeInteraction:
        """``user`` picks ``values`` in the string select ``custom_id`` on ``message``."""
        component = self._find_component(message, custom_id)
        if component.get("type") != 3:
            raise AssertionError(f"component {custom_id!r} is not a string select")
        allowed = {str(o.get("value")) for o in component.get("options", [])}
        if not set(values) <= allowed:
            raise AssertionError(f"values {values!r} not among the options {sorted(allowed)}")
        return self._component_interaction(
            user, message, {"custom_id": custom_id, "component_type": 3, "values": list(values)}
        )

    async def submit_modal(
        self,
        user: FakeUser | FakeMember,
        interaction: FakeInteraction,
        values: Mapping[str, str],
    ) -> FakeInteraction:
        """``user`` fills in and submits the modal the bot opened on ``interaction`` (a
        MODAL_SUBMIT interaction, type 5, with each text input's ``value``; inputs left out
        are submitted empty). Like the Discord client, it refuses to submit a required input
        (text inputs are required unless ``required: false``) left empty, or a value outside
        the input's ``min_length``/``max_length``. Works for modals opened from commands,
        context menus and buttons, also where only a user install authorizes them."""
        modal = interaction.modal
        if modal is None:
            raise AssertionError(f"the bot opened no modal on interaction {interaction.id}")
        actor = user.user if isinstance(user, FakeMember) else user
        for field in iter_components(modal.get("components", [])):
            if field.get("type") != 4:
                continue
            field_id = str(field["custom_id"])
            value = values.get(field_id, "")
            if not value and field.get("required", True):
                raise AssertionError(f"the modal's input {field_id!r} is required")
            if value and not (
                int(field.get("min_length") or 0)
                <= len(value)
                <= int(field.get("max_length") or 4000)
            ):
                raise AssertionError(
                    f"the modal's input {field_id!r} takes {field.get('min_length') or 0}.."
                    f"{field.get('max_length') or 4000} characters, got {len(value)}"
                )
        components: list[dict[str, Any]] = []
        for top in modal.get("components", []):
            if top.get("type") == 1:
                inner = [
                    {
                        "type": 4,
                        "custom_id": c["custom_id"],
                        "value": values.get(c["custom_id"], ""),
                    }
                    for c in top.get("components", [])
                    if c.get("type") == 4
                ]
                components.append({"type": 1, "components": inner})
            elif top.get("type") == 18 and top.get("component", {}).get("type") == 4:
                inner_id = top["component"]["custom_id"]
                components.append(
                    {
                        "type": 18,
                        "component": {
                            "type": 4,
                            "custom_id": inner_id,
                            "value": values.get(inner_id, ""),
                        },
                    }
                )
        unknown = set(values) - {
            c["custom_id"] for c in iter_components(modal.get("components", [])) if "custom_id" in c
        }
        if unknown:
            raise AssertionError(f"the modal has no inputs {sorted(unknown)}")
        channel = self.channels[interaction.channel_id]
        data = {"custom_id": modal["custom_id"], "components": components}
        source = self.find_message(interaction.state.source_message_id or 0)
        return self._start_interaction(
            actor,
            channel,
            type_=5,
            data=data,
            custom_id=str(modal["custom_id"]),
            message=source,
            triggering_id=interaction.id,
            owners=dict(interaction.state.owners),
        )

    # ================================================================ reading

    def messages_in(self, channel: FakeChannel | int) -> list[FakeMessage]:
        """The channel's (non-ephemeral) messages, oldest first."""
        return self.history(channel.id if isinstance(channel, FakeChannel) else channel)

    def bot_messages(self, channel: FakeChannel | int | None = None) -> list[FakeMessage]:
        """Messages the bot created (current state), oldest first, incl. ephemeral ones."""
        channel_id = channel.id if isinstance(channel, FakeChannel) else channel
        seen: dict[int, FakeMessage] = {}
        for event in self._events:
            if isinstance(event, MessageCreated) and event.by_bot:
                current = self.find_message(event.message.id)
                if current is not None and (channel_id is None or current.channel_id == channel_id):
                    seen[current.id] = current
        return list(seen.values())

    def threads(self, parent: FakeChannel | None = None) -> list[FakeChannel]:
        return [
            c
            for c in self.channels.values()
            if c.is_thread and (parent is None or c.parent_id == parent.id)
        ]

    def registered_commands(self, guild: FakeGuild | None = None) -> list[dict[str, Any]]:
        """The application commands as synced by the bot (global, or one guild's)."""
        guild_id = guild.id if guild else None
        return [c.payload for c in self.commands.values() if c.guild_id == guild_id]

    # ================================================================ internals: dispatch

    def guild_create_payload(self, guild: FakeGuild, session: GatewaySession) -> dict[str, Any]:
        # Without GUILD_PRESENCES Discord only sends the bot's own member (and members in
        # voice); discord.py then chunks the rest with REQUEST_GUILD_MEMBERS if it may.
        if session.has(Intent.GUILD_PRESENCES):
            members = list(guild.members.values())
        else:
            members = [m for m in guild.members.values() if m.id == self.bot_user.id]
        return dict(self.guild_payload(guild, members=members))

    def dispatch_message(self, event: str, message: FakeMessage) -> None:
        channel = self.channels.get(message.channel_id)
        if channel is None or message.ephemeral or not self.bot_can_view(channel):
            return
        intent = Intent.DIRECT_MESSAGES if channel.is_dm else Intent.GUILD_MESSAGES
        self.gateway.dispatch(
            event,
            lambda s: self.message_payload(message, content_visible=s.has(Intent.MESSAGE_CONTENT)),
            guild_id=message.guild_id,
            intent=intent,
        )

    def _dispatch_delete(self, message: FakeMessage) -> None:
        channel = self.channels.get(message.channel_id)
        if channel is None or message.ephemeral:
            return
        if not self.bot_can_view(channel):
            return
        payload: dict[str, Any] = {"id": str(message.id), "channel_id": str(message.channel_id)}
        if message.guild_id is not None:
            payload["guild_id"] = str(message.guild_id)
        self.gateway.dispatch(
            "MESSAGE_DELETE",
            lambda s: payload,
            guild_id=message.guild_id,
            intent=Intent.DIRECT_MESSAGES if channel.is_dm else Intent.GUILD_MESSAGES,
        )

    def _dispatch_thread(
        self, event: str, thread: FakeChannel, *, newly_created: bool = False
    ) -> None:
        def build(session: GatewaySession) -> Any:
            if not self.bot_can_view(thread):
                return None
            payload: dict[str, Any] = dict(self.thread_payload(thread))
            if newly_created:
                payload["newly_created"] = True
            return payload

        self.gateway.dispatch(event, build, guild_id=thread.guild_id, intent=Intent.GUILDS)

    def _dispatch_channel(self, event: str, channel: FakeChannel) -> None:
        self.gateway.dispatch(
            event,
            lambda s: self.channel_payload(channel),
            guild_id=channel.guild_id,
            intent=Intent.GUILDS,
        )

    def _dispatch_role(self, event: str, role: FakeRole) -> None:
        self.gateway.dispatch(
            event,
            lambda s: {"guild_id": str(role.guild_id), "role": self.role_payload(role)},
            guild_id=role.guild_id,
            intent=Intent.GUILDS,
        )

    def dispatch_reaction(self, event: str, message: FakeMessage, emoji: str, user_id: int) -> None:
        channel = self.channels.get(message.channel_id)
        if channel is None or not self.bot_can_view(channel):
            return
        name, _, emoji_id = emoji.partition(":")
        payload: dict[str, Any] = {
            "user_id": str(user_id),
            "channel_id": str(message.channel_id),
            "message_id": str(message.id),
            "emoji": {"id": emoji_id or None, "name": name},
            "burst": False,
            "type": 0,
        }
        if message.guild_id is not None:
            payload["guild_id"] = str(message.guild_id)
        if event == "MESSAGE_REACTION_ADD":
            payload["message_author_id"] = str(message.author.id)
            guild = self.guilds.get(message.guild_id or 0)
            if guild is not None and user_id in guild.members:
                payload["member"] = self.member_with_user_payload(guild.members[user_id])
        self.gateway.dispatch(
            event,
            lambda s: payload,
            guild_id=message.guild_id,
            intent=Intent.DIRECT_MESSAGE_REACTIONS
            if channel.is_dm
            else Intent.GUILD_MESSAGE_REACTIONS,
        )

    # ================================================================ internals: messages

    def upload_attachment(
        self, file: UserFile, owner_id: int, *, ephemeral: bool = False
    ) -> FakeAttachment:
        content_type = (
            guess_content_type(file.filename) if file.content_type is AUTO else file.content_type
        )
        size = (
            (image_size(file.data) if isinstance(file.data, bytes) else None)
            if file.size is AUTO
            else file.size
        )
        attachment = FakeAttachment(
            id=self.snowflake(),
            filename=file.filename,
            data=file.data,
            content_type=content_type,
            owner_id=owner_id,
            width=size[0] if size else None,
            height=size[1] if size else None,
            description=file.description,
            ephemeral=ephemeral,
        )
        self.attachments[attachment.id] = attachment
        return attachment

    def _uploaded_attachment(
        self, upload: UploadedFile, channel_id: int, description: str | None, filename: str | None
    ) -> FakeAttachment:
        name = filename or upload.filename
        return self.upload_attachment(
            UserFile(filename=name, data=upload.data, description=description), channel_id
        )

    def _parse_mentions(
        self,
        author_id: int,
        channel: FakeChannel,
        content: str,
        *,
        allowed: Mapping[str, Any] | None,
        reply_to: FakeMessage | None,
        ping_reply: bool,
    ) -> tuple[list[int], list[int], bool]:
        """Who a message pings: parse ``content`` like Discord, then apply ``allowed``
        (``allowed_mentions``; ``None`` = Discord's default of parsing everything)."""
        guild = self.guild_of(channel)
        perms = self.permissions_for(author_id, channel)
        can_everyone = bool(perms & Perm.MENTION_EVERYONE)
        if allowed is None:
            parse = {"users", "roles", "everyone"}
            only_users: set[int] = set()
            only_roles: set[int] = set()
            replied = ping_reply
        else:
            parse = set(allowed.get("parse") or [])
            only_users = {int(u) for u in allowed.get("users") or []}
            only_roles = {int(r) for r in allowed.get("roles") or []}
            replied = bool(allowed.get("replied_user", False))
        users: list[int] = []
        for match in _USER_MENTION.finditer(content):
            user_id = int(match.group(1))
            if user_id in self.users and ("users" in parse or user_id in only_users):
                users.append(user_id)
        roles: list[int] = []
        if guild is not None:
            for match in _ROLE_MENTION.finditer(content):
                role = guild.roles.get(int(match.group(1)))
                if role is None or not ("roles" in parse or role.id in only_roles):
                    continue
                if role.mentionable or can_everyone:
                    roles.append(role.id)
        everyone = bool(_EVERYONE.search(content)) and "everyone" in parse and can_everyone
        if reply_to is not None and replied and reply_to.author.id != author_id:
            users.append(reply_to.author.id)
        return list(dict.fromkeys(users)), list(dict.fromkeys(roles)), everyone

    def _unarchive_on_message(self, channel: FakeChannel, *, by_bot: bool) -> None:
        if channel.is_thread and channel.archived:
            if channel.locked:
                raise ApiError(400, 50083, "Thread is archived")
            channel.archived = False
            self.record(
                ThreadUpdated(thread_id=channel.id, archived=False, locked=False, by_bot=by_bot)
            )
            self._dispatch_thread("THREAD_UPDATE", channel)

    def post_bot_message(
        self,
        channel: FakeChannel,
        body: Mapping[str, Any],
        files: Sequence[UploadedFile],
        *,
        via: str,
        interaction: InteractionState | None = None,
        flags_allowed: int = int(
            MessageFlag.SUPPRESS_EMBEDS
            | MessageFlag.SUPPRESS_NOTIFICATIONS
            | MessageFlag.IS_VOICE_MESSAGE
            | MessageFlag.IS_COMPONENTS_V2
        ),
        extra_flags: int = 0,
        check_permissions: bool = True,
    ) -> FakeMessage:
        """Create a message from a bot request body (REST, interaction response, followup):
        Discord's validation, permission checks, pings, storage, event, dispatch."""
        if check_permissions:
            self._check_send(channel, body, files)
        check_message_body(body, file_count=len(files))
        for upload in files:
            if len(upload.data) > ATTACHMENT_SIZE_LIMIT:
                raise ApiError(413, 40005, "Request entity too large")
        flags = int(body.get("flags") or 0)
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            for existing in reversed(self.history(channel.id)[-50:]):
                if existing.nonce == nonce and existing.author.id == self.bot_user.id:
                    return existing
        attachments = self._attachments_for_new(channel.id, body, files)
        content = body.get("content") or ""
        embeds = tuple(dict(e) for e in body.get("embeds") or [])
        components = tuple(dict(c) for c in body.get("components") or [])
        if not (
            content
            or embeds
            or attachments
            or components
            or body.get("sticker_ids")
            or body.get("poll")
        ):
            raise ApiError.empty_message()
        reply_to, reference = self._resolve_reference(channel, body.get("message_reference"))
        allowed = body.get("allowed_mentions")
        users, roles, everyone = self._parse_mentions(
            self.bot_user.id,
            channel,
            content,
            allowed=allowed,
            reply_to=reply_to,
            ping_reply=True,
        )
        if interaction is not None:
            message_type = 20 if interaction.type == 2 else 0
            ref: InteractionRef | None = interaction.ref(self.interactions)
        else:
            message_type = 19 if reply_to is not None else 0
            ref = None
        self._unarchive_on_message(channel, by_bot=True)
        message = self.new_message(
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=self.bot_user,
            content=content,
            type=message_type,
            attachments=attachments,
            embeds=embeds,
            components=components,
            flags=(flags & flags_allowed) | extra_flags,
            tts=bool(body.get("tts")),
            mention_user_ids=tuple(users),
            mention_role_ids=tuple(roles),
            mention_everyone=everyone,
            message_reference=reference,
            sent_message_reference=body.get("message_reference"),
            allowed_mentions=allowed,
            webhook_id=self.application_id if interaction is not None else None,
            application_id=self.application_id if interaction is not None else None,
            interaction=ref,
            nonce=nonce,
            request_body=dict(body),
        )
        if message.ephemeral:
            self.ephemeral_messages[message.id] = message
        else:
            self.store_message(message)
        self.record(
            MessageCreated(
                message=message,
                via=via,
                interaction_id=interaction.id if interaction else None,
            )
        )
        self.dispatch_message("MESSAGE_CREATE", message)
        return message

    def _check_send(
        self, channel: FakeChannel, body: Mapping[str, Any], files: Sequence[UploadedFile]
    ) -> None:
        if channel.is_private_channel:
            raise ApiError.missing_access()
        if channel.is_dm:
            recipient = self.users[channel.recipient_id or 0]
            if not recipient.dms_open:
                raise ApiError(403, 50007, "Cannot send messages to this user")
            return
        perms = self.permissions_for(self.bot_user.id, channel)
        if not perms & Perm.VIEW_CHANNEL:
            raise ApiError.missing_access()
        needed = Perm.SEND_MESSAGES_IN_THREADS if channel.is_thread else Perm.SEND_MESSAGES
        if not perms & needed:
            raise ApiError.missing_permissions()
        if files and not perms & Perm.ATTACH_FILES:
            raise ApiError.missing_permissions()
        if body.get("message_reference") and not perms & Perm.READ_MESSAGE_HISTORY:
            raise ApiError.missing_permissions()

    def _attachments_for_new(
        self, channel_id: int, body: Mapping[str, Any], files: Sequence[UploadedFile]
    ) -> tuple[FakeAttachment, ...]:
        described = {
            str(a.get("id")): a for a in body.get("attachments") or [] if isinstance(a, dict)
        }
        result: list[FakeAttachment] = []
        for upload in files:
            index = upload.field_name.removeprefix("files[").removesuffix("]")
            meta = described.get(index, {})
            result.append(
                self._uploaded_attachment(
                    upload, channel_id, meta.get("description"), meta.get("filename")
                )
            )
        return tuple(result)

    def _resolve_reference(
        self, channel: FakeChannel, reference: Any
    ) -> tuple[FakeMessage | None, dict[str, Any] | None]:
        if not reference:
            return None, None
        if not isinstance(reference, dict):
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "message_reference": {
                        "_errors": [{"code": "DICT_TYPE_CONVERT", "message": "Must be an object."}]
                    }
                },
            )
        target_channel = int(reference.get("channel_id") or channel.id)
        target_id = reference.get("message_id")
        target = self.messages.get(int(target_id)) if target_id is not None else None
        if target is None or target.channel_id != target_channel or target_channel != channel.id:
            if reference.get("fail_if_not_exists", True):
                raise ApiError(
                    400,
                    50035,
                    "Invalid Form Body",
                    {
                        "message_reference": {
                            "_errors": [
                                {"code": "REPLIES_UNKNOWN_MESSAGE", "message": "Unknown message"}
                            ]
                        }
                    },
                )
            return None, None
        return target, {
            "type": 0,
            "message_id": target.id,
            "channel_id": target.channel_id,
            "guild_id": target.guild_id,
        }

    def edit_bot_message(
        self,
        message: FakeMessage,
        body: Mapping[str, Any],
        files: Sequence[UploadedFile],
        *,
        via: str,
        interaction: InteractionState | None = None,
    ) -> FakeMessage:
        """Apply a PATCH body (content, embeds, components, attachments kept/added, flags)."""
        check_message_body(body, file_count=len(files))
        changes: dict[str, Any] = {}
        if "content" in body:
            changes["content"] = body["content"] or ""
        if "embeds" in body:
            changes["embeds"] = tuple(dict(e) for e in body["embeds"] or [])
        if "components" in body:
            changes["components"] = tuple(dict(c) for c in body["components"] or [])
        if "allowed_mentions" in body:
            changes["allowed_mentions"] = body["allowed_mentions"]
        new_files = self._attachments_for_new(message.channel_id, body, files)
        if "attachments" in body:
            keep_ids = {
                str(a.get("id"))
                for a in body["attachments"] or []
                if isinstance(a, dict) and int(a.get("id") or 0) > 10_000
            }
            kept = tuple(a for a in message.attachments if str(a.id) in keep_ids)
            changes["attachments"] = kept + new_files
        elif new_files:
            changes["attachments"] = message.attachments + new_files
        flags = message.flags & ~MessageFlag.LOADING
        if "flags" in body and body["flags"] is not None:
            suppress = int(body["flags"]) & MessageFlag.SUPPRESS_EMBEDS
            flags = (flags & ~MessageFlag.SUPPRESS_EMBEDS) | suppress
        changes["flags"] = int(flags)
        updated = dataclasses.replace(
            message, edited_timestamp=self.now(), request_body=dict(body), **changes
        )
        if "content" in changes:
            channel = self.channels[message.channel_id]
            users, roles, everyone = self._parse_mentions(
                self.bot_user.id,
                channel,
                updated.content,
                allowed=updated.allowed_mentions,
                reply_to=None,
                ping_reply=False,
            )
            updated = dataclasses.replace(
                updated,
                mention_user_ids=tuple(users),
                mention_role_ids=tuple(roles),
                mention_everyone=everyone,
            )
        if not (updated.content or updated.embeds or updated.attachments or updated.components):
            raise ApiError.empty_message()
        self.replace_message(updated)
        self.record(
            MessageEdited(
                before=message,
                after=updated,
                via=via,
                interaction_id=interaction.id if interaction else None,
            )
        )
        self.dispatch_message("MESSAGE_UPDATE", updated)
        return updated

    def _delete(self, message: FakeMessage, *, via: str) -> None:
        self.remove_message(message)
        self.record(MessageDeleted(message=message, via=via))
        self._dispatch_delete(message)

    def delete_by_bot(self, message: FakeMessage, *, via: str) -> None:
        """A deletion requested by the bot (REST or interaction webhook)."""
        self._delete(message, via=via)

    def make_thread(
        self,
        parent: FakeChannel,
        *,
        name: str,
        owner: FakeUser,
        type_: int,
        from_message: FakeMessage | None,
        auto_archive_duration: int,
        invitable: bool,
        by_bot: bool,
    ) -> FakeChannel:
        thread = self._new_channel(
            id=from_message.id if from_message is not None else None,
            type=type_,
            name=name,
            guild_id=parent.guild_id,
            parent_id=parent.id,
            owner_id=owner.id,
            auto_archive_duration=auto_archive_duration,
            invitable=invitable,
            starter_message_id=from_message.id if from_message is not None else None,
        )
        thread.member_ids[owner.id] = self.now()
        if from_message is not None:
            updated = dataclasses.replace(from_message, thread_id=thread.id)
            self.replace_message(updated)
        self.record(
            ThreadCreated(
                thread_id=thread.id,
                parent_id=parent.id,
                name=name,
                type=type_,
                owner_id=owner.id,
                from_message_id=from_message.id if from_message else None,
                by_bot=by_bot,
                invitable=invitable,
                auto_archive_duration=auto_archive_duration,
            )
        )
        self._dispatch_thread("THREAD_CREATE", thread, newly_created=True)
        if from_message is None and type_ == ChannelType.PUBLIC_THREAD:
            # Discord announces a public thread without a starter message in the parent.
            notice = self.new_message(
                channel_id=parent.id,
                guild_id=parent.guild_id,
                author=owner,
                content=name,
                type=18,
                message_reference={"type": 0, "channel_id": thread.id, "guild_id": parent.guild_id},
            )
            self.store_message(notice)
            self.record(MessageCreated(message=notice, via="system"))
            self.dispatch_message("MESSAGE_CREATE", notice)
        if by_bot:
            self.record(ThreadMemberAdded(thread_id=thread.id, user_id=owner.id, by_bot=True))
        return thread

    # ================================================================ internals: interactions

    def _find_command(self, name: str, channel: FakeChannel, kind: int = 1) -> RegisteredCommand:
        candidates = [c for c in self.commands.values() if c.name == name and c.type == kind]
        for command in candidates:
            if command.guild_id is not None and command.guild_id == channel.guild_id:
                return command
        for command in candidates:
            if command.guild_id is None:
                return command
        synced = sorted({c.name for c in self.commands.values() if c.type == kind})
        what = {1: "slash command /", 2: "user command ", 3: "message command "}[kind]
        raise AssertionError(
            f"no {what}{name} is registered for {channel!r} (registered: {synced}); "
            "the bot must sync its command tree first"
        )

    def _authorize(
        self, registered: RegisteredCommand, user: FakeUser, channel: FakeChannel, label: str
    ) -> dict[str, str]:
        """The ``authorizing_integration_owners`` for ``user`` running ``registered`` in
        ``channel``, or ``AssertionError`` where the Discord client would not offer it: a
        context the command was not synced for, no installation of a synced integration
        type (guild: the bot in this guild; user: ``install_for_user``), or
        ``default_member_permissions`` the member lacks (guild installs)."""
        self._check_present(user, channel)
        payload = registered.payload
        context = self.interaction_context(channel)
        contexts = list(payload.get("contexts") or [0])
        if context not in contexts:
            allowed = ", ".join(CONTEXT_NAMES[c] for c in contexts)
            raise AssertionError(
                f"{label} is not available in {CONTEXT_NAMES[context]} (synced for: {allowed})"
            )
        types = list(payload.get("integration_types") or [0])
        owners = self.authorizing_owners(types, user, channel)
        if not owners:
            where = f"{channel!r}" if channel.guild_id is None else f"guild {channel.guild_id}"
            raise AssertionError(
                f"{label} is not available to {user!r} in {where}: synced for integration "
                f"types {types}, and no such installation authorizes it here (guild install: "
                "the bot is a member; user install: fake.install_for_user(user))"
            )
        guild = self.guild_of(channel)
        if guild is not None and "0" in owners:
            required = payload.get("default_member_permissions")
            perms = self.base_permissions(guild, user.id)
            if required is not None and (int(required) & perms) != int(required):
                raise AssertionError(
                    f"{label} is hidden from {user!r} (default_member_permissions)"
                )
        return owners

    def _check_present(self, user: FakeUser, channel: FakeChannel) -> None:
        """``user`` is where they act: a member of the guild who can see the channel, or in
        the DM / group DM."""
        guild = self.guild_of(channel)
        if guild is not None and user.id not in guild.members:
            raise AssertionError(f"{user!r} is not a member of {guild!r}")
        if not self.permissions_for(user.id, channel) & Perm.VIEW_CHANNEL:
            raise AssertionError(f"{user!r} cannot see {channel!r}")

    def _inherited_owners(self, message: FakeMessage) -> dict[str, str]:
        """Who authorizes a component on ``message``: the installation behind the
        interaction that created it, else the guild (or bot DM) install."""
        if message.interaction is not None:
            origin = self.interactions.get(message.interaction.id)
            if origin is not None:
                return dict(origin.owners)
            if message.interaction.owners:
                return dict(message.interaction.owners)
        return self._integration_owners(message.guild_id)

    def _find_component(self, message: FakeMessage, custom_id: str) -> dict[str, Any]:
        current = self.find_message(message.id)
        if current is None:
            raise AssertionError(f"{message!r} no longer exists")
        for component in iter_components(current.components):
            if component.get("custom_id") == custom_id:
                if component.get("disabled"):
                    raise AssertionError(f"component {custom_id!r} is disabled")
                return component
        raise AssertionError(
            f"{current!r} has no component {custom_id!r} (has {current.custom_ids()})"
        )

    def _component_interaction(
        self, user: FakeUser | FakeMember, message: FakeMessage, data: dict[str, Any]
    ) -> FakeInteraction:
        actor = user.user if isinstance(user, FakeMember) else user
        current = self.find_message(message.id)
        assert current is not None
        channel = self.channels[current.channel_id]
        return self._start_interaction(
            actor,
            channel,
            type_=3,
            data=data,
            custom_id=str(data["custom_id"]),
            message=current,
            owners=self._inherited_owners(current),
        )

    def _start_interaction(
        self,
        user: FakeUser,
        channel: FakeChannel,
        *,
        type_: int,
        data: dict[str, Any],
        owners: dict[str, str],
        name: str | None = None,
        custom_id: str | None = None,
        message: FakeMessage | None = None,
        locale: str = "en-US",
        triggering_id: int | None = None,
        command_type: int = 1,
        target_message_id: int | None = None,
    ) -> FakeInteraction:
        self._check_present(user, channel)
        guild = self.guild_of(channel)
        context = self.interaction_context(channel)
        # An app the guild did not add is an "external app" there: without the member's
        # USE_EXTERNAL_APPS Discord keeps its answers ephemeral.
        forced_ephemeral = (
            guild is not None
            and self.bot_user.id not in guild.members
            and not self.permissions_for(user.id, channel) & Perm.USE_EXTERNAL_APPS
        )
        state = InteractionState(
            id=self.snowflake(),
            token=f"aW50ZXJhY3Rpb24{secrets.token_urlsafe(96)}",
            type=type_,
            user=user,
            channel_id=channel.id,
            guild_id=channel.guild_id,
            created_at=self.now(),
            payload={},
            name=name,
            custom_id=custom_id,
            source_message_id=message.id if message is not None else None,
            triggering_id=triggering_id,
            command_type=command_type,
            target_message_id=target_message_id,
            owners=dict(owners),
            context=context,
            forced_ephemeral=forced_ephemeral,
        )
        payload: dict[str, Any] = {
            "id": str(state.id),
            "application_id": str(self.application_id),
            "type": type_,
            "data": data,
            "token": state.token,
            "version": 1,
            "channel_id": str(channel.id),
            "app_permissions": str(self.app_permissions_for(channel)),
            "locale": locale,
            "entitlements": [],
            "authorizing_integration_owners": dict(owners),
            "context": context,
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
        }
        if guild is not None:
            member = guild.members[user.id]
            payload["guild_id"] = str(guild.id)
            payload["guild"] = {
                "id": str(guild.id),
                "locale": guild.preferred_locale,
                "features": [],
            }
            payload["guild_locale"] = guild.preferred_locale
            payload["channel"] = self.channel_payload(channel)
            payload["member"] = {
                **self.member_payload(member),
                "user": self.user_payload(user),
                "permissions": str(self.permissions_for(user.id, channel)),
            }
        elif channel.is_private_channel:
            payload["channel"] = self.private_channel_payload(channel, viewer_id=user.id)
            payload["user"] = self.user_payload(user)
        else:
            payload["channel"] = {
                "id": str(channel.id),
                "type": 1,
                "name": "",
                "last_message_id": str(channel.last_message_id)
                if channel.last_message_id
                else None,
                "recipients": [
                    {
                        "id": str(user.id),
                        "username": user.username,
                        "discriminator": user.discriminator,
                        "avatar": None,
                        "global_name": user.global_name,
                    }
                ],
            }
            payload["user"] = self.user_payload(user)
        if message is not None:
            payload["message"] = self.message_payload(message)
        state.payload = payload
        self.interactions[state.id] = state
        self.record(
            InteractionCreated(
                interaction_id=state.id,
                type=type_,
                user_id=user.id,
                channel_id=channel.id,
                name=name,
                custom_id=custom_id,
            )
        )
        self.gateway.dispatch("INTERACTION_CREATE", lambda s: payload, guild_id=channel.guild_id)
        return FakeInteraction(self, state)
