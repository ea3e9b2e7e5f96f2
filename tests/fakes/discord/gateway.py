"""The fake gateway: Discord's websocket protocol, as far as a bot's client uses it.

Speaks JSON text frames (discord.py asks for ``compress=zlib-stream`` but decompresses only
binary frames; the fake can also compress, see ``transport_compression``). Implements HELLO,
HEARTBEAT/ACK (and server-requested heartbeats), IDENTIFY -> READY + GUILD_CREATE, RESUME with
replay of missed dispatches and RESUMED, REQUEST_GUILD_MEMBERS -> GUILD_MEMBERS_CHUNK,
INVALID_SESSION, RECONNECT, and Discord's close codes (4001 unknown opcode, 4002 decode error,
4003 not authenticated, 4004 authentication failed, 4005 already authenticated, 4008 rate
limited, 4010 invalid shard, 4012 invalid API version, 4013 invalid intents, 4014 disallowed
intents). A session survives a dropped connection and buffers what is dispatched meanwhile;
closing with 1000/1001 ends it, as on Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from .events import GatewayClosed, GatewayIdentified, GatewayRejected, GatewayResumed
from .models import Intent
from .schema import PayloadError, schema_type, validate

if TYPE_CHECKING:
    from .server import FakeDiscord

__all__ = ["Gateway", "GatewayConnection", "GatewaySession"]

log = logging.getLogger(__name__)

# Intent bits Discord knows (anything else is "invalid intents", 4013).
_KNOWN_INTENTS = (1 << 26) - 1 | (1 << 24) | (1 << 25)

#: Gateway event -> the discord.py TypedDict its ``d`` must match.
EVENT_TYPES: dict[str, str] = {
    "READY": "gateway.ReadyEvent",
    "GUILD_CREATE": "gateway.GuildCreateEvent",
    "GUILD_UPDATE": "gateway.GuildUpdateEvent",
    "GUILD_MEMBERS_CHUNK": "gateway.GuildMembersChunkEvent",
    "GUILD_MEMBER_ADD": "gateway.GuildMemberAddEvent",
    "GUILD_MEMBER_UPDATE": "gateway.GuildMemberUpdateEvent",
    "GUILD_ROLE_CREATE": "gateway._GuildRoleEvent",
    "GUILD_ROLE_UPDATE": "gateway._GuildRoleEvent",
    "CHANNEL_CREATE": "channel.GuildChannel",
    "CHANNEL_UPDATE": "channel.GuildChannel",
    "MESSAGE_CREATE": "gateway.MessageCreateEvent",
    "MESSAGE_UPDATE": "gateway.MessageUpdateEvent",
    "MESSAGE_DELETE": "gateway.MessageDeleteEvent",
    "MESSAGE_DELETE_BULK": "gateway.MessageDeleteBulkEvent",
    "MESSAGE_REACTION_ADD": "gateway.MessageReactionAddEvent",
    "MESSAGE_REACTION_REMOVE": "gateway.MessageReactionRemoveEvent",
    "THREAD_CREATE": "gateway.ThreadCreateEvent",
    "THREAD_UPDATE": "gateway.ThreadUpdateEvent",
    "THREAD_MEMBER_UPDATE": "gateway.ThreadMemberUpdate",
    "THREAD_MEMBERS_UPDATE": "gateway.ThreadMembersUpdate",
    "INTERACTION_CREATE": "gateway.InteractionCreateEvent",
    "TYPING_START": "gateway.TypingStartEvent",
}

# RESUMED: discord.py's TypedDict says ``None``, but its gateway code writes a key into the
# payload (``data['__shard_id__'] = ...``), so ``d`` must be an object, as Discord sends it.
_UNVALIDATED = {"RESUMED", "PRESENCES_REPLACE"}


@dataclass
class _Close:
    code: int
    reason: str


class GatewayConnection:
    """One websocket connection (a session may have several over its life)."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, compress: bool) -> None:
        self.ws = ws
        self.request = request
        self.path = request.path
        self.session: GatewaySession | None = None
        self.closed_by_server = False
        self._queue: asyncio.Queue[str | _Close] = asyncio.Queue()
        self._zlib = zlib.compressobj() if compress else None
        self._sent_times: list[float] = []
        self.writer: asyncio.Task[None] | None = None
        self.sending_close = False

    def send(self, frame: str) -> None:
        if not self.closed_by_server:
            self._queue.put_nowait(frame)

    def send_op(self, op: int, data: Any) -> None:
        self.send(json.dumps({"op": op, "d": data, "s": None, "t": None}))

    def close(self, code: int, reason: str = "") -> None:
        if not self.closed_by_server:
            self.closed_by_server = True
            self._queue.put_nowait(_Close(code, reason))

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (a network failure)."""
        self.closed_by_server = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    def count_received(self) -> bool:
        """Record a client payload; False when the client exceeds 120 per 60 s."""
        now = time.monotonic()
        self._sent_times = [t for t in self._sent_times if now - t < 60] + [now]
        return len(self._sent_times) <= 120

    async def run_writer(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _Close):
                    self.sending_close = True
                    await self.ws.close(code=item.code, message=item.reason.encode())
                    return
                if self._zlib is not None:
                    data = self._zlib.compress(item.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(item)
        except (ConnectionError, RuntimeError):
            # The peer went away; the reader side notices and cleans up.
            return


class GatewaySession:
    """A gateway session: identity, intents, sequence and the dispatch buffer for RESUME."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        session_id: str,
        shard_id: int,
        shard_count: int,
        intents: int,
    ) -> None:
        self._gateway = gateway
        self.session_id = session_id
        self.shard_id = shard_id
        self.shard_count = shard_count
        self.intents = intents
        self.seq = 0
        self.buffer: list[tuple[int, str]] = []
        self.connection: GatewayConnection | None = None
        self.invalidated = False
        self.heartbeat_seq = -1
        self._heartbeat_waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def connected(self) -> bool:
        return self.connection is not None and not self.connection.closed_by_server

    def has(self, intent: int) -> bool:
        return bool(self.intents & intent)

    def covers_guild(self, guild_id: int | None) -> bool:
        """Whether events for ``guild_id`` (``None``: DMs, which go to shard 0) reach us."""
        if guild_id is None:
            return self.shard_id == 0
        return (guild_id >> 22) % self.shard_count == self.shard_id

    def dispatch(self, event: str, data: Any) -> int:
        """Send (or buffer, while disconnected) a DISPATCH; returns its sequence number."""
        if event not in _UNVALIDATED:
            self._gateway.check_payload(event, data)
        self.seq += 1
        frame = json.dumps({"op": 0, "t": event, "s": self.seq, "d": data})
        self.buffer.append((self.seq, frame))
        if self.connection is not None:
            self.connection.send(frame)
        return self.seq

    def heartbeat_received(self, seq: int | None) -> None:
        if seq is not None:
            self.heartbeat_seq = max(self.heartbeat_seq, seq)
        still: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._heartbeat_waiters:
            if self.heartbeat_seq >= target:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((target, future))
        self._heartbeat_waiters = still

    async def barrier(self, timeout: float) -> None:
        """Return once the client has *processed* every dispatch sent so far.

        Sends a no-op dispatch, then asks for a heartbeat (op 1). discord.py answers op 1 from
        its receive loop, carrying the last sequence it read; frames are handled one at a time,
        so a heartbeat carrying the no-op's sequence means everything before it was parsed.
        (Heartbeats from discord.py's keep-alive thread carry the same number, and are just as
        conclusive.)
        """
        connection = self.connection
        if connection is None:
            raise AssertionError(f"session {self.session_id} is not connected")
        marker = self.dispatch("PRESENCES_REPLACE", [])
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._heartbeat_waiters.append((marker, future))
        connection.send_op(1, None)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            raise AssertionError(
                f"gateway session {self.session_id} (shard {self.shard_id}) did not acknowledge "
                f"seq {marker} within {timeout}s: is the client's event loop blocked?"
            ) from None


