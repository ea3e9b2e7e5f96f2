"""The Discord client itself, kept thin: the intents it asks for, start-up (commands,
buttons, resuming unfinished turns, the catch-up), listeners that delegate to
:mod:`bot.chat.inbound`, and the lifetime of the tasks it spawns."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import discord

from bot.chat import (
    admin_commands,
    ask_menu,
    commands,
    controls,
    conversation_commands,
    deletions,
    privacy,
    reply_button,
    settings_commands,
    usage,
)
from bot.chat.autoreply import AutoreplyModes
from bot.chat.delivery import TYPING_DELAY, Views
from bot.chat.delivery_core import STATUS_DELAY
from bot.chat.gate import Gate, GateRules
from bot.chat.housekeeping import Housekeeping
from bot.chat.inbound import Inbound, InboundOptions
from bot.chat.interaction_delivery import InteractionViews
from bot.chat.live_interactions import LiveInteractions
from bot.chat.ratelimits import sweep_buckets_on_time
from bot.chat.texts import NO_MENTIONS
from bot.domain.errors import SeedBotError
from bot.domain.models import Conversation
from bot.domain.ports import ConversationStore, TurnStore
from bot.domain.privacy import PrivacyStore
from bot.domain.service import ConversationService

log = logging.getLogger(__name__)


def settle_heap() -> None:
    """Once start-up is done: collect its garbage, then move everything alive (modules,
    the config, the wiring, the guild cache) to the collector's permanent generation, so
    the full collections a busy bot keeps triggering no longer walk it. Measured on the
    bench's 1,000-turn threads: 12-13 -> 10 ms of CPU a turn (SQLite), 10 -> 7 ms
    (PostgreSQL), and far less spread between runs. Objects made later are collected as
    usual; what is frozen is freed by reference counting, just never as cyclic garbage."""
    gc.collect()
    gc.freeze()


VIEWS = Views(stop=controls.stop_view, retry=controls.retry_view)
INTERACTION_VIEWS = InteractionViews(stop=controls.stop_view, reply=reply_button.reply_view)


@dataclass(frozen=True, slots=True)
class ChatOptions:
    """What the Discord layer needs from the config."""

    inbound: InboundOptions = field(default_factory=InboundOptions)
    gate: GateRules = field(default_factory=GateRules)
    status_delay: float = STATUS_DELAY
    typing_delay: float = TYPING_DELAY
    dev_guild_id: int | None = None
    sync_commands: bool = False
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None
    guild_ready_timeout: float = 2.0
    # Traces the client's HTTP session (the metrics count its REST requests).
    http_trace: aiohttp.TraceConfig | None = None


def intents_for() -> discord.Intents:
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


class SeedBot(discord.AutoShardedClient):
    """The bot. Every message is handled in its own task so the gateway never waits for the
    model; the service answers the messages of one conversation in arrival order.

    Built in two steps by the entry point, which owns every lifetime: the client first (the
    deliveries need its REST connection), then :meth:`install` with the service and gate."""

    def __init__(self, options: ChatOptions) -> None:
        # discord.py's signature takes a trace config but not None (its default).
        traced: dict[str, Any] = {}
        if options.http_trace is not None:
            traced["http_trace"] = options.http_trace
        super().__init__(
            intents=intents_for(),
            allowed_mentions=NO_MENTIONS,
            shard_count=options.shard_count,
            shard_ids=list(options.shard_ids) if options.shard_ids else None,  # type: ignore[arg-type]
            max_messages=200,
            guild_ready_timeout=options.guild_ready_timeout,
            **traced,
        )
        self.options = options
        sweep_buckets_on_time(self.http)  # the housekeeping sweeps them instead
        self.tree = commands.SeedTree(self, lambda: self.gate)
        # Interactions whose turns are running where the bot cannot post (their answers go
        # through them): shared with the deliveries by the entry point.
        self.interactions = LiveInteractions(self)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._accepting = True
        self.resumed = asyncio.Event()
        self.caught_up = asyncio.Event()
        # Set by the entry point when there is a config to reload: returns the problems found
        # (nothing applied then), or an empty list once the new config is in force.
        self.reload_config: Callable[[], Awaitable[list[str]]] | None = None
        self._service: ConversationService | None = None
        self._gate: Gate | None = None
        self._inbound: Inbound | None = None
        self.autoreply = AutoreplyModes(lambda: self.service)
        self._privacy: PrivacyStore | None = None
        self._conversations: ConversationStore | None = None
        self._turns: TurnStore | None = None
        self._housekeeping: asyncio.Task[None] | None = None

    def install(
        self,
        service: ConversationService,
        gate: Gate,
        privacy: PrivacyStore,
        conversations: ConversationStore,
        turns: TurnStore,
    ) -> None:
        """Give the bot what it answers with (before it starts)."""
        self._service = service
        self._gate = gate
        self._privacy = privacy
        self._conversations = conversations
        self._turns = turns
        self._inbound = Inbound(
            self,
            service,
            conversations,
            turns,
            gate,
            lambda: self.options.inbound,
            lambda coro, name: self.spawn(coro, name=name),
            self.autoreply,
        )

    @property
    def service(self) -> ConversationService:
        assert self._service is not None, "install() first"
        return self._service

    @property
    def gate(self) -> Gate:
        assert self._gate is not None, "install() first"
        return self._gate

    @property
    def conversations(self) -> ConversationStore:
        assert self._conversations is not None, "install() first"
        return self._conversations

    @property
    def turns(self) -> TurnStore:
        assert self._turns is not None, "install() first"
        return self._turns

    @property
    def privacy(self) -> PrivacyStore:
        assert self._privacy is not None, "install() first"
        return self._privacy

    @property
    def inbound(self) -> Inbound:
        assert self._inbound is not None, "install() first"
        return self._inbound

    @property
    def allow_dms(self) -> bool:
        return self.options.inbound.allow_dms

    # -- start-up ----------------------------------------------------------------------------

    async def setup_hook(self) -> None:
        # Not one of the spawned tasks: those are turns, which drain and idle() wait for.
        self._housekeeping = asyncio.create_task(
            Housekeeping(self, self.service.slots).run(), name="housekeeping"
        )
        settings_commands.register(self.tree, self)
        conversation_commands.register(self.tree, self)
        admin_commands.register(self.tree, self)
        ask_menu.register(self.tree, self)
        privacy.register(self.tree, self)
        usage.register(self.tree, self)
        self.add_dynamic_items(
            *controls.DYNAMIC_ITEMS, reply_button.ReplyButton, *privacy.DYNAMIC_ITEMS
        )
        if self.options.sync_commands:
            synced = await self.tree.sync()
            log.info("synced %d global application commands", len(synced))
        if self.options.dev_guild_id:
            guild = discord.Object(self.options.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to dev guild %s", len(synced), guild.id)
        # Before the gateway connects: where each active conversation stood, then queue the
        # unfinished turns (REST works already), ahead of anything new.
        await self.inbound.note_where_conversations_stand(self.owns)
        try:
            count = await self.service.resume_unfinished(
                lambda c: self.spawn(c, name="resume"), owns=self.owns
            )
            if count:
                log.info("resuming %d unfinished turns", count)
        finally:
            self.resumed.set()

    def owns(self, conversation: Conversation) -> bool:
        """Whether ``conversation`` belongs to a shard this process runs (Discord sends a
        server's events to shard ``(guild_id >> 22) % shard_count``; DMs to shard 0). Every
        conversation does when this process runs all the shards."""
        ids, count = self.options.shard_ids, self.options.shard_count
        if not ids or not count:
            return True
        guild_id = conversation.guild_id
        shard = (int(guild_id) >> 22) % count if guild_id and guild_id.isdigit() else 0
        return shard in ids

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if isinstance(exc, SeedBotError):
                # A failure the bot knows (e.g. the database away past its tolerance): one
                # line, not a traceback.
                log.warning("task %s failed: %s", task.get_name(), exc)
            else:
                log.error("task %s failed", task.get_name(), exc_info=exc)

    async def idle(self) -> None:
        """Return once no task the bot spawned is running (turns, resumes, the catch-up)."""
        while pending := [t for t in self._tasks if not t.done()]:
            await asyncio.wait(pending)

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
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        await self.drain(0)
        if self._service is not None:
            await self._service.settle()
        await super().close()

    # -- listeners ---------------------------------------------------------------------------

    async def on_ready(self) -> None:
        assert self.user is not None
        log.info("connected as %s (id %s) to %d servers", self.user, self.user.id, len(self.guilds))
        if not self.caught_up.is_set():
            self.spawn(self._catch_up(), name="catch-up")

    async def _catch_up(self) -> None:
        try:
            await self.inbound.catch_up()
        finally:
            self.caught_up.set()
            settle_heap()

    async def on_message(self, message: discord.Message) -> None:
        if self._accepting and self.user is not None:
            self.inbound.receive(message)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if self._accepting:
            reply_button.handle_submission(interaction)

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        if self._accepting and self.user is not None:
            self.inbound.receive_edit(payload)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        if self._accepting:
            self.spawn(
                deletions.forget_deleted(self, payload.channel_id, [payload.message_id]),
                name="message-deleted",
            )

    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        if self._accepting:
            self.spawn(
                deletions.forget_deleted(self, payload.channel_id, payload.message_ids),
                name="messages-deleted",
            )

    async def is_owner(self, user: discord.abc.User) -> bool:
        """Whether ``user`` owns the application (or is on its team)."""
        app = self.application or await self.application_info()
        if app.team is not None:
            return any(member.id == user.id for member in app.team.members)
        return app.owner.id == user.id
