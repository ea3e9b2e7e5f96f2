"""The fake REST API (``/api/v10``): the routes discord.py calls for a bot like seed-bot.

Every response body is JSON with ``Content-Type: application/json`` exactly (discord.py only
parses that), errors carry Discord's ``{"code", "message"[, "errors"]}`` body, every request is
recorded as an :class:`~.events.HttpRequest`, and unknown routes answer Discord's 404 while
being reported as a problem. Templates use discord.py's own ``Route`` paths, so
``fake.rate_limit("POST /channels/{channel_id}/messages")`` reads like discord.py's source.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import BodyPartReader, web

from .errors import ApiError, FormErrors
from .events import (
    CommandsSynced,
    HttpRequest,
    InteractionResponded,
    MessageCreated,
    ReactionAdded,
    ReactionRemoved,
    ThreadMemberAdded,
    TypingStarted,
    UploadedFile,
)
from .models import ChannelType, FakeChannel, FakeMessage, MessageFlag, Perm
from .schema import PayloadError, schema_type, validate
from .world import RegisteredCommand

if TYPE_CHECKING:
    from .server import FakeDiscord
    from .world import InteractionState

__all__ = ["Fault", "RestApi", "RestRequest"]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
_BAD_TYPE = "Interaction response type is invalid for this interaction."
_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")
#: Discord's limit on follow-ups of an interaction authorized only by a user install.
MAX_USER_INSTALL_FOLLOWUPS = 5


@dataclass
class Fault:
    """An injected failure for the next ``remaining`` requests to ``route``."""

    route: str
    status: int
    remaining: int
    retry_after: float = 0.0
    is_global: bool = False
    scope: str = "user"
    body: dict[str, Any] = field(default_factory=dict)
    where: Callable[[HttpRequest], bool] | None = None


@dataclass
class RestRequest:
    method: str
    path: str
    route: str
    params: dict[str, str]
    query: Mapping[str, str]
    body: Any
    files: list[UploadedFile]

    def param_id(self, name: str) -> int:
        try:
            return int(self.params[name])
        except ValueError:
            raise ApiError(404, 0, "404: Not Found") from None


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    #: discord.py TypedDict the body must match (validated when payload validation is on).
    schema: str | None = None


Handler = Callable[[RestRequest], Awaitable[Reply]]


@dataclass
class _Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"


def _json_response(
    status: int, body: Any, headers: Mapping[str, str] | None = None
) -> web.Response:
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(status=status, body=json.dumps(body).encode(), headers=all_headers)


class RestApi:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.faults: list[Fault] = []
        self.routes: list[_Route] = []
        self._register_all()

    # ================================================================ plumbing

    def route(self, method: str, template: str, handler: Handler, *, auth: bool = True) -> None:
        regex = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
        self.routes.append(_Route(method, template, re.compile(regex), handler, auth))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        query = dict(request.query)
        if not path.startswith(API_PREFIX + "/"):
            self.fake.problem(f"REST call outside {API_PREFIX}: {request.method} {path}")
            return _json_response(404, {"message": "404: Not Found", "code": 0})
        sub = path[len(API_PREFIX) :]
        matched: _Route | None = None
        params: dict[str, str] = {}
        path_known = False
        for candidate in self.routes:
            found = candidate.pattern.match(sub)
            if found is None:
                continue
            path_known = True
            if candidate.method == request.method:
                matched = candidate
                params = {k: unquote(v) for k, v in found.groupdict().items()}
                break
        try:
            body, files = await self._read_body(request)
        except ValueError as exc:
            self.fake.problem(f"unparseable body for {request.method} {path}: {exc}")
            return self._finish(
                request.method,
                path,
                None,
                query,
                None,
                [],
                400,
                {"message": "400: Bad Request", "code": 0},
            )
        if matched is None:
            status = 405 if path_known else 404
            message = "405: Method Not Allowed" if path_known else "404: Not Found"
            self.fake.problem(
                f"unknown REST route {request.method} {path} (the fake does not implement it)"
            )
            return self._finish(
                request.method,
                path,
                None,
                query,
                body,
                files,
                status,
                {"message": message, "code": 0},
            )
        if matched.auth and request.headers.get("Authorization") != f"Bot {self.fake.token}":
            return self._finish(
                request.method,
                path,
                matched.key,
                query,
                body,
                files,
                401,
                {"message": "401: Unauthorized", "code": 0},
            )
        fault = self._take_fault(matched.key, request.method, path, query, body)
        if fault is not None:
            return self._fault_response(
                fault, request.method, path, matched.key, query, body, files
            )
        rest_request = RestRequest(
            method=request.method,
            path=path,
            route=matched.key,
            params=params,
            query=query,
            body=body,
            files=files,
        )
        try:
            reply = await matched.handler(rest_request)
        except ApiError as exc:
            return self._finish(
                request.method, path, matched.key, query, body, files, exc.status, exc.body()
            )
        except Exception as exc:  # a bug in the fake: make it loud, answer like an outage
            log.exception("fake Discord handler for %s crashed", matched.key)
            self.fake.problem(f"handler {matched.key} crashed: {exc!r}")
            return self._finish(
                request.method,
                path,
                matched.key,
                query,
                body,
                files,
                500,
                {"message": "500: Internal Server Error", "code": 0},
            )
        if reply.schema is not None and reply.body is not None and self.fake.validate_payloads:
            try:
                validate(reply.body, _schema(reply.schema))
            except PayloadError as exc:
                self.fake.problem(f"invalid response for {matched.key} (as {reply.schema}): {exc}")
        return self._finish(
            request.method, path, matched.key, query, body, files, reply.status, reply.body
        )

    def _finish(
        self,
        method: str,
        path: str,
        route: str | None,
        query: Mapping[str, str],
        body: Any,
        files: list[UploadedFile],
        status: int,
        response_body: Any,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        self.fake.record(
            HttpRequest(
                method=method,
                path=path,
                route=route,
                query=dict(query),
                status=status,
                body=body,
                files=tuple(files),
            )
        )
        if status == 204 or (response_body is None and status < 300):
            return web.Response(status=204)
        return _json_response(status, response_body, headers)

    async def _read_body(self, request: web.Request) -> tuple[Any, list[UploadedFile]]:
        if not request.can_read_body:
            return None, []
        content_type = request.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            reader = await request.multipart()
            body: Any = None
            files: list[UploadedFile] = []
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    raise ValueError("nested multipart")
                name = part.name or ""
                if name == "payload_json":
                    body = json.loads(await part.text())
                elif name.startswith("files["):
                    data = await part.read(decode=False)
                    files.append(
                        UploadedFile(
                            field_name=name, filename=part.filename or "", data=bytes(data)
                        )
                    )
                else:
                    raise ValueError(f"unexpected multipart field {name!r}")
            return body, files
        text = await request.text()
        if not text:
            return None, []
        if not content_type.startswith("application/json"):
            raise ValueError(f"body with content type {content_type!r}")
        return json.loads(text), []

    def _take_fault(
        self, key: str, method: str, path: str, query: Mapping[str, str], body: Any
    ) -> Fault | None:
        probe = HttpRequest(
            method=method, path=path, route=key, query=dict(query), status=0, body=body
        )
        for fault in self.faults:
            if (
                fault.route == key
                and fault.remaining > 0
                and (fault.where is None or fault.where(probe))
            ):
                fault.remaining -= 1
                return fault
        return None

    def _fault_response(
        self,
        fault: Fault,
        method: str,
        path: str,
        key: str,
        query: Mapping[str, str],
        body: Any,
        files: list[UploadedFile],
    ) -> web.Response:
        if fault.status != 429:
            response = fault.body or {"message": f"{fault.status}: Injected failure", "code": 0}
            return self._finish(method, path, key, query, body, files, fault.status, response)
        retry = fault.retry_after
        headers = {
            "Retry-After": str(max(1, math.ceil(retry))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{self.fake.now() + retry:.3f}",
            "X-RateLimit-Reset-After": f"{retry:.3f}",
            "X-RateLimit-Bucket": "f" + format(abs(hash(key)) % 16**31, "031x"),
            "X-RateLimit-Scope": "global" if fault.is_global else fault.scope,
            # Discord's 429s come through Google's front end; without Via discord.py assumes
            # a Cloudflare ban and raises instead of retrying.
            "Via": "1.1 google",
        }
        if fault.is_global:
            headers["X-RateLimit-Global"] = "true"
        response = {
            "message": "You are being rate limited.",
            "retry_after": retry,
            "global": fault.is_global,
        }
        if fault.is_global:
            response["code"] = 0
        return self._finish(method, path, key, query, body, files, 429, response, headers)

    # ================================================================ helpers

    def _channel(self, req: RestRequest, *, view: bool = True) -> FakeChannel:
        channel = self.fake.channels.get(req.param_id("channel_id"))
        if channel is None:
            raise ApiError.unknown_channel()
        if channel.is_dm:
            if channel.is_private_channel:
                # A DM or group DM between people: the app only reaches it through an
                # interaction (user install), never through channel routes.
                raise ApiError.missing_access()
            return channel
        guild = self.fake.guild_of(channel)
        if guild is None:
            raise ApiError.unknown_channel()
        if self.fake.bot_user.id not in guild.members:
            # A channel of a guild the bot is not in (e.g. a user-installed app's interaction).
            raise ApiError.missing_access()
        if view and not self.fake.bot_can_view(channel):
            raise ApiError.missing_access()
        return channel

    def _message(self, channel: FakeChannel, req: RestRequest) -> FakeMessage:
        message = self.fake.messages.get(req.param_id("message_id"))
        if message is None or message.channel_id != channel.id:
            raise ApiError.unknown_message()
        return message

    def _perms(self, channel: FakeChannel) -> int:
        return self.fake.permissions_for(self.fake.bot_user.id, channel)

    def _require(self, channel: FakeChannel, *needed: Perm) -> None:
        perms = self._perms(channel)
        for perm in needed:
            if not perms & perm:
                raise ApiError.missing_permissions()

    def _body(self, req: RestRequest) -> dict[str, Any]:
        if req.body is None:
            return {}
        if not isinstance(req.body, dict):
            raise ApiError(400, 50109, "The request body contains invalid JSON.")
        return req.body

    # ================================================================ routes

    def _register_all(self) -> None:
        r = self.route
        r("GET", "/gateway/bot", self.get_gateway_bot)
        r("GET", "/users/@me", self.get_me)
        r("POST", "/users/@me/channels", self.create_dm)
        r("GET", "/users/{user_id}", self.get_user)
        r("GET", "/oauth2/applications/@me", self.get_application)
        r("GET", "/guilds/{guild_id}", self.get_guild)
        r("GET", "/channels/{channel_id}", self.get_channel)
        r("GET", "/channels/{channel_id}/messages", self.get_messages)
        r("POST", "/channels/{channel_id}/messages", self.create_message)
        r("GET", "/channels/{channel_id}/messages/{message_id}", self.get_message)
        r("PATCH", "/channels/{channel_id}/messages/{message_id}", self.edit_message)
        r("DELETE", "/channels/{channel_id}/messages/{message_id}", self.delete_message)
        r("POST", "/channels/{channel_id}/typing", self.typing)
        r("POST", "/channels/{channel_id}/messages/{message_id}/threads", self.thread_from_message)
        r("POST", "/channels/{channel_id}/threads", self.thread_without_message)
        r("PUT", "/channels/{channel_id}/thread-members/@me", self.join_thread)
        r("PUT", "/channels/{channel_id}/thread-members/{user_id}", self.add_thread_member)
        reactions = "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}"
        r("PUT", reactions + "/@me", self.add_reaction)
        r("DELETE", reactions + "/@me", self.remove_own_reaction)
        r("GET", "/applications/{application_id}/commands", self.get_commands)
        r("PUT", "/applications/{application_id}/commands", self.put_commands)
        guild_commands = "/applications/{application_id}/guilds/{guild_id}/commands"
        r("PUT", guild_commands, self.put_commands)
        r(
            "POST",
            "/interactions/{webhook_id}/{webhook_token}/callback",
            self.interaction_callback,
            auth=False,
        )
        hook = "/webhooks/{webhook_id}/{webhook_token}"
        r("POST", hook, self.followup, auth=False)
        r("GET", hook + "/messages/@original", self.get_webhook_message, auth=False)
        r("PATCH", hook + "/messages/@original", self.edit_webhook_message, auth=False)
        r("DELETE", hook + "/messages/@original", self.delete_webhook_message, auth=False)
        r("GET", hook + "/messages/{message_id}", self.get_webhook_message, auth=False)
        r("PATCH", hook + "/messages/{message_id}", self.edit_webhook_message, auth=False)
        r("DELETE", hook + "/messages/{message_id}", self.delete_webhook_message, auth=False)

    # ---------------------------------------------------------------- identity

    async def get_gateway_bot(self, req: RestRequest) -> Reply:
        body = {
            "url": self.fake.gateway_url,
            "shards": self.fake.recommended_shards,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 86_400_000,
                "max_concurrency": 1,
            },
        }
        return Reply(body=body, schema="gateway.GatewayBot")

    async def get_me(self, req: RestRequest) -> Reply:
        return Reply(body=self.fake.me_payload(), schema="user.User")

    async def get_user(self, req: RestRequest) -> Reply:
        user = self.fake.users.get(req.param_id("user_id"))
        if user is None:
            raise ApiError.unknown_user()
        return Reply(body=self.fake.user_payload(user), schema="user.User")

    async def get_application(self, req: RestRequest) -> Reply:
        return Reply(body=self.fake.application_payload(), schema="appinfo.AppInfo")

    async def create_dm(self, req: RestRequest) -> Reply:
        body = self._body(req)
        user = self.fake.users.get(int(body.get("recipient_id") or 0))
        if user is None:
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "recipient_id": {
                        "_errors": [
                            {"code": "NUMBER_TYPE_COERCE", "message": "Value is not snowflake."}
                        ]
                    }
                },
            )
        return Reply(
            body=self.fake.channel_payload(self.fake.dm_channel(user)), schema="channel.DMChannel"
        )

    # ---------------------------------------------------------------- guilds

    def _guild(self, req: RestRequest) -> Any:
        guild = self.fake.guilds.get(req.param_id("guild_id"))
        if guild is None:
            raise ApiError.unknown_guild()
        if self.fake.bot_user.id not in guild.members:
            raise ApiError.missing_access()
        return guild

    async def get_guild(self, req: RestRequest) -> Reply:
        guild = self._guild(req)
        return Reply(
            body=self.fake.guild_payload(guild, members=[], full=False), schema="guild.Guild"
        )

    # ---------------------------------------------------------------- channels and messages

    async def get_channel(self, req: RestRequest) -> Reply:
        channel = self._channel(req)
        return Reply(body=self.fake.channel_payload(channel), schema="channel.Channel")

    def _content_visible(self) -> bool:
        # Over REST the Message Content intent is the app's portal setting.
        return self.fake.privileged_intents.message_content

    async def get_messages(self, req: RestRequest) -> Reply:
        channel = self._channel(req)
        if not channel.is_dm and not self._perms(channel) & Perm.READ_MESSAGE_HISTORY:
            return Reply(body=[])
        limit = max(1, min(100, int(req.query.get("limit", "50"))))
        history = self.fake.history(channel.id)
        if "after" in req.query:
            after = int(req.query["after"])
            selected = [m for m in history if m.id > after][:limit]
        elif "around" in req.query:
            around = int(req.query["around"])
            older = [m for m in history if m.id <= around][-(limit // 2 + limit % 2) :]
            newer = [m for m in history if m.id > around][: limit // 2]
            selected = older + newer
        else:
            before = int(req.query.get("before", str(1 << 63)))
            selected = [m for m in history if m.id < before][-limit:]
        selected.sort(key=lambda m: m.id, reverse=True)
        visible = self._content_visible()
        body = [self.fake.message_payload(m, content_visible=visible) for m in selected]
        return Reply(body=body)

    async def get_message(self, req: RestRequest) -> Reply:
        channel = self._channel(req)
        if not channel.is_dm:
            self._require(channel, Perm.READ_MESSAGE_HISTORY)
        message = self._message(channel, req)
        body = self.fake.message_payload(message, content_visible=self._content_visible())
        return Reply(body=body, schema="message.Message")

    async def create_message(self, req: RestRequest) -> Reply:
        channel = self._channel(req, view=False)
        if channel.type == ChannelType.CATEGORY:
            raise ApiError(400, 50008, "Cannot send messages in a non-text channel")
        message = self.fake.post_bot_message(channel, self._body(req), req.files, via="rest")
        return Reply(body=self.fake.message_payload(message), schema="message.Message")

    async def edit_message(self, req: RestRequest) -> Reply:
        channel = self._channel(req)
        message = self._message(channel, req)
        if message.author.id != self.fake.bot_user.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        updated = self.fake.edit_bot_message(message, self._body(req), req.files, via="rest")
        return Reply(body=self.fake.message_payload(updated), schema="message.Message")

    async def delete_message(self, req: RestRequest) -> Reply:
        channel = self._channel(req)
        message = self._message(channel, req)
        if message.author.id != self.fake.bot_user.id:
            if channel.is_dm:
                raise ApiError(403, 50003, "Cannot execute action on a DM channel")
            self._require(channel, Perm.MANAGE_MESSAGES)
        self.fake.delete_by_bot(message, via="rest")
        return Reply(status=204)

    async def typing(self, req: RestRequest) -> Reply:
        channel = self._channel(req)
        if not channel.is_dm:
            needed = Perm.SEND_MESSAGES_IN_THREADS if channel.is_thread else Perm.SEND_MESSAGES
            self._require(channel, needed)
        self.fake.record(
            TypingStarted(channel_id=channel.id, user_id=self.fake.bot_user.id, by_bot=True)
        )
        return Reply(status=204)

    # ---------------------------------------------------------------- threads

    def _thread_options(self, body: Mapping[str, Any]) -> tuple[str, int]:
        errors = FormErrors()
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            errors.add(["name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        duration = body.get("auto_archive_duration") or 1440
        if duration not in (60, 1440, 4320, 10080):
            errors.add(
                ["auto_archive_duration"],
                "BASE_TYPE_CHOICES",
                "Value must be one of {60, 1440, 4320, 10080}.",
            )
        errors.raise_if_any()
        return str(name), int(duration)

    async def thread_from_message(self, req: RestRequest) -> Reply:
        channel = self._channel(req)
        if channel.type not in (ChannelType.TEXT, ChannelType.NEWS):
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        message = self._message(channel, req)
        self._require(channel, Perm.CREATE_PUBLIC_THREADS, Perm.READ_MESSAGE_HISTORY)
        if message.thread_id is not None:
            raise ApiError(400, 160004, "A thread has already been created for this message")
        name, duration = self._thread_options(self._body(req))
        thread = self.fake.make_thread(
            channel,
            name=name,
            owner=self.fake.bot_user,
            type_=ChannelType.NEWS_THREAD
            if channel.type == ChannelType.NEWS
            else ChannelType.PUBLIC_THREAD,
            from_message=message,
            auto_archive_duration=duration,
            invitable=True,
            by_bot=True,
        )
        return Reply(status=201, body=self.fake.thread_payload(thread), schema="threads.Thread")

    async def thread_without_message(self, req: RestRequest) -> Reply:
        channel = self._channel(req)
        if channel.type not in (ChannelType.TEXT, ChannelType.NEWS):
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        body = self._body(req)
        name, duration = self._thread_options(body)
        # API v10 quirk: without "type" Discord creates a *private* thread.
        kind = int(body.get("type") or ChannelType.PRIVATE_THREAD)
        if kind not in (
            ChannelType.PUBLIC_THREAD,
            ChannelType.PRIVATE_THREAD,
            ChannelType.NEWS_THREAD,
        ):
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "type": {
                        "_errors": [
                            {
                                "code": "BASE_TYPE_CHOICES",
                                "message": "Value must be one of {10, 11, 12}.",
                            }
                        ]
                    }
                },
            )
        if kind == ChannelType.PRIVATE_THREAD:
            if channel.type == ChannelType.NEWS:
                raise ApiError(400, 50024, "Cannot execute action on this channel type")
            self._require(channel, Perm.CREATE_PRIVATE_THREADS)
        else:
            self._require(channel, Perm.CREATE_PUBLIC_THREADS)
        thread = self.fake.make_thread(
            channel,
            name=name,
            owner=self.fake.bot_user,
            type_=kind,
            from_message=None,
            auto_archive_duration=duration,
            invitable=bool(body.get("invitable", True)),
            by_bot=True,
        )
        return Reply(status=201, body=self.fake.thread_payload(thread), schema="threads.Thread")

    def _thread(self, req: RestRequest) -> FakeChannel:
        channel = self._channel(req)
        if not channel.is_thread:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        return channel

    async def join_thread(self, req: RestRequest) -> Reply:
        thread = self._thread(req)
        if thread.archived:
            raise ApiError(400, 50083, "Thread is archived")
        bot_id = self.fake.bot_user.id
        if bot_id not in thread.member_ids:
            thread.member_ids[bot_id] = self.fake.now()
            self.fake.record(ThreadMemberAdded(thread_id=thread.id, user_id=bot_id, by_bot=True))
            self.fake.gateway.dispatch(
                "THREAD_MEMBER_UPDATE",
                lambda s: {
                    **self.fake.thread_member_payload(thread, bot_id),
                    "guild_id": str(thread.guild_id),
                },
                guild_id=thread.guild_id,
                intent=None,
            )
        return Reply(status=204)

    async def add_thread_member(self, req: RestRequest) -> Reply:
        thread = self._thread(req)
        user_id = req.param_id("user_id")
        guild = self.fake.guild_of(thread)
        if guild is None or user_id not in guild.members:
            raise ApiError.unknown_member()
        if thread.is_private_thread and self.fake.bot_user.id not in thread.member_ids:
            self._require(thread, Perm.MANAGE_THREADS)
        self._require(thread, Perm.SEND_MESSAGES_IN_THREADS)
        if user_id not in thread.member_ids:
            thread.member_ids[user_id] = self.fake.now()
            self.fake.record(ThreadMemberAdded(thread_id=thread.id, user_id=user_id, by_bot=True))
        return Reply(status=204)

    # ---------------------------------------------------------------- reactions

    async def add_reaction(self, req: RestRequest) -> Reply:
        channel = self._channel(req)
        message = self._message(channel, req)
        emoji = req.params["emoji"]
        users = self.fake.reactions.setdefault(message.id, {}).setdefault(emoji, [])
        if not channel.is_dm:
            self._require(channel, Perm.READ_MESSAGE_HISTORY)
            if not users:
                self._require(channel, Perm.ADD_REACTIONS)
        bot_id = self.fake.bot_user.id
        if bot_id not in users:
            users.append(bot_id)
            self.fake.record(
                ReactionAdded(
                    channel_id=channel.id,
                    message_id=message.id,
                    emoji=emoji,
                    user_id=bot_id,
                    by_bot=True,
                )
            )
            self.fake.dispatch_reaction("MESSAGE_REACTION_ADD", message, emoji, bot_id)
        return Reply(status=204)

    async def remove_own_reaction(self, req: RestRequest) -> Reply:
        return await self._remove_reaction(req, self.fake.bot_user.id)

    async def _remove_reaction(self, req: RestRequest, user_id: int) -> Reply:
        channel = self._channel(req)
        message = self._message(channel, req)
        emoji = req.params["emoji"]
        users = self.fake.reactions.get(message.id, {}).get(emoji, [])
        if user_id in users:
            users.remove(user_id)
            self.fake.record(
                ReactionRemoved(
                    channel_id=channel.id,
                    message_id=message.id,
                    emoji=emoji,
                    user_id=user_id,
                    by_bot=True,
                )
            )
            self.fake.dispatch_reaction("MESSAGE_REACTION_REMOVE", message, emoji, user_id)
        return Reply(status=204)

    # ---------------------------------------------------------------- application commands

    def _command_scope(self, req: RestRequest) -> int | None:
        if req.param_id("application_id") != self.fake.application_id:
            raise ApiError(403, 50001, "Missing Access")
        if "guild_id" in req.params:
            guild = self.fake.guilds.get(req.param_id("guild_id"))
            if guild is None or self.fake.bot_user.id not in guild.members:
                raise ApiError.missing_access()
            return guild.id
        return None

    def _command_body(
        self, scope: int | None, data: Mapping[str, Any], existing: RegisteredCommand | None
    ) -> dict[str, Any]:
        command_id = existing.id if existing else self.fake.snowflake()
        kind = int(data.get("type") or 1)
        payload: dict[str, Any] = {
            "id": str(command_id),
            "application_id": str(self.fake.application_id),
            "version": str(self.fake.snowflake()),
            "type": kind,
            "name": data["name"],
            "description": data.get("description") or "",
            "default_member_permissions": (
                None
                if data.get("default_member_permissions") is None
                else str(data["default_member_permissions"])
            ),
            "nsfw": bool(data.get("nsfw", False)),
        }
        if scope is None:
            contexts = data.get("contexts")
            if contexts is None:
                contexts = [0, 1, 2] if data.get("dm_permission", True) is not False else [0]
            payload["contexts"] = contexts
            payload["integration_types"] = data.get("integration_types") or [0]
            payload["dm_permission"] = data.get("dm_permission", True) is not False
        else:
            payload["guild_id"] = str(scope)
            payload["contexts"] = [0]
            payload["integration_types"] = [0]
        if data.get("options"):
            payload["options"] = data["options"]
        for key in ("name_localizations", "description_localizations"):
            if data.get(key) is not None:
                payload[key] = data[key]
        return payload

    def _validate_commands(self, commands: Any) -> None:
        errors = FormErrors()
        if not isinstance(commands, list):
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {"_errors": [{"code": "BASE_TYPE_ARRAY", "message": "Must be an array."}]},
            )
        if len([c for c in commands if isinstance(c, dict) and c.get("type", 1) == 1]) > 100:
            errors.add([], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        seen: set[tuple[str, int]] = set()
        for index, command in enumerate(commands):
            if not isinstance(command, dict):
                errors.add(
                    [index], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType"
                )
                continue
            kind = int(command.get("type") or 1)
            if kind not in (1, 2, 3):
                errors.add([index, "type"], "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3}.")
            for key, choices in (("contexts", (0, 1, 2)), ("integration_types", (0, 1))):
                values = command.get(key)
                if values is None:
                    continue
                if not isinstance(values, list) or not all(
                    type(v) is int and v in choices for v in values
                ):
                    listed = ", ".join(str(c) for c in choices)
                    errors.add(
                        [index, key], "BASE_TYPE_CHOICES", f"Value must be one of {{{listed}}}."
                    )
            name = command.get("name")
            if not isinstance(name, str) or (
                (kind == 1 and (not _COMMAND_NAME.match(name) or name != name.lower()))
                or not 1 <= len(name) <= 32
            ):
                errors.add(
                    [index, "name"], "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
                )
            elif (name, kind) in seen:
                errors.add(
                    [index, "name"],
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    "Application command names must be unique",
                )
            else:
                seen.add((name, kind))
            if kind == 1:
                description = command.get("description")
                if not isinstance(description, str) or not 1 <= len(description) <= 100:
                    errors.add(
                        [index, "description"],
                        "BASE_TYPE_BAD_LENGTH",
                        "Must be between 1 and 100 in length.",
                    )
                self._validate_options(errors, [index, "options"], command.get("options") or [])
        errors.raise_if_any()

    def _validate_options(self, errors: FormErrors, path: list[str | int], options: Any) -> None:
        if len(options) > 25:
            errors.add(path, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        optional_seen = False
        for index, option in enumerate(options):
            opath = [*path, index]
            name = option.get("name")
            if not isinstance(name, str) or not _COMMAND_NAME.match(name) or name != name.lower():
                errors.add(
                    [*opath, "name"], "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
                )
            description = option.get("description")
            if not isinstance(description, str) or not 1 <= len(description) <= 100:
                errors.add(
                    [*opath, "description"],
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                )
            if option.get("type") in (1, 2):
                self._validate_options(errors, [*opath, "options"], option.get("options") or [])
                continue
            if option.get("required"):
                if optional_seen:
                    errors.add(
                        [*opath, "required"],
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    )
            else:
                optional_seen = True
            if len(option.get("choices") or []) > 25:
                errors.add(
                    [*opath, "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
                )

    async def get_commands(self, req: RestRequest) -> Reply:
        scope = self._command_scope(req)
        body = [c.payload for c in self.fake.commands.values() if c.guild_id == scope]
        return Reply(body=body)

    async def put_commands(self, req: RestRequest) -> Reply:
        scope = self._command_scope(req)
        commands = req.body if req.body is not None else []
        return Reply(body=self.overwrite_commands(scope, commands))

    def overwrite_commands(self, scope: int | None, commands: Any) -> list[dict[str, Any]]:
        """Bulk overwrite of the global (``scope=None``) or a guild's commands."""
        self._validate_commands(commands)
        old = {(c.name, c.type): c for c in self.fake.commands.values() if c.guild_id == scope}
        for command in old.values():
            del self.fake.commands[command.id]
        stored: list[dict[str, Any]] = []
        for data in commands:
            existing = old.get((data["name"], int(data.get("type") or 1)))
            payload = self._command_body(scope, data, existing)
            registered = RegisteredCommand(id=int(payload["id"]), guild_id=scope, payload=payload)
            self.fake.commands[registered.id] = registered
            stored.append(payload)
        if self.fake.validate_payloads:
            for payload in stored:
                try:
                    validate(payload, _schema("command.ApplicationCommand"))
                except PayloadError as exc:
                    self.fake.problem(f"stored command is not an ApplicationCommand: {exc}")
        self.fake.record(CommandsSynced(guild_id=scope, commands=tuple(stored)))
        return stored

    # ---------------------------------------------------------------- interactions

    def _interaction_by_token(self, req: RestRequest) -> InteractionState:
        token = req.params["webhook_token"]
        for state in self.fake.interactions.values():
            if state.token == token:
                if req.param_id("webhook_id") != self.fake.application_id:
                    raise ApiError.unknown_webhook()
                if self.fake.now() - state.created_at > self.fake.interaction_token_ttl:
                    raise ApiError(401, 50027, "Invalid Webhook Token")
                return state
        raise ApiError.unknown_webhook()

    async def interaction_callback(self, req: RestRequest) -> Reply:
        state = self.fake.interactions.get(req.param_id("webhook_id"))
        if state is None or state.token != req.params["webhook_token"]:
            raise ApiError.unknown_interaction()
        if self.fake.now() - state.created_at > self.fake.interaction_deadline:
            # Discord forgets interactions not answered within 3 seconds.
            raise ApiError.unknown_interaction()
        if state.response_type is not None:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        body = self._body(req)
        kind = body.get("type")
        data = body.get("data") if isinstance(body.get("data"), dict) else None
        channel = self.fake.channels[state.channel_id]
        message: FakeMessage | None = None
        fake = self.fake
        allowed_for = {
            4: (2, 3, 5),
            5: (2, 3, 5),
            6: (3, 5),
            7: (3, 5),
            8: (4,),
            9: (2, 3),
        }
        if (
            kind not in allowed_for
            or state.type not in allowed_for[kind]
            or (kind == 7 and state.source_message_id is None)
        ):
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "type": {
                        "_errors": [
                            {"code": "INTERACTION_RESPONSE_TYPE_INVALID", "message": _BAD_TYPE}
                        ]
                    }
                },
            )
        ephemeral = False
        forced = int(MessageFlag.EPHEMERAL) if state.forced_ephemeral else 0
        if kind == 4:
            flags = int((data or {}).get("flags") or 0) | forced
            ephemeral = bool(flags & MessageFlag.EPHEMERAL)
            message = fake.post_bot_message(
                channel,
                data or {},
                req.files,
                via="interaction_response",
                interaction=state,
                flags_allowed=int(
                    MessageFlag.EPHEMERAL
                    | MessageFlag.SUPPRESS_EMBEDS
                    | MessageFlag.SUPPRESS_NOTIFICATIONS
                    | MessageFlag.IS_COMPONENTS_V2
                ),
                extra_flags=forced,
                check_permissions=False,
            )
            state.original_message_id = message.id
        elif kind == 5:
            flags = int((data or {}).get("flags") or 0) | forced
            ephemeral = bool(flags & MessageFlag.EPHEMERAL)
            state.deferred_ephemeral = ephemeral
            message = self._loading_message(state, channel, ephemeral)
            state.original_message_id = message.id
        elif kind in (6, 7):
            source = fake.find_message(state.source_message_id or 0)
            if source is None:
                raise ApiError.unknown_message()
            state.original_message_id = source.id
            if kind == 7:
                message = fake.edit_bot_message(
                    source, data or {}, req.files, via="interaction_response", interaction=state
                )
            ephemeral = source.ephemeral
        elif kind == 9:
            if (
                not data
                or not data.get("custom_id")
                or not data.get("title")
                or not data.get("components")
            ):
                raise ApiError(
                    400,
                    50035,
                    "Invalid Form Body",
                    {
                        "data": {
                            "_errors": [
                                {
                                    "code": "BASE_TYPE_REQUIRED",
                                    "message": "custom_id, title and components are required",
                                }
                            ]
                        }
                    },
                )
            state.modal = dict(data)
        state.response_type = kind
        fake.record(
            InteractionResponded(
                interaction_id=state.id,
                type=kind,
                data=data,
                ephemeral=ephemeral,
                message=message,
            )
        )
        if req.query.get("with_response") not in ("1", "true", "True"):
            return Reply(status=204)
        callback: dict[str, Any] = {"id": str(state.id), "type": state.type}
        if message is not None or kind == 6:
            original = message or fake.find_message(state.original_message_id or 0)
            if original is not None:
                callback["response_message_id"] = str(original.id)
                callback["response_message_loading"] = original.loading
                callback["response_message_ephemeral"] = original.ephemeral
        response: dict[str, Any] = {"interaction": callback}
        if kind in (4, 5, 7) and message is not None:
            response["resource"] = {"type": kind, "message": fake.message_payload(message)}
        elif kind in (6, 8, 9):
            response["resource"] = {"type": kind}
        return Reply(status=200, body=response, schema="interactions.InteractionCallback")

    def _loading_message(
        self, state: InteractionState, channel: FakeChannel, ephemeral: bool
    ) -> FakeMessage:
        flags = int(MessageFlag.LOADING | (MessageFlag.EPHEMERAL if ephemeral else 0))
        fake = self.fake
        message = fake.new_message(
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=fake.bot_user,
            type=20 if state.type == 2 else 0,
            flags=flags,
            webhook_id=fake.application_id,
            application_id=fake.application_id,
            interaction=state.ref(fake.interactions),
        )
        if ephemeral:
            fake.ephemeral_messages[message.id] = message
        else:
            fake.store_message(message)
        fake.record(
            MessageCreated(message=message, via="interaction_response", interaction_id=state.id)
        )
        fake.dispatch_message("MESSAGE_CREATE", message)
        return message

    async def followup(self, req: RestRequest) -> Reply:
        state = self._interaction_by_token(req)
        if state.response_type is None:
            raise ApiError.unknown_webhook()
        if state.user_install_only and len(state.followup_ids) >= MAX_USER_INSTALL_FOLLOWUPS:
            # Only a user install authorizes this interaction (no guild install here). Every
            # POST counts, also the first one after a deferral that fills in the "thinking"
            # message; editing @original does not.
            raise ApiError(
                400, 40094, "This interaction has hit the maximum number of follow up messages"
            )
        body = self._body(req)
        channel = self.fake.channels[state.channel_id]
        original = self.fake.find_message(state.original_message_id or 0)
        if state.response_type == 5 and original is not None and original.loading:
            # The first followup after a deferral replaces the "thinking" message and keeps
            # its visibility (the followup's own ephemeral flag is ignored).
            edit_body = {k: v for k, v in body.items() if k != "flags"}
            message = self.fake.edit_bot_message(
                original, edit_body, req.files, via="followup", interaction=state
            )
        else:
            message = self.fake.post_bot_message(
                channel,
                body,
                req.files,
                via="followup",
                interaction=state,
                flags_allowed=int(
                    MessageFlag.EPHEMERAL
                    | MessageFlag.SUPPRESS_EMBEDS
                    | MessageFlag.SUPPRESS_NOTIFICATIONS
                    | MessageFlag.IS_COMPONENTS_V2
                ),
                extra_flags=int(MessageFlag.EPHEMERAL) if state.forced_ephemeral else 0,
                check_permissions=False,
            )
        state.followup_ids.append(message.id)
        if req.query.get("wait") in ("1", "true", "True"):
            return Reply(body=self.fake.message_payload(message), schema="message.Message")
        return Reply(status=204)

    def _webhook_message(self, req: RestRequest, state: InteractionState) -> FakeMessage:
        raw = req.params.get("message_id")
        message_id = state.original_message_id if raw is None else req.param_id("message_id")
        message = self.fake.find_message(message_id or 0)
        if message is None:
            raise ApiError.unknown_message()
        if message.id != state.original_message_id and message.id not in state.followup_ids:
            raise ApiError.unknown_message()
        return message

    async def get_webhook_message(self, req: RestRequest) -> Reply:
        state = self._interaction_by_token(req)
        message = self._webhook_message(req, state)
        return Reply(body=self.fake.message_payload(message), schema="message.Message")

    async def edit_webhook_message(self, req: RestRequest) -> Reply:
        state = self._interaction_by_token(req)
        message = self._webhook_message(req, state)
        via = "interaction_response" if message.id == state.original_message_id else "followup"
        updated = self.fake.edit_bot_message(
            message, self._body(req), req.files, via=via, interaction=state
        )
        return Reply(body=self.fake.message_payload(updated), schema="message.Message")

    async def delete_webhook_message(self, req: RestRequest) -> Reply:
        state = self._interaction_by_token(req)
        message = self._webhook_message(req, state)
        self.fake.delete_by_bot(message, via="interaction_response")
        return Reply(status=204)


_schemas: dict[str, Any] = {}


def _schema(name: str) -> Any:
    if name not in _schemas:
        _schemas[name] = schema_type(name)
    return _schemas[name]
