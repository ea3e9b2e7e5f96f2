"""Messages coming in: whether and how to answer each one, in arrival order per
conversation, opening a thread for a new conversation; edits of a latest message; and the
catch-up on messages that arrived while the bot was down."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import discord

from bot.chat import convert, texts
from bot.chat.autoreply import OFF, AutoreplyModes
from bot.chat.controls import RetryButton
from bot.chat.gate import Gate, Refusal
from bot.chat.replies import say
from bot.chat.threadcache import restore_thread
from bot.chat.threads import ThreadRefused, may_bind, open_thread
from bot.chat.unfurls import Unfurls
from bot.domain.admission import Admission
from bot.domain.errors import StorageError
from bot.domain.flows import Redo
from bot.domain.links import DEFAULT_EMBED_WAIT
from bot.domain.models import Autoreply, Conversation, Turn
from bot.domain.ports import ConversationStore, TurnStore
from bot.domain.service import ConversationService

log = logging.getLogger(__name__)

SEEN_LIMIT = 4096  # message ids remembered to drop duplicates (catch-up vs. live events)
CATCH_UP_PER_CONVERSATION = 50
Spawn = Callable[[Coroutine[Any, Any, Any], str], object]


class Route(enum.Enum):
    """What to do with a message."""

    IGNORE = "ignore"
    START = "start"  # a mention in a channel: open a thread and a conversation
    CONTINUE = "continue"  # a bound thread or an allowed DM
    BIND = "bind"  # a mention in a thread the bot does not know yet: bind it
    INLINE = "inline"  # a message in an inline autoreply channel: answer it there, as a reply
    DM_REFUSED = "dm_refused"


@dataclass(frozen=True, slots=True)
class InboundOptions:
    allow_dms: bool = False
    reply_without_mention: bool = True
    catch_up_seconds: float = 3600.0
    embed_wait: float = DEFAULT_EMBED_WAIT


def route(
    message: discord.Message,
    *,
    me_id: int,
    bound: bool,
    allow_dms: bool,
    reply_without_mention: bool,
    autoreply: Autoreply = OFF,
) -> Route:
    """The pure decision of whether and how to answer a message. ``autoreply``: the mode
    of the (non-thread) channel it was posted in."""
    if not convert.is_from_person(message, me_id):
        return Route.IGNORE
    if message.guild is None:
        return Route.CONTINUE if allow_dms else Route.DM_REFUSED
    mentioned = convert.mentions(message, me_id)
    if isinstance(message.channel, discord.Thread):
        if bound:
            return Route.CONTINUE if (reply_without_mention or mentioned) else Route.IGNORE
        return Route.BIND if mentioned else Route.IGNORE
    if autoreply == "inline":
        return Route.INLINE
    return Route.START if mentioned or autoreply == "threads" else Route.IGNORE


def _parent_of(channel: object) -> int | None:
    """The channel whose settings layer a message's conversation takes: a thread's parent,
    or the channel itself when answered there (inline); a DM has none."""
    if isinstance(channel, discord.abc.GuildChannel):  # a thread is no GuildChannel
        return channel.id
    return getattr(channel, "parent_id", None)


def _retried_turn(message: discord.Message) -> int | None:
    """The turn whose Retry button ``message`` carries, if any."""
    for row in message.components:
        for item in getattr(row, "children", ()):
            found = RetryButton.__discord_ui_compiled_template__.fullmatch(
                getattr(item, "custom_id", None) or ""
            )
            if found is not None:
                return int(found["turn"])
    return None


class ArrivalOrder:
    """Keeps the messages of one channel in the order they arrived, although routing each
    takes a few awaits of its own: a message goes on once the previous one of its channel
    has been queued with the service (or dropped). Idle channels keep no state.

    It orders, it does not merge: turning a burst into one turn is the domain's line
    (bot/domain/bursts.py), which a message enters only once routing has decided whether it
    is answered at all (bound? admitted?), in which conversation (a thread, or a conversation
    of its own) and whether it may join a burst; until then only the channel is known."""

    def __init__(self) -> None:
        self._last: dict[int, asyncio.Event] = {}

    @contextlib.asynccontextmanager
    async def turn_of(self, channel_id: int) -> AsyncIterator[asyncio.Event]:
        """Wait for the channel's previous message; yield the event to set once this one is
        queued (it is set on exit at the latest)."""
        previous = self._last.get(channel_id)
        queued = asyncio.Event()
        self._last[channel_id] = queued
        try:
            if previous is not None:
                await previous.wait()
            yield queued
        finally:
            queued.set()
            if self._last.get(channel_id) is queued:
                del self._last[channel_id]


@dataclass(eq=False)
class Inbound:
    """Routes people's messages and edits to the service."""

    client: discord.Client
    service: ConversationService
    conversations: ConversationStore
    turns: TurnStore
    gate: Gate
    options: Callable[[], InboundOptions]
    spawn: Spawn
    autoreply: AutoreplyModes
    unfurls: Unfurls = field(default_factory=Unfurls, init=False)
    _order: ArrivalOrder = field(default_factory=ArrivalOrder, init=False, repr=False)
    _seen: OrderedDict[int, None] = field(default_factory=OrderedDict, init=False, repr=False)
    _watermarks: list[tuple[str, str | None]] = field(default_factory=list, init=False)
    _horizon: datetime = field(default_factory=lambda: datetime.now(UTC), init=False)

    def _me(self) -> int:
        assert self.client.user is not None
        return self.client.user.id

    # -- messages ----------------------------------------------------------------------------

    def receive(self, message: discord.Message) -> None:
        """A message arrived (live or in the catch-up): handle it in its own task, once."""
        if not convert.is_from_person(message, self._me()) or self._already_seen(message.id):
            return
        self.spawn(self._ordered(message), f"message-{message.id}")

    def _already_seen(self, message_id: int) -> bool:
        if message_id in self._seen:
            return True
        self._seen[message_id] = None
        if len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)
        return False

    async def _ordered(self, message: discord.Message) -> None:
        try:
            # Mentions in a channel each start a conversation of their own: nothing to order.
            # A bare channel is a thread that left discord.py's cache: ordered, then restored.
            ordered = discord.Thread | discord.DMChannel | discord.PartialMessageable
            if not isinstance(message.channel, ordered):
                await self.handle(message)
                return
            async with self._order.turn_of(message.channel.id) as queued:
                if await restore_thread(self.client, message):
                    await self.handle(message, queued=queued)
        except StorageError as exc:
            # Routing it needed the database (is the thread bound? the quotas), which stayed
            # away past its tolerance: say so instead of staying silent.
            log.warning("message %s not answered: %s", message.id, exc)
            await say(message, texts.error_text(exc))

    async def handle(
        self, message: discord.Message, *, queued: asyncio.Event | None = None
    ) -> None:
        """Route and answer one message. ``queued`` is set once the message is queued with
        the service."""
        me = self._me()
        options = self.options()
        channel = message.channel
        bound = False
        if isinstance(channel, discord.Thread | discord.DMChannel):
            bound = await self.service.is_bound(str(channel.id))
        # A channel's autoreply mode is read for the messages that do not mention the bot
        # (whether to answer at all); for a mention, once the gate let it through (a
        # refused one costs no read), to answer it in a thread or inline.
        autoreply: Autoreply | None = None
        plain_channel = message.guild is not None and not isinstance(channel, discord.Thread)
        if plain_channel and not convert.mentions(message, me):
            autoreply = await self._channel_mode(message)
        decision = route(
            message,
            me_id=me,
            bound=bound,
            allow_dms=options.allow_dms,
            reply_without_mention=options.reply_without_mention,
            autoreply=autoreply or OFF,
        )
        if decision is Route.IGNORE:
            return
        admission: Admission | Refusal
        if decision is Route.DM_REFUSED:
            admission = self.gate.dms_off(message.author)
        else:
            admission = await self.gate.admit_message(message)
        if isinstance(admission, Refusal):
            log.info("message %s refused", message.id)
            if not admission.silent:
                await say(message, admission.text)
            return
        a_mention = decision is Route.START and autoreply is None
        if a_mention and await self._channel_mode(message) == "inline":
            decision = Route.INLINE
        in_channel = decision in (Route.START, Route.INLINE)
        replied_to = await self._replied_message(message) if in_channel else None
        parent_id: int | None
        scope_id: int | str
        if decision is Route.INLINE:
            continued = await self._inline_conversation(replied_to)
            if continued is not None:
                replied_to = None  # the answer replied to is in the conversation's history
            scope_id = continued or convert.one_off_scope(message.id)
            parent_id, reply_to = channel.id, message.id
        elif decision is Route.START:
            prompt = convert.strip_mentions_of(message.content, me)
            thread = await open_thread(message, prompt, message.author.display_name)
            if isinstance(thread, ThreadRefused):
                await say(message, thread.text)
                return
            scope_id, parent_id, reply_to = thread.id, channel.id, None
        else:
            parent_id = getattr(channel, "parent_id", None)
            scope_id, reply_to = channel.id, message.id
        one_off = decision is Route.INLINE or (
            decision is Route.BIND
            and isinstance(channel, discord.Thread)
            and not may_bind(
                channel,
                message.author.id,
                me,
                manages_threads=isinstance(message.author, discord.Member)
                and channel.permissions_for(message.author).manage_threads,
            )
        )
        if one_off and decision is Route.BIND:
            log.info(
                "message %s answered once: its author may not bind thread %s",
                message.id,
                channel.id,
            )
        # After the thread opened (the person sees the bot at work), before the turn: the
        # media its links unfurl into are part of it.
        message = await self.unfurls.settled(message, options.embed_wait)
        incoming = convert.incoming_from_message(
            message,
            me_id=me,
            scope_id=convert.one_off_scope(message.id)
            if one_off and decision is Route.BIND
            else scope_id,
            parent_channel_id=parent_id,
            reply_to=reply_to,
            replied_to=replied_to,
            one_off=one_off,
        )
        # respond() queues the message before it first suspends: the next message of this
        # channel, let go here, cannot overtake it.
        if queued is not None:
            queued.set()
        await self.service.respond(incoming, admission, batchable=decision is Route.CONTINUE)

    async def _inline_conversation(self, replied_to: discord.Message | None) -> str | None:
        """The scope of the conversation an inline message continues: the one whose answer
        it replies to (each part of an answer replies to the message it answered), else None."""
        if replied_to is None or replied_to.author.id != self._me():
            return None
        ref = replied_to.reference
        conversation: Conversation | None = None
        if ref is not None and ref.message_id is not None:
            conversation = await self._conversation_answering(str(ref.message_id))
        elif (turn_id := _retried_turn(replied_to)) is not None:
            # A status edited into the first part may have lost its reply (a restart); the
            # answer's Retry button names the turn.
            conversation = await self._conversation_of(await self.turns.find_turn(turn_id))
        return None if conversation is None else conversation.scope_id

    async def _conversation_answering(self, source_id: str) -> Conversation | None:
        """The conversation whose turn answered the person's message ``source_id``."""
        return await self._conversation_of(await self.turns.turn_for_source(source_id))

    async def _conversation_of(self, turn: Turn | None) -> Conversation | None:
        return (
            None
            if turn is None
            else await self.conversations.find_conversation(turn.conversation_id)
        )

    async def _answered_inline(self, message: discord.Message) -> bool:
        """Whether a message was posted in an inline autoreply channel."""
        if message.guild is None or isinstance(message.channel, discord.Thread):
            return False
        return await self._channel_mode(message) == "inline"

    async def _channel_mode(self, message: discord.Message) -> Autoreply:
        assert message.guild is not None
        return await self.autoreply.mode(str(message.channel.id), str(message.guild.id))

    async def _replied_message(self, message: discord.Message) -> discord.Message | None:
        ref = message.reference
        if ref is None or ref.message_id is None:
            return None
        if isinstance(ref.resolved, discord.Message):
            return ref.resolved
        try:
            return await message.channel.fetch_message(ref.message_id)
        except discord.HTTPException:
            return None

    # -- edits: answer the latest turn again -------------------------------------------------

    def receive_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        """A message was edited. The bot's own edits (its status message becoming the
        answer) and other bots' are dropped here, before any database work."""
        # Typed as a full message, but an update carries only what changed: read defensively.
        data: Mapping[str, Any] = payload.data
        self.unfurls.updated(payload)
        if "content" not in data or data.get("edited_timestamp") is None:
            return  # Discord added embeds (a link unfurled): not an edit by the person
        author: Mapping[str, Any] = data.get("author") or {}
        if str(author.get("id")) == str(self._me()) or author.get("bot"):
            return
        if data.get("webhook_id") is not None:
            return
        cached = payload.cached_message
        if cached is not None and cached.content == data.get("content"):
            return  # an embed was resolved, not an edit by the person
        self.spawn(self._edited(payload), f"edit-{payload.message_id}")

    async def _edited(self, payload: discord.RawMessageUpdateEvent) -> None:
        message = payload.message
        me = self._me()
        if not convert.is_from_person(message, me):
            return
        scope_id = str(payload.channel_id)
        latest = await self.turns.latest_turn(scope_id)
        if latest is None and isinstance(message.channel, discord.Thread):
            # A mention answered once in a thread it could not bind: its own conversation.
            scope_id = convert.one_off_scope(payload.message_id)
            latest = await self.turns.latest_turn(scope_id)
        elif latest is None and await self._answered_inline(message):
            # Answered inline: the conversation it started or continued.
            answering = await self._conversation_answering(str(payload.message_id))
            if answering is not None:
                scope_id = answering.scope_id
                latest = await self.turns.latest_turn(scope_id)
        if latest is None or latest.source_id != str(payload.message_id):
            return  # only the latest message of a conversation can be redone
        if not await restore_thread(self.client, message):
            return
        if str(message.author.id) != latest.author_id:
            return
        admission = await self.gate.admit_message(message, notice=False)
        if isinstance(admission, Refusal):
            return  # an edit asks for a new model call: access lists and quotas apply
        if not latest.state.settled:
            await self.service.stop(latest.id, message.author.display_name)
        incoming = convert.incoming_from_message(
            message,
            me_id=me,
            scope_id=scope_id,
            parent_channel_id=_parent_of(message.channel),
            reply_to=payload.message_id,
        )
        log.info("message %s edited: answering it again", payload.message_id)
        await self.service.redo(Redo(scope_id, turn_id=latest.id, edited=incoming), admission)

    # -- catching up after downtime ----------------------------------------------------------

    async def note_where_conversations_stand(
        self, owns: Callable[[Conversation], bool] | None = None
    ) -> None:
        """Before the gateway connects: where each active conversation stood, so that the
        catch-up reads on from there (a live message answered meanwhile must not move it).
        Only the conversations ``owns`` says are this process's (its shards') are read."""
        seconds = self.options().catch_up_seconds
        if seconds <= 0:
            return
        horizon = datetime.now(UTC) - timedelta(seconds=seconds)
        self._watermarks = [
            (conversation.scope_id, newest)
            for conversation, newest in await self.conversations.recent_conversations(horizon)
            if owns is None or owns(conversation)
        ]
        self._horizon = horizon

    async def catch_up(self) -> None:
        """Answer messages that arrived in active conversations while the bot was down,
        oldest first, up to ``catch_up_seconds`` old."""
        for scope_id, newest in self._watermarks:
            if not scope_id.isdigit():
                continue  # held through interactions: no channel to read
            after = discord.Object(discord.utils.time_snowflake(self._horizon))
            if newest is not None and newest.isdigit() and int(newest) > after.id:
                after = discord.Object(int(newest))
            try:
                channel = self.client.get_channel(int(scope_id)) or (
                    await self.client.fetch_channel(int(scope_id))
                )
                if not isinstance(channel, discord.Thread | discord.DMChannel):
                    continue
                async for message in channel.history(
                    after=after, oldest_first=True, limit=CATCH_UP_PER_CONVERSATION
                ):
                    self.receive(message)
            except discord.HTTPException as exc:
                log.info("catch-up skipped conversation in %s: %s", scope_id, exc)
        self._watermarks = []
