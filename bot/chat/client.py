"""The Discord client: turns gateway events into service calls."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import discord
from discord import app_commands

from bot.chat import convert, render
from bot.chat.convert import Route
from bot.chat.delivery import NO_MENTIONS, ChannelDelivery
from bot.chat.texts import error_text
from bot.domain.access import AccessPolicy, denial_reason
from bot.domain.conversation import AttachmentLimits, plan_attachments
from bot.domain.errors import QuotaExceeded
from bot.domain.models import Attachment, Incoming, Turn
from bot.domain.service import ConversationService

log = logging.getLogger(__name__)

DM_REFUSAL = "Direct messages are turned off for this bot. Mention me in a server channel instead."


@dataclass(frozen=True, slots=True)
class ChatOptions:
    """What the Discord layer needs from the config."""

    allow_dms: bool = False
    reply_without_mention: bool = True
    status_delay: float = 2.0
    access: AccessPolicy = field(default_factory=AccessPolicy)
    denied_reply: str = "notice"
    dev_guild_id: int | None = None
    sync_commands: bool = False
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None
    guild_ready_timeout: float = 2.0


def intents_for(options: ChatOptions) -> discord.Intents:
    """Only the intents the bot uses: guilds (channels, threads), guild messages with their
    content (privileged: enable "Message Content Intent" in the developer portal), and DMs.
    DMs are received even when they are not allowed, so the sender gets the refusal rather
    than silence."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.message_content = True
    intents.dm_messages = True
    return intents


def attachment_names(
    attachments: tuple[Attachment, ...], limits: AttachmentLimits
) -> dict[str, list[str]]:
    plan = plan_attachments(attachments, limits)
    return {
        "image_urls": [a.filename for a in plan.images],
        "video_urls": [a.filename for a in plan.videos],
    }


