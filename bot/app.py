"""Wiring: builds every long-lived resource from the config inside one exit stack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from bot.chat.client import ChatOptions, SeedBot
from bot.chat.endpoints import point_discord_at
from bot.chat.media import DiscordMedia
from bot.config import Config
from bot.domain.access import AccessPolicy
from bot.domain.conversation import AttachmentLimits
from bot.domain.service import ConversationService, Quota, ServiceConfig
from bot.fal.client import FalClient
from bot.fal.settings import FalSettings
from bot.storage.engine import create_engine
from bot.storage.migrate import ensure_schema
from bot.storage.repository import SqlStore

log = logging.getLogger(__name__)


def fal_settings(config: Config) -> FalSettings:
    return FalSettings(
        key=config.fal.key.get(),
        endpoint=config.fal.endpoint,
        queue_base=config.fal.queue_base,
        rest_base=config.fal.rest_base,
        connect_timeout=config.fal.connect_timeout,
    )


def service_config(config: Config) -> ServiceConfig:
    limits, att = config.limits, config.attachments
    return ServiceConfig(
        defaults=config.model.settings(),
        context_budget_tokens=config.model.context_budget_tokens,
        attachment_limits=AttachmentLimits(
            max_image_bytes=att.max_image_bytes,
            max_video_bytes=att.max_video_bytes,
            max_text_bytes=att.max_text_bytes,
        ),
        attachment_mode=config.fal.attachment_mode,
        max_data_uri_bytes=att.max_data_uri_bytes,
        turn_timeout=config.fal.turn_timeout,
        max_in_flight=limits.max_in_flight,
        user_quota=Quota(limits.user_requests, limits.user_window_seconds),
        guild_quota=Quota(limits.guild_requests, limits.guild_window_seconds),
    )


def chat_options(config: Config, *, sync_commands: bool = False) -> ChatOptions:
    d, a = config.discord, config.access
    return ChatOptions(
        allow_dms=d.allow_dms,
        reply_without_mention=d.reply_without_mention,
        access=AccessPolicy(
            allow_users=frozenset(a.allow_users),
            deny_users=frozenset(a.deny_users),
            allow_roles=frozenset(a.allow_roles),
            deny_roles=frozenset(a.deny_roles),
            allow_channels=frozenset(a.allow_channels),
            deny_channels=frozenset(a.deny_channels),
            allow_guilds=frozenset(a.allow_guilds),
            deny_guilds=frozenset(a.deny_guilds),
        ),
        denied_reply=a.denied_reply,
        dev_guild_id=int(d.dev_guild_id) if d.dev_guild_id else None,
        sync_commands=sync_commands,
        shard_count=d.shard_count or None,
        shard_ids=tuple(int(s) for s in d.shard_ids) or None,
    )


@dataclass
class App:
    config: Config
    session: aiohttp.ClientSession
    store: SqlStore
    model: FalClient
    service: ConversationService
    bot: SeedBot


@contextlib.asynccontextmanager
async def build_app(
    config: Config, *, sync_commands: bool = False, **chat_overrides: Any
) -> AsyncIterator[App]:
    """Every resource of a running bot, opened in order and closed in reverse.
    ``chat_overrides`` replace fields of the Discord layer's options (tests use it)."""
    async with contextlib.AsyncExitStack() as stack:
        await ensure_schema(config.database.url, auto_migrate=config.database.should_auto_migrate)
        engine = create_engine(config.database.url)
        stack.push_async_callback(engine.dispose)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        )
        store = SqlStore(engine)
        model = FalClient(session, fal_settings(config))
        media = DiscordMedia(session, config.discord.cdn_hosts)
        service = ConversationService(store, model, media, service_config(config))
        point_discord_at(config.discord.api_base, config.discord.gateway_url)
        options = replace(chat_options(config, sync_commands=sync_commands), **chat_overrides)
        bot = SeedBot(service, options)
        stack.push_async_callback(bot.close)
        yield App(config, session, store, model, service, bot)


async def run_bot(config: Config, *, sync_commands: bool = False) -> None:
    """Run until SIGINT/SIGTERM; then drain in-flight turns for the grace period."""
    async with build_app(config, sync_commands=sync_commands) as app:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        runner = asyncio.create_task(app.bot.start(config.discord.token.get()), name="discord")
        stopper = asyncio.create_task(stop.wait(), name="stop-signal")
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            log.info("shutting down")
            await app.bot.drain(config.limits.shutdown_grace_seconds)
            await app.bot.close()
        stopper.cancel()
        await runner  # re-raises what ended the client (bad token, missing intent…)
