"""Wiring: builds every long-lived resource from the config inside one exit stack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import discord
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.chat.bot import INTERACTION_VIEWS, VIEWS, ChatOptions, SeedBot
from bot.chat.delivery import ChannelDeliveries
from bot.chat.endpoints import point_discord_at
from bot.chat.gate import Gate, GateRules
from bot.chat.inbound import InboundOptions
from bot.chat.interaction_delivery import Deliveries
from bot.chat.media import DiscordMedia
from bot.chat.sealing import TokenSeal
from bot.config import Config
from bot.domain.access import AccessPolicy
from bot.domain.attachments import AttachmentLimits, AttachmentPolicy, Readers
from bot.domain.costs import Budgets, Pricing
from bot.domain.errors import ConfigError, ModelError, SeedBotError
from bot.domain.links import LinkPolicy
from bot.domain.notices import RefusalNotices
from bot.domain.privacy import Retention, RetentionSweeper
from bot.domain.quotas import Quota, QuotaRules, Quotas
from bot.domain.service import ConversationService, ServiceConfig
from bot.fal.client import FalClient
from bot.fal.settings import FalSettings
from bot.gifs import gif_as_mp4
from bot.journal import database_tag, open_journal
from bot.ops.health import HealthServer, database_check, parse_listen, shard_check
from bot.ops.logs import describe_exception, hide_discord_secrets
from bot.ops.metrics import Metrics
from bot.storage.engine import create_engine, sqlite_path
from bot.storage.migrate import ensure_schema, unreachable
from bot.storage.privacy import SqlPrivacy
from bot.storage.repositories import Repositories, sql_repositories
from bot.web.pages import Network, PageFetcher, private_hosts

log = logging.getLogger(__name__)

# Discord unreachable at start: wait this long before the first retry, doubling up to the cap.
LOGIN_RETRY_FIRST, LOGIN_RETRY_MAX = 1.0, 60.0
LOGIN_TIMEOUT = 30.0


def fal_settings(config: Config) -> FalSettings:
    return FalSettings(
        key=config.fal.key.get(),
        endpoint=config.fal.endpoint,
        queue_base=config.fal.queue_base,
        rest_base=config.fal.rest_base,
        connect_timeout=config.fal.connect_timeout,
        store_io=config.privacy.fal_store_io,
        upload_lifetime=retention(config).seconds,
    )


def retention(config: Config) -> Retention:
    limits = config.limits
    return Retention(
        days=config.privacy.retention_days,
        usage_window_seconds=max(limits.user_window_seconds, limits.guild_window_seconds),
    )


def journal_path(database_url: str) -> Path:
    """Where the submission journal lives: beside the SQLite file, or in the working
    directory (one per database) for PostgreSQL."""
    database = sqlite_path(database_url)
    if database is not None:
        return database.with_name(database.name + ".submissions")
    return Path(f"seed-bot-{database_tag(database_url)}.submissions")


def service_config(config: Config) -> ServiceConfig:
    att = config.attachments
    return ServiceConfig(
        defaults=config.model.settings(),
        personas=config.personas,
        context_budget_tokens=config.model.context_budget_tokens,
        attachments=AttachmentPolicy(
            limits=AttachmentLimits(
                max_image_bytes=att.max_image_bytes,
                max_video_bytes=att.max_video_bytes,
                max_text_bytes=att.max_text_bytes,
                max_text_files=att.max_text_files,
                max_text_bytes_per_turn=att.max_text_bytes_per_turn,
            ),
            mode=config.fal.attachment_mode,
            max_data_uri_bytes=att.max_data_uri_bytes,
            max_files_in_flight=att.max_files_in_flight,
            max_bytes_in_flight=att.max_bytes_in_flight,
            links=LinkPolicy(
                read_pages=config.links.read_pages,
                max_pages=config.links.max_pages,
                max_page_bytes=config.links.max_page_bytes,
            ),
        ),
        turn_timeout=config.fal.turn_timeout,
        max_in_flight=config.limits.max_in_flight,
        batch_window=config.discord.batch_window_seconds,
    )


def quota_rules(config: Config) -> QuotaRules:
    limits = config.limits
    return QuotaRules(
        user=Quota(limits.user_requests, limits.user_window_seconds),
        guild=Quota(limits.guild_requests, limits.guild_window_seconds),
    )


def gate_rules(config: Config) -> GateRules:
    a = config.access
    return GateRules(
        access=AccessPolicy(
            allow_users=frozenset(a.allow_users),
            deny_users=frozenset(a.deny_users),
            allow_roles=frozenset(a.allow_roles),
            deny_roles=frozenset(a.deny_roles),
            allow_channels=frozenset(a.allow_channels),
            deny_channels=frozenset(a.deny_channels),
            allow_guilds=frozenset(a.allow_guilds),
            deny_guilds=frozenset(a.deny_guilds),
            allow_outside_servers=a.allow_outside_servers,
        ),
        denied_reply=a.denied_reply,
    )


def chat_options(config: Config, *, sync_commands: bool = False) -> ChatOptions:
    d = config.discord
    return ChatOptions(
        inbound=InboundOptions(
            allow_dms=d.allow_dms,
            reply_without_mention=d.reply_without_mention,
            catch_up_seconds=d.catch_up_seconds,
            embed_wait=config.links.embed_wait_seconds,
        ),
        gate=gate_rules(config),
        dev_guild_id=int(d.dev_guild_id) if d.dev_guild_id else None,
        sync_commands=sync_commands,
        shard_count=d.shard_count or None,
        shard_ids=tuple(int(s) for s in d.shard_ids) or None,
    )


@dataclass
class App:
    config: Config
    engine: AsyncEngine
    session: aiohttp.ClientSession
    store: Repositories
    model: FalClient
    media: DiscordMedia
    service: ConversationService
    gate: Gate
    bot: SeedBot
    metrics: Metrics
    privacy: SqlPrivacy
    health: HealthServer | None = None
    sweeper: RetentionSweeper | None = None
    pages: PageFetcher | None = None


RESTART_ONLY = (
    ("database", "url"),
    ("discord", "token"),
    ("discord", "api_base"),
    ("discord", "gateway_url"),
    ("discord", "shard_count"),
    ("discord", "shard_ids"),
    ("fal", "key"),
    ("fal", "endpoint"),
    ("fal", "queue_base"),
    ("fal", "rest_base"),
    ("fal", "connect_timeout"),
    ("http", "listen"),
    ("logging", "level"),
    ("logging", "format"),
    ("privacy", "fal_store_io"),
    ("privacy", "retention_days"),
)


def apply_config(app: App, new: Config) -> list[str]:
    """Put a reloaded config in force without reconnecting: limits, defaults, access lists,
    quotas, attachment rules. Returns the changed keys that need a restart (kept as they were)."""
    pending = [
        f"[{section}] {key}"
        for section, key in RESTART_ONLY
        if getattr(getattr(new, section), key) != getattr(getattr(app.config, section), key)
    ]
    app.service.reconfigure(service_config(new))
    app.store.db.policy = replace(
        app.store.db.policy, outage_tolerance=new.database.outage_tolerance_seconds
    )
    app.gate.rules = gate_rules(new)
    app.gate.quotas.rules = quota_rules(new)
    if app.gate.budgets is not None:  # the service holds the same Budgets
        app.gate.budgets.rules = new.budgets.rules()
        app.gate.budgets.pricing = Pricing(new.costs.usd_per_unit)
    old = app.bot.options
    app.bot.options = replace(
        chat_options(new, sync_commands=old.sync_commands),
        status_delay=old.status_delay,
        typing_delay=old.typing_delay,
        guild_ready_timeout=old.guild_ready_timeout,
        shard_count=old.shard_count,
        shard_ids=old.shard_ids,
    )
    app.media.allowed_hosts = frozenset(h.lower() for h in new.discord.cdn_hosts)
    if app.pages is not None:
        app.pages.network = replace(
            app.pages.network, allow_private_hosts=private_hosts(new.links.allow_private_hosts)
        )
    app.config = new
    if pending:
        log.warning("config reloaded; these changes need a restart: %s", ", ".join(pending))
    else:
        log.info("config reloaded")
    return pending


@contextlib.asynccontextmanager
async def build_app(
    config: Config,
    *,
    sync_commands: bool = False,
    reload: Callable[[], Config] | None = None,
    network: Network | None = None,
    **chat_overrides: Any,
) -> AsyncIterator[App]:
    """Every resource of a running bot, opened in order and closed in reverse. ``reload``
    reads the config afresh (SIGHUP, ``/admin reload``). ``network``: how linked pages'
    hosts are resolved and judged (the real internet's rules unless a test passes others).
    ``chat_overrides`` replace fields of the Discord layer's options (tests use it)."""
    hide_discord_secrets()  # also where the CLI's logging set-up did not run
    async with contextlib.AsyncExitStack() as stack:
        await _ensure_schema(config)
        engine = create_engine(config.database.url)
        stack.push_async_callback(engine.dispose)
        metrics = Metrics()
        # Each turn in flight holds a connection for its status stream: size the pool for the
        # in-flight cap (aiohttp's default of 100 would queue turns behind each other).
        connector = aiohttp.TCPConnector(limit=max(100, 2 * config.limits.max_in_flight + 16))
        session = await stack.enter_async_context(
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
            )
        )
        store = sql_repositories(
            engine,
            outage_tolerance=config.database.outage_tolerance_seconds,
            history_tokens=config.model.context_budget_tokens,
        )
        metrics.watch_outage(store.outage)
        store.db.timers.append(metrics.transaction_took)
        model = FalClient(session, fal_settings(config), observer=metrics)
        media = DiscordMedia(session, config.discord.cdn_hosts)
        pages = PageFetcher(
            replace(
                network or Network(),
                allow_private_hosts=private_hosts(config.links.allow_private_hosts),
            )
        )
        stack.push_async_callback(pages.close)
        journal = open_journal(journal_path(config.database.url), config.database.url)
        if journal is not None:
            stack.callback(journal.close)
        point_discord_at(config.discord.api_base, config.discord.gateway_url)
        options = replace(
            chat_options(config, sync_commands=sync_commands),
            http_trace=metrics.discord_trace(),
            **chat_overrides,
        )
        bot = SeedBot(options)
        stack.push_async_callback(bot.close)
        # Interactions answered across a restart: their tokens sealed with a key from the
        # bot's own token, which never goes into the database.
        bot.interactions.keep_in(store.interactions, TokenSeal(config.discord.token.get()))
        await bot.interactions.purge()
        deliveries = Deliveries(
            ChannelDeliveries(
                bot,
                store.turns,
                VIEWS,
                status_delay=options.status_delay,
                typing_delay=options.typing_delay,
            ),
            bot.interactions,
            store.turns,
            INTERACTION_VIEWS,
        )
        budgets = Budgets(store.costs, config.budgets.rules(), Pricing(config.costs.usd_per_unit))
        budgets.observers.append(metrics.cost_settled)
        # One memory of who was told what: a budget refusal the service posts is the gate's
        # too.
        refusals = RefusalNotices()
        service = ConversationService(
            store.conversations,
            store.turns,
            store.settings,
            model,
            media,
            deliveries,
            service_config(config),
            observer=metrics,
            journal=journal,
            costs=budgets,
            outage=store.outage,
            refusals=refusals,
            readers=Readers(pages=pages, gif_to_mp4=gif_as_mp4),
        )
        gate = Gate(
            Quotas(store.usage, quota_rules(config)),
            gate_rules(config),
            observer=metrics,
            budgets=budgets,
            notices=refusals,
        )
        privacy = store.privacy
        bot.install(service, gate, privacy, store.conversations, store.turns)
        metrics.watch_gateway(lambda: bot.latencies)
        metrics.watch_slots(lambda: service.slots.waiting)
        metrics.watch_media(lambda: service.media)
        app = App(
            config, engine, session, store, model, media, service, gate, bot, metrics, privacy
        )
        app.pages = pages
        if retention(config).enabled:
            app.sweeper = RetentionSweeper(privacy, retention(config))
            await stack.enter_async_context(_running(app.sweeper.run(), "retention-sweep"))
        if config.http.listen:
            health = HealthServer(
                metrics,
                [
                    shard_check(bot, options.shard_ids),
                    database_check(engine, outage=store.outage),
                ],
            )
            host, port = parse_listen(config.http.listen)
            try:
                await health.start(host, port)
            except OSError as exc:
                raise SeedBotError(
                    f"[http] listen = {config.http.listen!r}: cannot listen there "
                    f"({describe_exception(exc)})"
                ) from exc
            stack.push_async_callback(health.close)
            app.health = health
        if reload is not None:
            bot.reload_config = partial(reload_app, app, reload)
        yield app