class SeedBot(discord.AutoShardedClient):
    """The bot. Every turn runs in its own task so the gateway never waits for the model."""

    def __init__(self, service: ConversationService, options: ChatOptions) -> None:
        super().__init__(
            intents=intents_for(options),
            allowed_mentions=NO_MENTIONS,
            shard_count=options.shard_count,
            shard_ids=list(options.shard_ids) if options.shard_ids else None,  # type: ignore[arg-type]
            max_messages=200,
            guild_ready_timeout=options.guild_ready_timeout,
        )
        self.service = service
        self.options = options
        self.tree = app_commands.CommandTree(self)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._accepting = True
        self.resumed = asyncio.Event()
        # Per thread or DM channel: set once the latest message's turn is queued on the
        # conversation's lock (or dropped), so the next message waits for it (arrival order).
        self._arrivals: dict[int, asyncio.Event] = {}

    # -- start-up ----------------------------------------------------------------------------

    async def setup_hook(self) -> None:
        from bot.chat.commands import register

        register(self)
        if self.options.sync_commands:
            synced = await self.tree.sync()
            log.info("synced %d global application commands", len(synced))
        if self.options.dev_guild_id:
            guild = discord.Object(self.options.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to dev guild %s", len(synced), guild.id)
        # REST works before the gateway connects: resume unfinished turns right away.
        self.spawn(self._resume(), name="resume")

    async def _resume(self) -> None:
        try:
            count = await self.service.resume_unfinished(self.delivery_for_turn)
            if count:
                log.info("resumed %d unfinished turns", count)
        finally:
            self.resumed.set()

    def delivery_for_turn(self, turn: Turn) -> ChannelDelivery:
        channel = self.get_partial_messageable(int(turn.reply_channel_id))
        return ChannelDelivery(
            channel,
            reply_to=int(turn.source_id) if turn.source_id.isdigit() else None,
            status_delay=self.options.status_delay,
        )

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task %s failed", task.get_name(), exc_info=exc)

    # -- shutdown ----------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Stop taking new turns; let running ones finish for up to ``grace`` seconds; cancel
        the rest (they stay stored and resume on the next start)."""
        self._accepting = False
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            if grace > 0:
                log.info("waiting up to %.0fs for %d turns in flight", grace, len(pending))
                _, still = await asyncio.wait(pending, timeout=grace)
            else:
                still = set(pending)
            for task in still:
                task.cancel()
            for task in still:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def close(self) -> None:
        """Close the connection after cancelling the turns still running: they stay stored
        and resume on the next start, and none is left holding a database connection."""
        self._accepting = False
        await self.drain(0)
        await super().close()

    # -- messages ----------------------------------------------------------------------------

    async def on_ready(self) -> None:
        assert self.user is not None
        log.info("connected as %s (id %s) to %d servers", self.user, self.user.id, len(self.guilds))

    async def on_message(self, message: discord.Message) -> None:
        if not self._accepting or self.user is None:
            return
        if not convert.is_from_person(message, self.user.id):
            return
        self.spawn(self._ordered(message), name=f"message-{message.id}")

    async def _ordered(self, message: discord.Message) -> None:
        """Handle a message after the previous one of the same thread or DM has reached the
        conversation's lock: turns of one conversation run in the order they arrived, even
        though routing each one takes a few awaits of its own. (Mentions in a channel each
        start a conversation of their own: nothing to order.)"""
        if not isinstance(message.channel, discord.Thread | discord.DMChannel):
            await self.handle_message(message)
            return
        key = message.channel.id
        previous = self._arrivals.get(key)
        queued = asyncio.Event()
        self._arrivals[key] = queued
        try:
            if previous is not None:
                await previous.wait()
            await self.handle_message(message, queued=queued)
        finally:
            queued.set()
            if self._arrivals.get(key) is queued:
                del self._arrivals[key]

    async def handle_message(
        self, message: discord.Message, *, queued: asyncio.Event | None = None
    ) -> None:
        """Route and answer one message. ``queued`` is set once the turn is waiting on (or
        holds) its conversation's lock."""
        assert self.user is not None
        me = self.user.id
        channel = message.channel
        bound = False
        if isinstance(channel, discord.Thread | discord.DMChannel):
            bound = await self.service.conversation_for_scope(str(channel.id)) is not None
        decision = convert.route(
            message,
            me_id=me,
            bound=bound,
            allow_dms=self.options.allow_dms,
            reply_without_mention=self.options.reply_without_mention,
        )
        if decision is Route.IGNORE:
            return
        if decision is Route.DM_REFUSED:
            await self._say(message, DM_REFUSAL)
            return
        guild_id = message.guild.id if message.guild else None
        reason = denial_reason(
            self.options.access, convert.requester(message.author, channel, guild_id)
        )
        if reason is not None:
            log.info("message %s refused by access lists", message.id)
            if self.options.denied_reply == "notice":
                await self._say(message, f"Sorry, {reason}.")
            return
        try:
            await self.service.admit(str(message.author.id), str(guild_id) if guild_id else None)
        except QuotaExceeded as exc:
            await self._say(message, error_text(exc))
            return

        replied_to = await self._replied_message(message) if decision is Route.START else None
        parent_id: int | None
        reply_to: int | None
        if decision is Route.START:
            thread = await self._open_thread(message)
            if thread is None:
                return
            target: discord.abc.Messageable = thread
            scope_id, parent_id, reply_to = thread.id, channel.id, None
        else:
            target = channel
            scope_id = channel.id
            parent_id = getattr(channel, "parent_id", None)
            reply_to = message.id
        incoming = convert.to_incoming(
            message,
            me_id=me,
            scope_id=scope_id,
            parent_channel_id=parent_id,
            replied_to=replied_to,
        )
        # run_turn does not suspend before it queues on the conversation's lock (asyncio locks
        # are FIFO), so the next message of this channel, let go here, cannot overtake it.
        if queued is not None:
            queued.set()
        await self.run_turn(incoming, target, reply_to=reply_to)

    async def run_turn(
        self, incoming: Incoming, channel: discord.abc.Messageable, *, reply_to: int | None
    ) -> None:
        delivery = ChannelDelivery(
            channel,
            reply_to=reply_to,
            status_delay=self.options.status_delay,
            attachment_names=attachment_names(
                incoming.attachments, self.service.config.attachment_limits
            ),
        )
        delivery.start()
        try:
            await self.service.respond(incoming, delivery)
        finally:
            await delivery.close()

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

    async def _open_thread(self, message: discord.Message) -> discord.Thread | None:
        assert self.user is not None
        name = render.thread_name(
            convert.strip_mentions_of(message.content, self.user.id),
            fallback=f"Chat with {message.author.display_name}",
        )
        try:
            return await message.create_thread(name=name, auto_archive_duration=1440)
        except discord.Forbidden as exc:
            log.warning(
                "cannot create a thread in channel %s: missing permission Create Public Threads"
                " (%s)",
                message.channel.id,
                exc.text,
            )
            await self._say(
                message,
                "⚠️ I can't start a thread here: I need the **Create Public Threads** permission "
                "in this channel.",
            )
        except discord.HTTPException as exc:
            log.warning("thread creation failed in %s: %s", message.channel.id, exc)
            await self._say(message, "⚠️ Discord refused to create a thread here. Try again?")
        return None

    async def _say(self, message: discord.Message, text: str) -> None:
        """A short reply to a message, swallowing (and logging) permission errors."""
        try:
            await message.reply(text, allowed_mentions=NO_MENTIONS, mention_author=False)
        except discord.HTTPException as exc:
            log.warning("cannot reply in channel %s: %s", message.channel.id, exc)
