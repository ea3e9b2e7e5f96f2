"""The Discord client: turns gateway events into service calls."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import discord

from bot.chat import convert, render
from bot.chat.buttons import RetryButton, StopButton
from bot.chat.convert import Route
from bot.chat.delivery import NO_MENTIONS, ChannelDelivery, DeliveryHooks, render_name
from bot.chat.texts import error_text
from bot.domain.access import AccessPolicy, denial_reason
from bot.domain.conversation import AttachmentLimits, plan_attachments
from bot.domain.errors import QuotaExceeded
from bot.domain.models import Attachment, Incoming, Turn
from bot.domain.service import ConversationService, StopResult

log = logging.getLogger(__name__)

DM_REFUSAL = "Direct messages are turned off for this bot. Mention me in a server channel instead."
SEEN_LIMIT = 4096  # message ids remembered to drop duplicates (catch-up vs. live events)


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
    catch_up_seconds: float = 3600.0


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
    """The bot. Every message is handled in its own task so the gateway never waits for the
    model; the service answers the messages of one conversation in arrival order."""

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
        from bot.chat.commands import SeedTree

        self.tree = SeedTree(self)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._accepting = True
        self.resumed = asyncio.Event()
        self.caught_up = asyncio.Event()
        # Set by the entry point when there is a config to reload: returns the problems found
        # (nothing applied then), or an empty list once the new config is in force.
        self.reload_config: Callable[[], Awaitable[list[str]]] | None = None
        # Per thread or DM channel: set once the latest message has been queued with the
        # service (or dropped), so the next message waits for it (arrival order).
        self._arrivals: dict[int, asyncio.Event] = {}
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._watermarks: list[tuple[str, str | None]] = []
        self._horizon = datetime.now(UTC)

    # -- start-up ----------------------------------------------------------------------------

    async def setup_hook(self) -> None:
        from bot.chat.commands import register

        register(self)
        self.add_dynamic_items(StopButton, RetryButton)
        if self.options.sync_commands:
            synced = await self.tree.sync()
            log.info("synced %d global application commands", len(synced))
        if self.options.dev_guild_id:
            guild = discord.Object(self.options.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to dev guild %s", len(synced), guild.id)
        # Before the gateway connects: where each active conversation stood (catch-up reads
        # on from there; a live message answered meanwhile must not move it), then queue the
        # unfinished turns (REST works already), ahead of anything new.
        if self.options.catch_up_seconds > 0:
            horizon = datetime.now(UTC) - timedelta(seconds=self.options.catch_up_seconds)
            self._watermarks = [
                (conversation.scope_id, newest)
                for conversation, newest in await self.service.recent_conversations(horizon)
            ]
            self._horizon = horizon
        try:
            count = await self.service.resume_unfinished(
                self.delivery_for_turn, lambda coro: self.spawn(coro, name="resume")
            )
            if count:
                log.info("resuming %d unfinished turns", count)
        finally:
            self.resumed.set()

    def hooks(self) -> DeliveryHooks:
        return DeliveryHooks(
            on_status=self.service.record_status_message,
            on_parts=self.service.record_reply_parts,
        )

    def delivery_for_turn(self, turn: Turn) -> ChannelDelivery:
        channel = self.get_partial_messageable(int(turn.reply_channel_id))
        # A thread opened on a message has that message's id; the answer does not reply to
        # it from inside the thread (as a live turn does not).
        replies = turn.source_id.isdigit() and turn.source_id != turn.reply_channel_id
        return self.delivery(channel, reply_to=int(turn.source_id) if replies else None)

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
        await self.service.settle()
        await super().close()

    # -- messages ----------------------------------------------------------------------------

    async def on_ready(self) -> None:
        assert self.user is not None
        log.info("connected as %s (id %s) to %d servers", self.user, self.user.id, len(self.guilds))
        if not self.caught_up.is_set():
            self.spawn(self._catch_up(), name="catch-up")

    async def on_message(self, message: discord.Message) -> None:
        if not self._accepting or self.user is None:
            return
        if not convert.is_from_person(message, self.user.id) or self._already_seen(message.id):
            return
        self.spawn(self._ordered(message), name=f"message-{message.id}")

    def _already_seen(self, message_id: int) -> bool:
        if message_id in self._seen:
            return True
        self._seen[message_id] = None
        if len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)
        return False

    async def _ordered(self, message: discord.Message) -> None:
        """Handle a message after the previous one of the same thread or DM has been queued
        with the service: turns of one conversation run in the order they arrived, even
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
        """Route and answer one message. ``queued`` is set once the message is queued with
        the service."""
        assert self.user is not None
        me = self.user.id
        channel = message.channel
        bound = False
        if isinstance(channel, discord.Thread | discord.DMChannel):
            bound = await self.service.is_bound(str(channel.id))
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
        if not await self._allowed(message, guild_id):
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
        # respond() queues the message before it first suspends: the next message of this
        # channel, let go here, cannot overtake it.
        if queued is not None:
            queued.set()
        await self.service.respond(
            incoming,
            self.delivery_factory(target, start_thread=reply_to is None),
            batchable=decision is Route.CONTINUE,
        )

    async def _allowed(self, message: discord.Message, guild_id: int | None) -> bool:
        reason = denial_reason(
            self.options.access, convert.requester(message.author, message.channel, guild_id)
        )
        if reason is not None:
            log.info("message %s refused by access lists", message.id)
            self.service.observer.turn_refused("access")
            if self.options.denied_reply == "notice":
                await self._say(message, f"Sorry, {reason}.")
            return False
        try:
            await self.service.admit(str(message.author.id), str(guild_id) if guild_id else None)
        except QuotaExceeded as exc:
            await self._say(message, error_text(exc))
            return False
        return True

    def delivery(
        self,
        channel: discord.abc.Messageable,
        *,
        reply_to: int | None,
        attachments: tuple[Attachment, ...] = (),
    ) -> ChannelDelivery:
        return ChannelDelivery(
            channel,
            reply_to=reply_to,
            status_delay=self.options.status_delay,
            attachment_names=attachment_names(attachments, self.service.config.attachment_limits),
            hooks=self.hooks(),
        )

    def delivery_factory(
        self, channel: discord.abc.Messageable, *, start_thread: bool = False
    ) -> Callable[[Incoming], ChannelDelivery]:
        """Deliveries into ``channel`` for the turn made of a message (or batch): the answer
        replies to the batch's last message, except in a thread just opened on it."""

        def make(incoming: Incoming) -> ChannelDelivery:
            replies = not start_thread and incoming.source_id.isdigit()
            return self.delivery(
                channel,
                reply_to=int(incoming.source_id) if replies else None,
                attachments=incoming.attachments,
            )

        return make

    async def run_turn(
        self,
        incoming: Incoming,
        channel: discord.abc.Messageable,
        *,
        reply_to: int | None,
        batchable: bool = False,
    ) -> None:
        """Answer ``incoming`` (built by a slash command) in ``channel``."""
        delivery = self.delivery(channel, reply_to=reply_to, attachments=incoming.attachments)
        await self.service.respond(incoming, lambda _incoming: delivery, batchable=batchable)

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

    async def is_owner(self, user: discord.abc.User) -> bool:
        """Whether ``user`` owns the application (or is on its team)."""
        app = self.application or await self.application_info()
        if app.team is not None:
            return any(member.id == user.id for member in app.team.members)
        return app.owner.id == user.id

    # -- edits: answer the latest turn again -------------------------------------------------

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        if not self._accepting or self.user is None or "content" not in payload.data:
            return
        self.spawn(self._edited(payload), name=f"edit-{payload.message_id}")

    async def _edited(self, payload: discord.RawMessageUpdateEvent) -> None:
        assert self.user is not None
        latest = await self.service.latest_turn(str(payload.channel_id))
        if latest is None or latest.source_id != str(payload.message_id):
            return  # only the latest message of a conversation can be redone
        message = payload.message
        if not convert.is_from_person(message, self.user.id):
            return
        if str(message.author.id) != latest.author_id:
            return
        guild_id = message.guild.id if message.guild else None
        if not await self._allowed(message, guild_id):
            return  # an edit asks for a new model call: access lists and quotas apply
        cached = payload.cached_message
        if cached is not None and cached.content == message.content:
            return  # an embed was resolved, not an edit by the person
        if not latest.state.settled:
            await self.service.stop(latest.id, message.author.display_name)
        incoming = convert.to_incoming(
            message,
            me_id=self.user.id,
            scope_id=payload.channel_id,
            parent_channel_id=getattr(message.channel, "parent_id", None),
        )
        channel = self.get_partial_messageable(payload.channel_id)
        log.info("message %s edited: answering it again", payload.message_id)
        await self.service.redo(
            str(payload.channel_id),
            self.delivery_factory(channel),
            incoming,
            turn_id=latest.id,
            edited=True,
        )

    # -- buttons -----------------------------------------------------------------------------

    async def _may_control(self, interaction: discord.Interaction, turn: Turn) -> bool:
        if str(interaction.user.id) == turn.author_id:
            return True
        return interaction.guild_id is not None and interaction.permissions.manage_threads

    async def on_stop_pressed(self, interaction: discord.Interaction, turn_id: int) -> None:
        turn = await self.service.get_turn(turn_id)
        if turn is None:
            await _ephemeral(interaction, "This answer is no longer known to me.")
            return
        if not await self._may_control(interaction, turn):
            await _ephemeral(
                interaction,
                "⛔ Only the person who asked, or members who may manage threads, can stop it.",
            )
            return
        # Acknowledge within Discord's 3 s, whatever fal's cancel takes.
        await interaction.response.defer()
        result = await self.service.stop(turn_id, interaction.user.display_name)
        if result is StopResult.STOPPED:
            with contextlib.suppress(discord.HTTPException):
                await interaction.edit_original_response(
                    content=f"⏹️ Stopped by {render_name(interaction.user.display_name)}.",
                    view=None,
                )
        else:
            await _ephemeral(interaction, "This answer has already finished.")

    async def on_retry_pressed(self, interaction: discord.Interaction, turn_id: int) -> None:
        turn = await self.service.get_turn(turn_id)
        latest = await self.service.latest_turn(turn.reply_channel_id) if turn else None
        if turn is None or latest is None or latest.id != turn.id:
            await _ephemeral(interaction, "Only the latest answer in a thread can be retried.")
            return
        if not turn.state.settled:
            await _ephemeral(interaction, "This answer is still being written.")
            return
        if not await self._may_control(interaction, turn):
            await _ephemeral(
                interaction,
                "⛔ Only the person who asked, or members who may manage threads, can retry.",
            )
            return
        await self.retry(interaction, turn)

    async def retry(self, interaction: discord.Interaction, turn: Turn) -> None:
        """Answer ``turn`` (the latest) again. A new model call: it counts against the
        quotas like a message."""
        guild = str(interaction.guild_id) if interaction.guild_id else None
        try:
            await self.service.admit(str(interaction.user.id), guild)
        except QuotaExceeded as exc:
            await _ephemeral(interaction, error_text(exc))
            return
        if interaction.type is discord.InteractionType.component:
            await interaction.response.defer()  # the button: acknowledged quietly
        else:
            await _ephemeral(interaction, "🔁 Answering again…")
        channel = self.get_partial_messageable(int(turn.reply_channel_id))
        requester = Incoming(
            source_id=turn.source_id,
            scope_id=turn.reply_channel_id,
            author_id=turn.author_id,
            author_name=turn.author_name,
            text=turn.prompt,
        )
        self.spawn(
            self.service.redo(
                turn.reply_channel_id, self.delivery_factory(channel), requester, turn_id=turn.id
            ),
            name=f"retry-{turn.id}",
        )

    # -- catching up after downtime ----------------------------------------------------------

    async def _catch_up(self) -> None:
        """Answer messages that arrived in active conversations while the bot was down,
        oldest first, up to ``catch_up_seconds`` old, from where each conversation stood
        when this process started."""
        try:
            for scope_id, newest in self._watermarks:
                after = discord.Object(discord.utils.time_snowflake(self._horizon))
                if newest is not None and newest.isdigit() and int(newest) > after.id:
                    after = discord.Object(int(newest))
                try:
                    channel = self.get_channel(int(scope_id)) or (
                        await self.fetch_channel(int(scope_id))
                    )
                    if not isinstance(channel, discord.Thread | discord.DMChannel):
                        continue
                    async for message in channel.history(after=after, oldest_first=True, limit=50):
                        await self.on_message(message)
                except discord.HTTPException as exc:
                    log.info("catch-up skipped conversation in %s: %s", scope_id, exc)
        finally:
            self._watermarks = []
            self.caught_up.set()


async def _ephemeral(interaction: discord.Interaction, text: str) -> None:
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
    else:
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
