"""Configuration: ``config.toml`` plus the environment → frozen, validated settings.

Every key can be overridden by an environment variable named
``SEED_BOT_<SECTION>__<KEY>`` in upper case (``SEED_BOT_DATABASE__URL``,
``SEED_BOT_LIMITS__MAX_IN_FLIGHT``). Lists are comma-separated, booleans are
``true/false/1/0/yes/no/on/off``. The two secrets also come from their usual variables,
``DISCORD_TOKEN`` and ``FAL_KEY`` (or ``FAL_KEY_ID`` + ``FAL_KEY_SECRET``), which win over the
file. Every problem is collected and reported at once in one ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bot import urls
from bot.config_keys import (
    ENV_PREFIX,
    Secret,
    build_section,
    doc_of,
    example_value,
    ids,
    in_range,
    non_negative,
    opt,
    opt_list,
    positive,
    secret_from_env,
    snowflake_or_empty,
)
from bot.domain import attachments as att
from bot.domain import costs, links
from bot.domain import service as svc
from bot.domain.errors import ConfigError
from bot.domain.models import GenerationSettings
from bot.domain.outage import DEFAULT_OUTAGE_TOLERANCE
from bot.domain.personas import EXAMPLE_PERSONA, Persona, personas_section
from bot.fal import settings as fal
from bot.urls import discord_api_problem, http_url_problem, ws_url_problem

DEFAULT_CONFIG_PATH = Path("config.toml")


def _db_url(v: Any) -> str | None:
    if v.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        return None
    return "must start with sqlite+aiosqlite:// or postgresql+asyncpg://"


@dataclass(frozen=True, slots=True)
class DiscordConfig:
    token: Secret = opt(Secret(""), "Bot token. Prefer the DISCORD_TOKEN environment variable.")
    api_base: str = opt(
        "https://discord.com/api/v10",
        "Discord REST base URL (ending in /v10).",
        discord_api_problem,
    )
    gateway_url: str = opt(urls.DISCORD_GATEWAY_URL, "Discord gateway URL.", ws_url_problem)
    cdn_hosts: tuple[str, ...] = opt_list(
        "Hosts attachments and linked media may be downloaded from (Discord's CDN, and its "
        "media proxy that serves what links unfurl into).",
        (
            "cdn.discordapp.com",
            "media.discordapp.net",
            "images-ext-1.discordapp.net",
            "images-ext-2.discordapp.net",
        ),
    )
    dev_guild_id: str = opt(
        "",
        "Sync slash commands to this server at start-up (instant; for development).",
        snowflake_or_empty,
    )
    reply_without_mention: bool = opt(
        True, "In a bound thread, answer every message, not only mentions."
    )
    allow_dms: bool = opt(False, "Answer direct messages (one conversation per DM channel).")
    batch_window_seconds: float = opt(
        svc.DEFAULT_BATCH_WINDOW,
        "A person's follow-up sent within this many seconds of their previous message, before "
        "its answer is in, replaces the request in flight with one turn of both (a lone "
        "message never waits; 0: no batching, every message is its own turn).",
        in_range(0, 30),
    )
    catch_up_seconds: float = opt(
        3600.0,
        "On start, answer messages that arrived in active threads while the bot was down, "
        "up to this old (0: none).",
        non_negative,
    )
    shard_count: int = opt(
        0, "Total shards; 0 lets Discord decide (sharding off if 1).", non_negative
    )
    shard_ids: tuple[str, ...] = ids(
        'Shards this process runs (with shard_count), e.g. ["0", "1"]; empty: all.'
    )


@dataclass(frozen=True, slots=True)
class FalConfig:
    key: Secret = opt(Secret(""), "fal API key. Prefer the FAL_KEY environment variable.")
    endpoint: str = opt(fal.DEFAULT_ENDPOINT, "Model endpoint id.")
    queue_base: str = opt(fal.DEFAULT_QUEUE_BASE, "fal queue base URL.", http_url_problem)
    rest_base: str = opt(fal.DEFAULT_REST_BASE, "fal REST/storage base URL.", http_url_problem)
    turn_timeout: float = opt(
        svc.DEFAULT_TURN_TIMEOUT,
        "Seconds one turn may take in all before it is cancelled.",
        positive,
    )
    connect_timeout: float = opt(
        fal.DEFAULT_CONNECT_TIMEOUT, "Seconds to open a connection to fal.", positive
    )
    attachment_mode: att.AttachmentMode = opt(
        att.DEFAULT_ATTACHMENT_MODE,
        "How attachments reach the model: fal_storage (durable copy, default), discord_url "
        "(the expiring Discord link), data_uri (inline, small images only).",
    )


@dataclass(frozen=True, slots=True)
class ModelConfig(GenerationSettings):
    """The config file's layer of generation parameters (one key per parameter, declared
    in ``bot.domain.params``), and how much history is sent."""

    context_budget_tokens: int = opt(
        svc.DEFAULT_CONTEXT_BUDGET_TOKENS,
        "History is trimmed (oldest turns first) to fit this many tokens.",
        in_range(1_000, 256_000),
    )

    def settings(self) -> GenerationSettings:
        return self.only_settings()


@dataclass(frozen=True, slots=True)
class AttachmentsConfig:
    max_image_bytes: int = opt(
        att.DEFAULT_MAX_IMAGE_BYTES, "Largest image sent to the model.", positive
    )
    max_video_bytes: int = opt(
        att.DEFAULT_MAX_VIDEO_BYTES, "Largest video sent to the model.", positive
    )
    max_text_bytes: int = opt(
        att.DEFAULT_MAX_TEXT_BYTES, "Largest text file inlined into the prompt.", positive
    )
    max_data_uri_bytes: int = opt(
        att.DEFAULT_MAX_DATA_URI_BYTES,
        "Largest image sent inline when attachment_mode = data_uri.",
        positive,
    )
    max_text_files: int = opt(
        att.DEFAULT_MAX_TEXT_FILES,
        "Text files inlined per message (a burst and a quoted message's files included); "
        "the reply names those left out.",
        positive,
    )
    max_text_bytes_per_turn: int = opt(
        att.DEFAULT_MAX_TEXT_BYTES_PER_TURN,
        "Bytes of text inlined per message, over all its text files; a file that does not "
        "fit is cut (the model and the reply are told), the ones after it left out.",
        positive,
    )
    max_files_in_flight: int = opt(
        att.DEFAULT_MAX_FILES_IN_FLIGHT,
        "Attachments being downloaded and uploaded at once, over all conversations.",
        positive,
    )
    max_bytes_in_flight: int = opt(
        att.DEFAULT_MAX_BYTES_IN_FLIGHT,
        "Total size of the attachments being prepared at once, over all conversations "
        "(media are streamed, so memory stays far below it; a larger file goes alone).",
        positive,
    )


def _host_names(v: Any) -> str | None:
    bad = [h for h in v if not links.is_host_name(h)]
    return f"has entries that are not host names: {', '.join(bad)}" if bad else None


@dataclass(frozen=True, slots=True)
class LinksConfig:
    read_pages: bool = opt(
        links.DEFAULT_READ_PAGES,
        "Read the web pages linked in a message and give the model their text (public "
        "addresses only; the reply names the pages read).",
    )
    allow_private_hosts: tuple[str, ...] = opt(
        (),
        "Host names (not addresses) whose pages may be read although they resolve to a "
        "private address, such as an intranet wiki.",
        _host_names,
    )
    max_pages: int = opt(
        links.DEFAULT_MAX_PAGES,
        "Linked pages read per message (a burst and a quoted message's links included).",
        in_range(1, 10),
    )
    max_page_bytes: int = opt(
        links.DEFAULT_MAX_PAGE_BYTES,
        "Bytes of a page's text given to the model; a longer page is cut (the model is told).",
        in_range(1024, 256 * 1024),
    )
    embed_wait_seconds: float = opt(
        links.DEFAULT_EMBED_WAIT,
        "How long a message with a link waits for Discord to unfurl it into media before "
        "it is answered without them.",
        in_range(0, 10),
    )


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_in_flight: int = opt(
        svc.DEFAULT_MAX_IN_FLIGHT, "Model requests in flight at once, over all threads.", positive
    )
    user_requests: int = opt(
        30, "Requests one user may make per user_window (0: no limit).", non_negative
    )
    user_window_seconds: int = opt(3600, "Window of the per-user quota.", positive)
    guild_requests: int = opt(
        500, "Requests one server may make per guild_window (0: no limit).", non_negative
    )
    guild_window_seconds: int = opt(3600, "Window of the per-server quota.", positive)
    shutdown_grace_seconds: float = opt(
        20.0, "On SIGTERM, how long in-flight turns may finish.", non_negative
    )


@dataclass(frozen=True, slots=True)
class CostsConfig:
    usd_per_unit: float = opt(
        costs.DEFAULT_USD_PER_UNIT,
        "Dollars per fal billable unit (X-Fal-Billable-Units). Default: fal's published price "
        "for this endpoint, $0.0001 per 1,000 units (an input token is 1 unit, an output "
        "token 4, both doubling past 128K tokens); check the current price on "
        "https://fal.ai/models/fal-ai/bytedance/seed/v2/mini (Pricing) or its llms.txt.",
        non_negative,
    )


def _budget(who: str, period: str) -> Any:
    """A dollar budget key: none (0) by default."""
    return opt(0.0, f"Dollars {who} may spend per UTC {period} (0: no budget).", non_negative)


@dataclass(frozen=True, slots=True)
class BudgetsConfig:
    user_daily_usd: float = _budget("one user", "day")
    user_monthly_usd: float = _budget("one user", "month")
    guild_daily_usd: float = _budget("one server", "day")
    guild_monthly_usd: float = _budget("one server", "month")
    total_monthly_usd: float = _budget("the whole bot", "month, over every server and DM")

    def rules(self) -> costs.BudgetRules:
        return costs.BudgetRules(
            user_daily_usd=self.user_daily_usd,
            user_monthly_usd=self.user_monthly_usd,
            guild_daily_usd=self.guild_daily_usd,
            guild_monthly_usd=self.guild_monthly_usd,
            total_monthly_usd=self.total_monthly_usd,
        )


@dataclass(frozen=True, slots=True)
class AccessConfig:
    allow_users: tuple[str, ...] = ids("Only these users may use the bot (empty: all).")
    deny_users: tuple[str, ...] = ids("These users may not use the bot.")
    allow_roles: tuple[str, ...] = ids("Only members with one of these roles (empty: all).")
    deny_roles: tuple[str, ...] = ids("Members with one of these roles may not.")
    allow_channels: tuple[str, ...] = ids("Only in these channels or categories (empty: all).")
    deny_channels: tuple[str, ...] = ids("Never in these channels or categories.")
    allow_guilds: tuple[str, ...] = ids("Only in these servers (empty: all).")
    deny_guilds: tuple[str, ...] = ids("Never in these servers.")
    allow_outside_servers: bool = opt(
        False,
        "With a server, role or channel allow list set: still answer outside the bot's "
        "servers (DMs, group DMs, servers where a person installed the app), judged there by "
        "the user lists only.",
    )
    denied_reply: Literal["quiet", "notice"] = opt(
        "notice", "quiet: ignore denied users; notice: tell them once, briefly."
    )


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str = opt(
        "sqlite+aiosqlite:///data/seed-bot.db",
        "SQLAlchemy URL: sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db.",
        _db_url,
    )
    auto_migrate: bool | None = opt(
        None, "Upgrade the schema on start; unset: yes for SQLite, no for PostgreSQL."
    )
    outage_tolerance_seconds: float = opt(
        DEFAULT_OUTAGE_TOLERANCE,
        "While the database is unreachable (or SQLite locked by another process), turns and "
        "new messages wait for it this long before they fail (0: fail after a few tries).",
        non_negative,
    )

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate


def _listen_address(v: Any) -> str | None:
    if v == "":
        return None
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return 'must be "host:port" (e.g. "127.0.0.1:9464", "0.0.0.0:9464") or "" for off'
    return None


@dataclass(frozen=True, slots=True)
class HttpConfig:
    listen: str = opt(
        "",
        'Serve /healthz, /readyz and /metrics on this "host:port" (e.g. "127.0.0.1:9464"; '
        '"0.0.0.0:9464" in a container); empty: off.',
        _listen_address,
    )


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = opt(
        "INFO", "Log level. DEBUG also shows tracebacks of start-up failures."
    )
    format: Literal["text", "json"] = opt(
        "text",
        "text: one readable line per event; json: one JSON object per line (time, level, "
        "logger, message and the conversation, turn, guild, channel and fal request ids).",
    )


@dataclass(frozen=True, slots=True)
class PrivacyConfig:
    fal_store_io: bool = opt(
        fal.DEFAULT_STORE_IO,
        "Let fal store each request's prompt and answer (30 days); false sends "
        "X-Fal-Store-IO: 0 so it does not.",
    )
    retention_days: int = opt(
        0,
        "Delete turns, their messages and usage detail older than this many days (checked "
        "at start and hourly), and uploaded attachments expire at fal after as long; "
        "0 keeps everything.",
        non_negative,
    )


@dataclass(frozen=True, slots=True)
class Config:
    discord: DiscordConfig = field(default_factory=DiscordConfig)
    fal: FalConfig = field(default_factory=FalConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    attachments: AttachmentsConfig = field(default_factory=AttachmentsConfig)
    links: LinksConfig = field(default_factory=LinksConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    costs: CostsConfig = field(default_factory=CostsConfig)
    budgets: BudgetsConfig = field(default_factory=BudgetsConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    # [personas.<name>] tables, each a persona (bot.domain.personas): not a section of keys.
    personas: Mapping[str, Persona] = field(default_factory=dict)


_HINTS = typing.get_type_hints(Config)
SECTIONS: dict[str, type[Any]] = {f.name: _HINTS[f.name] for f in dataclasses.fields(Config)}
del SECTIONS["personas"]


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    required_secrets: tuple[str, ...] = (),
) -> Config:
    """Read the config file (``path``; ``config.toml`` when it exists, else defaults) and the
    environment. ``required_secrets`` names the credentials this command needs (``"discord"``,
    ``"fal"``). Raises ``ConfigError`` listing every problem."""
    env = os.environ if env is None else env
    problems: list[str] = []
    data: dict[str, Any] = {}
    if path is None and (env_path := env.get(f"{ENV_PREFIX}CONFIG")):
        path = Path(env_path)
    explicit = path is not None
    path = path or DEFAULT_CONFIG_PATH
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path}: cannot be read: {exc}"]) from None
    elif explicit:
        raise ConfigError([f"{path}: no such file (copy config.example.toml to start)"])

    for key in data:
        if key not in SECTIONS and key != "personas":
            problems.append(f"[{key}]: unknown section (known: {', '.join(SECTIONS)})")
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            problems.append(f"[{name}]: must be a table")
            table = {}
        sections[name] = build_section(name, cls, table, env, problems)
    personas = personas_section(data.get("personas", {}), sections["model"].persona, problems)

    if token := secret_from_env(env, "DISCORD_TOKEN"):
        sections["discord"] = dataclasses.replace(sections["discord"], token=token)
    fal_key = secret_from_env(env, "FAL_KEY") or secret_from_env(
        env, "FAL_KEY_ID", "FAL_KEY_SECRET"
    )
    if fal_key:
        sections["fal"] = dataclasses.replace(sections["fal"], key=fal_key)

    discord: DiscordConfig = sections["discord"]
    if "discord" in required_secrets and not discord.token:
        problems.append("DISCORD_TOKEN: not set; the bot token from the Discord developer portal")
    if "fal" in required_secrets and not sections["fal"].key:
        problems.append("FAL_KEY: not set; an API key from fal.ai's dashboard")
    if discord.shard_ids and discord.shard_count == 0:
        problems.append("[discord] shard_ids: needs shard_count set too")
    elif discord.shard_ids and any(int(s) >= discord.shard_count for s in discord.shard_ids):
        problems.append(
            f"[discord] shard_ids: every id must be below shard_count ({discord.shard_count})"
        )

    if problems:
        raise ConfigError(problems)
    return Config(**sections, personas=personas)


def config_reference() -> list[tuple[str, str, Any, str]]:
    """(section, key, default, doc) for every setting: used to check the example file."""
    rows = []
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            rows.append((name, f.name, f.default, doc_of(f)))
    return rows


EXAMPLE_INTRO = """\
# seed-bot configuration. Copy to config.toml and edit; every key is optional.
#
# Secrets: set DISCORD_TOKEN and FAL_KEY in the environment (they win over this file).
# Any key can be overridden by an environment variable SEED_BOT_<SECTION>__<KEY>, e.g.
#   SEED_BOT_DATABASE__URL=postgresql+asyncpg://bot@db.internal/seedbot
#   SEED_BOT_ACCESS__DENY_USERS=123456789012345678,234567890123456789   (lists: comma-separated)
# A config with problems is refused as a whole, with every problem listed.
# `seed-bot run` reloads this file on SIGHUP (or /admin reload).
"""


def render_example() -> str:
    """The text of ``config.example.toml``: every key, its documentation and its default."""
    import textwrap

    out = [EXAMPLE_INTRO]
    section = None
    for name, key, default, doc in config_reference():
        if name != section:
            out.append(f"\n[{name}]")
            section = name
        out.extend(f"# {line}" for line in textwrap.wrap(doc, 92, break_on_hyphens=False))
        if isinstance(default, Secret):
            out.append(f'# {key} = ""   (use the environment variable instead)')
        elif (shown := example_value(default)) is None:
            out.append(f"# {key} =   (unset by default)")
        else:
            out.append(f"{key} = {shown}")
        out.append("")
    return "\n".join(out).rstrip() + "\n\n" + EXAMPLE_PERSONA
