"""``seed-bot``: run the bot, migrate its database, check a deployment, ask the model."""

from __future__ import annotations

import argparse
import asyncio
import logging
import mimetypes
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import aiohttp
import discord

from bot import deploy_check
from bot.config import Config, load_config
from bot.domain.errors import ConfigError, SeedBotError
from bot.domain.models import MAX_IMAGES_PER_TURN, MAX_VIDEOS_PER_TURN, ModelRequest, Progress
from bot.domain.params import EFFORT_LEVELS, THINKING_MODES
from bot.domain.privacy import export_files
from bot.ops.logs import setup_logging

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

CONFIG_HELP = "config file (default: ./config.toml if it exists, or $SEED_BOT_CONFIG)"
DEBUG_HELP = 'log at DEBUG, with tracebacks of failures (same as logging.level = "DEBUG")'


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seed-bot",
        description="A Discord bot for ByteDance Seed 2.0 Mini on fal.ai. Secrets come from "
        "DISCORD_TOKEN and FAL_KEY; everything else from config.toml (see "
        "config.example.toml) or SEED_BOT_<SECTION>__<KEY> variables.",
    )
    parser.add_argument("--config", type=Path, default=None, help=CONFIG_HELP)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    # Every subcommand takes --config and --debug too, so they may come before or after the
    # command. Their default is SUPPRESS there, so a value given before is not reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=CONFIG_HELP)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command = partial(sub.add_parser, parents=[common])

    run = command(
        "run",
        help="run the bot until SIGINT/SIGTERM",
        description="Connect to Discord and answer people. Migrates an "
        "SQLite database first (database.auto_migrate).",
    )
    run.add_argument(
        "--sync",
        action="store_true",
        help="register the slash commands with Discord globally first (do it once after "
        "install or upgrade; Discord may take a while to show them)",
    )

    command("migrate", help="upgrade the database schema to the latest version")
    command(
        "check",
        help="validate the config, the database and both credentials; print the invite URL",
    )

    ask = command(
        "ask",
        help="ask the model from the terminal (tests a fal key)",
        description="Send one prompt to the model with the bot's own client and print the "
        "answer, then the reasoning under a heading.",
    )
    ask.add_argument("prompt", help="the question")
    for flag, what, most in (
        ("--image", "an image (JPEG, PNG, WebP)", MAX_IMAGES_PER_TURN),
        ("--video", "a video (MP4, MOV)", MAX_VIDEOS_PER_TURN),
    ):
        ask.add_argument(
            flag,
            action="append",
            default=[],
            metavar="FILE_OR_URL",
            help=f"{what} to include; repeatable, up to {most}",
        )
    ask.add_argument("--thinking", choices=THINKING_MODES, help="thinking mode")
    ask.add_argument("--effort", choices=EFFORT_LEVELS, help="reasoning effort")
    ask.add_argument("--system", metavar="TEXT", help="system prompt")

    export = command(
        "export",
        help="write a stored conversation to conversation.md and conversation.json",
        description="Write the conversation stored for a thread (or DM channel) as "
        "conversation.md (readable) and conversation.json (every stored turn).",
    )
    export.add_argument("--thread", required=True, type=_snowflake, metavar="ID", help="thread id")
    export.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="directory to write the two files to (default: ./seed-bot-export-ID)",
    )

    purge = command(
        "purge",
        help="delete stored turns of a user, of a server, or older than some days",
        description="Delete stored conversations' data and print what was deleted. Turns "
        "still being answered are kept (and counted). Stop nothing: safe while the bot runs.",
    )
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--user", type=_snowflake, metavar="ID", help="every turn this user wrote, everywhere"
    )
    which.add_argument(
        "--guild", type=_snowflake, metavar="ID", help="every conversation of this server"
    )
    which.add_argument(
        "--older-than", type=_days, metavar="DAYS", help="turns older than this many days"
    )
    purge.add_argument("--dry-run", action="store_true", help="only print what would be deleted")

    usage = command(
        "usage",
        help="what the bot cost: turns, fal units and dollars per server, user or day",
        description="A report of the turns' costs over a period (UTC), from the database "
        "the config names (SQLite or PostgreSQL).",
    )
    for flag, help_ in (
        (
            "--since",
            "from this date or time, included (YYYY-MM-DD or ISO 8601; UTC unless an offset "
            "is given; default: the start of the current month)",
        ),
        ("--until", "up to this date or time, excluded (default: now)"),
    ):
        usage.add_argument(flag, type=_utc_time, default=None, metavar="WHEN", help=help_)
    usage.add_argument(
        "--by",
        choices=("guild", "user", "day"),
        default="guild",
        help="one row per (default: guild)",
    )
    usage.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="output format (default: table)",
    )
    return parser


def _snowflake(value: str) -> str:
    if value.isdigit() and len(value) <= 20:
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is not a Discord id (digits)")


def _days(value: str) -> int:
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of days (1 or more)")


