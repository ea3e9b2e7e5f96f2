"""``seed-bot check``: what a deployment needs before it starts (config, database schema,
fal key, Discord token and intents), one printed line each, and the links that add the bot."""

from __future__ import annotations

from typing import Any

import aiohttp
import discord

from bot.config import Config
from bot.domain.errors import SeedBotError

# What the bot needs in a channel: read, answer, open threads, attach reasoning.md.
BOT_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    create_private_threads=True,
    attach_files=True,
    read_message_history=True,
)
MESSAGE_CONTENT_FLAGS = (1 << 18) | (1 << 19)  # GATEWAY_MESSAGE_CONTENT(_LIMITED)


def invite_url(application_id: int | str) -> str:
    """The link that adds the bot to a server (a guild install)."""
    return (
        f"https://discord.com/oauth2/authorize?client_id={application_id}"
        f"&scope=bot+applications.commands&permissions={BOT_PERMISSIONS.value}"
    )


def user_install_url(application_id: int | str) -> str:
    """The link that adds the app to a person's account (a user install: `/ask` and
    "Ask Seed" wherever they are)."""
    return (
        f"https://discord.com/oauth2/authorize?client_id={application_id}"
        "&integration_type=1&scope=applications.commands"
    )


async def check(config: Config) -> bool:
    """Each check prints one line, ok or the problem; whether all passed."""
    failed = False

    def report(ok: bool, what: str) -> None:
        nonlocal failed
        failed |= not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}")

    report(True, "config is valid")
    failed |= not await _check_database(config, report)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        await _check_fal(config, session, report)
        await _check_discord(config, session, report)
    return not failed


async def _check_database(config: Config, report: Any) -> bool:
    from bot.storage.migrate import current_revision, head_revision

    try:
        current = await current_revision(config.database.url)
    except SeedBotError as exc:
        report(False, f"database: {exc}")
        return False
    head = head_revision()
    if current == head:
        report(True, f"database schema is current ({head})")
    elif config.database.should_auto_migrate:
        report(True, f"database schema at {current or 'empty'}; `run` will migrate it to {head}")
    else:
        report(
            False, f"database schema at {current or 'empty'}, needs {head}: run `seed-bot migrate`"
        )
    return True


async def _check_fal(config: Config, session: aiohttp.ClientSession, report: Any) -> None:
    from bot.app import fal_settings
    from bot.fal.client import FalClient

    if not config.fal.key:
        report(False, "fal: FAL_KEY is not set")
        return
    client = FalClient(session, fal_settings(config))
    try:
        accepted = await client.check_key()
    except SeedBotError as exc:
        report(False, f"fal: {exc}")
        return
    report(accepted, "fal key accepted" if accepted else "fal: the key was refused (401/403)")


async def _check_discord(config: Config, session: aiohttp.ClientSession, report: Any) -> None:
    token = config.discord.token
    if not token:
        report(False, "discord: DISCORD_TOKEN is not set")
        return
    headers = {"Authorization": f"Bot {token.get()}"}
    base = config.discord.api_base.rstrip("/")
    try:
        async with session.get(f"{base}/users/@me", headers=headers) as response:
            if response.status == 401:
                report(False, "discord: the token was refused (401); reset it in the portal")
                return
            if response.status != 200:
                report(False, f"discord: /users/@me answered HTTP {response.status}")
                return
            me = await response.json()
        async with session.get(f"{base}/oauth2/applications/@me", headers=headers) as response:
            app = await response.json() if response.status == 200 else {}
    except (aiohttp.ClientError, TimeoutError) as exc:
        report(False, f"discord: cannot reach the API ({type(exc).__name__})")
        return
    report(True, f"discord token accepted: bot {me.get('username')} (id {me.get('id')})")
    flags = int(app.get("flags") or 0)
    if app and not flags & MESSAGE_CONTENT_FLAGS:
        report(
            False,
            "discord: the Message Content intent is not enabled (developer portal → "
            "Bot → Privileged Gateway Intents)",
        )
    application_id = app.get("id") or me.get("id")
    print(f"invite URL: {invite_url(application_id)}")
    print(f"user install URL: {user_install_url(application_id)}")
    if app and "1" not in (app.get("integration_types_config") or {}):
        print(
            "note: User Install is not enabled (developer portal → Installation → Installation "
            "Contexts), so the user install URL will not work yet"
        )