class Gateway:
    """Accepts gateway websocket connections for a :class:`FakeDiscord`."""

    def __init__(
        self,
        fake: FakeDiscord,
        *,
        heartbeat_interval_ms: int,
        transport_compression: bool,
    ) -> None:
        self.fake = fake
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.transport_compression = transport_compression
        self.sessions: dict[str, GatewaySession] = {}
        self.connections: set[GatewayConnection] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        # While set, new websocket connections are refused with HTTP 503 (an outage).
        self.refusing = False

    # ---------------------------------------------------------------- dispatching

    def live_sessions(self) -> list[GatewaySession]:
        return [s for s in self.sessions.values() if not s.invalidated]

    def check_payload(self, event: str, data: Any) -> None:
        type_name = EVENT_TYPES.get(event)
        if type_name is None:
            self.fake.problem(f"gateway event {event} has no known payload type")
            return
        if not self.fake.validate_payloads:
            return
        try:
            validate(data, schema_type(type_name))
        except PayloadError as exc:
            self.fake.problem(f"invalid {event} payload (as {type_name}): {exc}")
            raise

    def dispatch(
        self,
        event: str,
        build: Callable[[GatewaySession], Any],
        *,
        guild_id: int | None,
        intent: int | None = None,
    ) -> None:
        """Dispatch to every live session that covers ``guild_id`` and has ``intent``.

        ``build(session)`` makes the payload (so it can depend on the session's intents) and
        may return ``None`` to skip a session. Events of a guild the bot is not a member of
        go nowhere, except the interactions of a user-installed app there.
        """
        if (
            guild_id is not None
            and event != "INTERACTION_CREATE"
            and not self.fake.bot_in_guild(guild_id)
        ):
            return
        for session in self.live_sessions():
            if not session.covers_guild(guild_id):
                continue
            if intent is not None and not session.has(intent):
                continue
            data = build(session)
            if data is None:
                continue
            try:
                session.dispatch(event, data)
            except PayloadError:
                continue  # reported as a problem; never send what discord.py cannot parse

    # ---------------------------------------------------------------- connections

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.refusing:
            return web.Response(status=503, text="503: gateway unavailable")
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = GatewayConnection(ws, request, self.transport_compression)
        self.connections.add(conn)
        conn.writer = asyncio.create_task(conn.run_writer(), name="fake-gateway-writer")
        current = asyncio.current_task()
        if current is not None:
            self._handlers.add(current)
        query = request.query
        if query.get("v") not in (None, "10") or query.get("encoding", "json") != "json":
            self.fake.problem(f"gateway connection with unsupported query {dict(query)}")
            conn.close(4012, "Invalid API version")
        else:
            conn.send_op(10, {"heartbeat_interval": self.heartbeat_interval_ms})
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    try:
                        await self._on_payload(conn, msg.data)
                    except PayloadError:
                        pass  # already reported as a problem; the payload was not sent
                    except Exception as exc:
                        log.exception("fake gateway crashed handling %.200s", msg.data)
                        self.fake.problem(f"fake gateway crashed: {exc!r}")
                elif msg.type is WSMsgType.BINARY:
                    conn.close(4002, "Decode error")
        except (ConnectionError, RuntimeError):
            pass
        finally:
            await self._finish(conn)
            if current is not None:
                self._handlers.discard(current)
        return ws

    async def _finish(self, conn: GatewayConnection) -> None:
        writer = conn.writer
        if writer is not None:
            if conn.sending_close and not writer.done():
                # Let the close handshake the server started finish.
                await asyncio.wait({writer}, timeout=10)
            if not writer.done():
                writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        self.connections.discard(conn)
        session = conn.session
        code = conn.ws.close_code
        if session is not None and session.connection is conn:
            session.connection = None
            if not conn.closed_by_server and code in (1000, 1001):
                # A clean close by the client ends the session (no RESUME possible).
                session.invalidated = True
        self.fake.record(
            GatewayClosed(
                session_id=session.session_id if session else None,
                code=code,
                by_server=conn.closed_by_server,
            )
        )

    async def close_all(self) -> None:
        for conn in list(self.connections):
            conn.close(1001, "Going away")
        handlers = list(self._handlers)
        if handlers:
            await asyncio.wait(handlers, timeout=5)

    # ---------------------------------------------------------------- protocol

    async def _on_payload(self, conn: GatewayConnection, text: str) -> None:
        if not conn.count_received():
            conn.close(4008, "Rate limited.")
            return
        try:
            payload = json.loads(text)
            op = payload["op"]
            data = payload.get("d")
        except (ValueError, KeyError, TypeError):
            conn.close(4002, "Error while decoding payload.")
            return
        if op == 1:
            conn.send_op(11, None)
            if conn.session is not None:
                conn.session.heartbeat_received(data if isinstance(data, int) else None)
            return
        if op == 2:
            self._identify(conn, data)
            return
        if op == 6:
            self._resume(conn, data)
            return
        if conn.session is None:
            conn.close(4003, "Not authenticated.")
            return
        if op == 3:
            return  # presence update: accepted and ignored
        if op == 4:
            return  # voice state update: no voice in the fake
        if op == 8:
            self._request_members(conn.session, data)
            return
        conn.close(4001, "Unknown opcode.")

    def _identify(self, conn: GatewayConnection, data: Any) -> None:
        if conn.session is not None:
            conn.close(4005, "Already authenticated.")
            return
        if not isinstance(data, dict) or data.get("token") != self.fake.token:
            self._reject(conn, 4004, "Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int) or intents & ~_KNOWN_INTENTS:
            self._reject(conn, 4013, "Invalid intent(s).")
            return
        if self.fake.privileged_intents.disallowed(intents):
            self._reject(conn, 4014, "Disallowed intent(s).")
            return
        shard = data.get("shard", [0, 1])
        if (
            not isinstance(shard, list)
            or len(shard) != 2
            or not all(isinstance(x, int) for x in shard)
            or shard[1] < 1
            or not 0 <= shard[0] < shard[1]
        ):
            self._reject(conn, 4010, "Invalid shard.")
            return
        shard_id, shard_count = shard
        session = GatewaySession(
            self,
            session_id=secrets.token_hex(16),
            shard_id=shard_id,
            shard_count=shard_count,
            intents=intents,
        )
        self.sessions[session.session_id] = session
        session.connection = conn
        conn.session = session
        fake = self.fake
        guilds = [
            g
            for g in fake.guilds.values()
            if fake.bot_user.id in g.members and session.covers_guild(g.id)
        ]
        session.dispatch(
            "READY",
            {
                "v": 10,
                "user": fake.me_payload(),
                "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
                "session_id": session.session_id,
                "resume_gateway_url": fake.resume_gateway_url,
                "shard": [shard_id, shard_count],
                "application": fake.gateway_application_payload(),
            },
        )
        fake.record(
            GatewayIdentified(
                session_id=session.session_id,
                shard_id=shard_id,
                shard_count=shard_count,
                intents=intents,
                path=conn.path,
            )
        )
        if session.has(Intent.GUILDS):
            for guild in guilds:
                session.dispatch("GUILD_CREATE", fake.guild_create_payload(guild, session))

    def _resume(self, conn: GatewayConnection, data: Any) -> None:
        if conn.session is not None:
            conn.close(4005, "Already authenticated.")
            return
        if not isinstance(data, dict) or data.get("token") != self.fake.token:
            self._reject(conn, 4004, "Authentication failed.")
            return
        session = self.sessions.get(str(data.get("session_id")))
        seq = data.get("seq")
        if session is None or session.invalidated or not isinstance(seq, int) or seq > session.seq:
            self.fake.record(GatewayRejected(reason="RESUME of an unknown session", code=None))
            conn.send_op(9, False)
            return
        if session.connection is not None and session.connection is not conn:
            session.connection.close(4009, "Session timed out.")
        session.connection = conn
        conn.session = session
        missed = [frame for s, frame in session.buffer if s > seq]
        for frame in missed:
            conn.send(frame)
        session.dispatch("RESUMED", {})
        self.fake.record(
            GatewayResumed(session_id=session.session_id, replayed=len(missed), path=conn.path)
        )

    def _reject(self, conn: GatewayConnection, code: int, reason: str) -> None:
        self.fake.record(GatewayRejected(reason=reason, code=code))
        conn.close(code, reason)

    def _request_members(self, session: GatewaySession, data: Any) -> None:
        fake = self.fake
        try:
            guild = fake.guilds[int(data["guild_id"])]
        except (KeyError, TypeError, ValueError):
            fake.problem(f"REQUEST_GUILD_MEMBERS for an unknown guild: {data!r}")
            return
        members = list(guild.members.values())
        not_found: list[str] = []
        user_ids = data.get("user_ids")
        if user_ids:
            wanted = {int(u) for u in (user_ids if isinstance(user_ids, list) else [user_ids])}
            not_found = [str(u) for u in wanted if u not in guild.members]
            members = [m for m in members if m.id in wanted]
        else:
            query = str(data.get("query") or "").lower()
            members = [m for m in members if m.user.username.lower().startswith(query)]
            limit = int(data.get("limit") or 0)
            if limit:
                members = members[:limit]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": [fake.member_with_user_payload(m) for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if not_found:
            chunk["not_found"] = not_found
        if data.get("nonce") is not None:
            chunk["nonce"] = str(data["nonce"])
        session.dispatch("GUILD_MEMBERS_CHUNK", chunk)