def _utc_time(value: str) -> datetime:
    """A --since/--until value: a date (its midnight) or a date and time, in UTC unless it
    carries an offset."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date or time (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    needs = {"run": ("discord", "fal"), "ask": ("fal",)}.get(args.command, ())
    try:
        config = load_config(args.config, required_secrets=needs)
    except ConfigError as exc:
        print(f"seed-bot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    level = "DEBUG" if args.debug else config.logging.level
    setup_logging(level, config.logging.format)
    command = {
        "run": _run,
        "migrate": _migrate,
        "check": _check,
        "ask": _ask,
        "export": _export,
        "purge": _purge,
        "usage": _usage,
    }[args.command]
    fatal = partial(_fatal, json_lines=config.logging.format == "json")
    try:
        return asyncio.run(command(config, args))
    except KeyboardInterrupt:
        return EXIT_FAILED
    except discord.PrivilegedIntentsRequired as exc:
        return fatal(
            exc,
            "Discord refused the Message Content intent. Enable it: Discord developer "
            "portal → your application → Bot → Privileged Gateway Intents → Message Content "
            "Intent, then start again.",
            EXIT_FAILED,
        )
    except discord.LoginFailure as exc:
        return fatal(
            exc,
            "Discord refused the token: check DISCORD_TOKEN (reset it in the developer "
            "portal → Bot if it leaked or expired).",
            EXIT_CONFIG,
        )
    except SeedBotError as exc:
        return fatal(exc, str(exc), EXIT_FAILED)


def _fatal(exc: BaseException, message: str, code: int, *, json_lines: bool) -> int:
    """Report what stopped the command in one line (a JSON log line when the logs are JSON);
    its traceback only at DEBUG. Returns the exit code."""
    log.debug("the command failed", exc_info=exc)
    if json_lines:
        log.critical("%s", message)
    else:
        print(f"seed-bot: {message}", file=sys.stderr)
    return code


async def _run(config: Config, args: argparse.Namespace) -> int:
    from bot.app import run_bot

    needs = ("discord", "fal")
    await run_bot(
        config,
        sync_commands=args.sync,
        reload=lambda: load_config(args.config, required_secrets=needs),
    )
    return EXIT_OK


async def _migrate(config: Config, args: argparse.Namespace) -> int:
    from bot.storage.migrate import current_revision, upgrade

    before = await current_revision(config.database.url)
    await upgrade(config.database.url)
    after = await current_revision(config.database.url)
    print(f"database at revision {after} (was {before or 'empty'})")
    return EXIT_OK


async def _export(config: Config, args: argparse.Namespace) -> int:
    from bot.app import open_privacy

    async with open_privacy(config) as privacy:
        found = await privacy.export(args.thread)
    if found is None:
        raise SeedBotError(f"no conversation is stored for thread {args.thread}")
    out: Path = args.out or Path(f"seed-bot-export-{args.thread}")
    _write_files(out, export_files(found, exported_at=datetime.now(UTC)))
    print(f"exported {len(found.turns)} turns of thread {args.thread}", file=sys.stderr)
    return EXIT_OK


def _write_files(out: Path, files: dict[str, str]) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (out / name).write_text(text, encoding="utf-8")
            print(out / name)
    except OSError as exc:
        raise SeedBotError(f"{out}: cannot write the export ({exc.strerror})") from None


async def _purge(config: Config, args: argparse.Namespace) -> int:
    from bot.app import open_privacy, retention

    async with open_privacy(config) as privacy:
        dry = args.dry_run
        if args.user is not None:
            what = f"turns of user {args.user}"
            removed = await privacy.purge_user(args.user, dry_run=dry)
        elif args.guild is not None:
            what = f"conversations of server {args.guild}"
            removed = await privacy.purge_guild(args.guild, dry_run=dry)
        else:
            what = f"turns older than {args.older_than} days"
            rule = replace(retention(config), days=args.older_than)
            now = datetime.now(UTC)
            removed = await privacy.remove_older(
                rule.turns_before(now), rule.usage_before(now), dry_run=dry
            )
    print(f"{'would delete' if dry else 'deleted'} ({what}): {removed.describe()}")
    return EXIT_OK


async def _usage(config: Config, args: argparse.Namespace) -> int:
    from bot.domain.costs import period_bounds
    from bot.ops.usage_report import render, usage_rows

    since = args.since or period_bounds("monthly", datetime.now(UTC))[0]
    if args.until is not None and args.until <= since:
        print("seed-bot: --until must be later than --since", file=sys.stderr)
        return EXIT_CONFIG
    rows = await usage_rows(config.database.url, since=since, until=args.until, by=args.by)
    print(render(rows, by=args.by, fmt=args.format, since=since, until=args.until))
    return EXIT_OK


def _file_or_url(value: str) -> tuple[str, bytes | None, str]:
    """(name, bytes or None for a URL, content type)."""
    if value.startswith(("http://", "https://", "data:")):
        return value, None, ""
    path = Path(value)
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    try:
        return path.name, path.read_bytes(), ctype
    except OSError as exc:
        raise SeedBotError(f"{value}: cannot read the file ({exc.strerror})") from None


async def _ask(config: Config, args: argparse.Namespace) -> int:
    from bot.app import fal_settings
    from bot.fal.client import FalClient

    async def progress(p: Progress) -> None:
        text = (
            f"waiting in queue (position {p.queue_position})"
            if p.state == "queued"
            else "thinking…"
        )
        print(text, file=sys.stderr)

    async with aiohttp.ClientSession() as session:
        client = FalClient(session, fal_settings(config))

        async def urls(values: list[str]) -> tuple[str, ...]:
            out = []
            for value in values:
                name, data, ctype = _file_or_url(value)
                out.append(
                    name
                    if data is None
                    else await client.upload(data, content_type=ctype, file_name=name)
                )
            return tuple(out)

        request = ModelRequest(
            prompt=args.prompt,
            image_urls=await urls(args.image),
            video_urls=await urls(args.video),
            system_prompt=args.system,
            thinking=args.thinking,
            reasoning_effort=args.effort,
        )
        handle = await client.submit(request)
        print(f"request {handle.request_id}", file=sys.stderr)
        reply = await client.wait(handle, on_progress=progress, timeout=config.fal.turn_timeout)
    print(reply.output)
    if reply.reasoning:
        print("\n## Reasoning\n")
        print(reply.reasoning)
    return EXIT_OK


async def _check(config: Config, args: argparse.Namespace) -> int:
    return EXIT_OK if await deploy_check.check(config) else EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