@contextlib.asynccontextmanager
async def _running(coro: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """``coro`` as a background task for the life of the block, cancelled on the way out."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def open_privacy(config: Config) -> AsyncIterator[SqlPrivacy]:
    """People's data alone, for commands that only read or clean it (export, purge)."""
    await _ensure_schema(config)
    engine = create_engine(config.database.url)
    try:
        yield sql_repositories(engine).privacy
    finally:
        await engine.dispose()


async def _ensure_schema(config: Config) -> None:
    """Check (or migrate) the schema; an unreachable database is one ``StorageUnavailable``
    naming it (without its password) and what to check."""
    url = config.database.url
    try:
        await ensure_schema(url, auto_migrate=config.database.should_auto_migrate)
    except (SQLAlchemyError, OSError) as exc:
        raise unreachable(url, exc) from exc


async def reload_app(app: App, reload: Callable[[], Config]) -> list[str]:
    """Read the config again and apply it; on problems keep the running one and return them."""
    try:
        new = reload()
    except ConfigError as exc:
        log.error("config reload refused; keeping the running config:\n%s", exc)
        return exc.problems
    apply_config(app, new)
    return []


async def run_bot(
    config: Config, *, sync_commands: bool = False, reload: Callable[[], Config] | None = None
) -> None:
    """Run until SIGINT/SIGTERM, then drain in-flight turns for the grace period. SIGHUP
    reloads the config."""
    async with build_app(config, sync_commands=sync_commands, reload=reload) as app:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        if reload is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(
                    signal.SIGHUP, lambda: app.bot.spawn(reload_app(app, reload), name="reload")
                )
        # One try, one line: the turns retry fal on their own.
        probe = FalClient(app.session, replace(fal_settings(config), max_attempts=1))
        app.bot.spawn(check_fal(probe), name="fal-check")
        runner = asyncio.create_task(
            _login_then_connect(app.bot, config.discord.token.get(), stop, config.discord.api_base),
            name="discord",
        )
        stopper = asyncio.create_task(stop.wait(), name="stop-signal")
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            log.info("shutting down")
            await app.bot.drain(app.config.limits.shutdown_grace_seconds)
            await app.bot.close()
        stopper.cancel()
        await runner  # re-raises what ended the client (bad token, missing intent…)


async def _login_then_connect(bot: SeedBot, token: str, stop: asyncio.Event, api_base: str) -> None:
    """Log in, retrying with backoff while Discord cannot be reached (one line per attempt),
    then run the gateway connection (discord.py reconnects it by itself). A refused token
    raises ``discord.LoginFailure`` at once. Returns early when ``stop`` is set."""
    delay = LOGIN_RETRY_FIRST
    attempt = 0
    while True:
        attempt += 1
        try:
            async with asyncio.timeout(LOGIN_TIMEOUT):
                await bot.login(token)
            break
        except (aiohttp.ClientError, OSError, TimeoutError, discord.DiscordServerError) as exc:
            log.warning(
                "cannot reach Discord at %s (%s), attempt %d; retrying in %.0fs",
                api_base,
                describe_exception(exc),
                attempt,
                delay,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            # The next login opens a session (and a connector) of its own.
            await bot.http.close()
            bot.http.connector = discord.utils.MISSING
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()
        if stop.is_set():
            return
        delay = min(delay * 2, LOGIN_RETRY_MAX)
    if attempt > 1:
        log.info("reached Discord after %d attempts", attempt)
    await bot.connect(reconnect=True)


async def check_fal(model: FalClient) -> None:
    """Warn (and carry on) when fal cannot be reached or refuses the key at start."""
    try:
        accepted = await model.check_key()
    except ModelError as exc:
        log.warning("fal is unreachable at start (%s); starting anyway", str(exc).rstrip("."))
        return
    if not accepted:
        log.warning("fal refused the key (FAL_KEY); turns will fail until it is fixed")
