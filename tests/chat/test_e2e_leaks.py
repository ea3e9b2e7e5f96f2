"""Operational leaks, end to end on the fake Discord: what an operator's command shows of a
rejected config, and what the log says of it."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import aiohttp
import pytest

from bot.app import reload_app
from bot.chat.media import DiscordMedia
from bot.config import load_config
from bot.domain.errors import AttachmentError
from bot.domain.models import Attachment
from tests.chat.conftest import Harness, harness_env

SECRET_PASSWORD = "pw-7b2d0-only-in-the-url"


async def test_admin_reload_masks_a_rejected_database_urls_password(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    bad = harness_env(h.fake, h.fal, h.tmp_path) | {
        "SEED_BOT_DATABASE__URL": f"postgresql://u:{SECRET_PASSWORD}@h/db"
    }
    h.app.bot.reload_config = partial(
        reload_app, h.app, lambda: load_config(None, bad, required_secrets=("discord", "fal"))
    )
    owner: Any = h.fake.owner
    h.fake.add_member(h.world.guild, owner)
    reloaded = await h.fake.invoke_command(owner, h.world.channel, "admin reload")
    response = await reloaded.wait_response()
    assert response.data is not None
    content = response.data["content"]
    assert "was not reloaded" in content and "postgresql://u:***@h/db" in content
    assert SECRET_PASSWORD not in content
    assert "config reload refused" in caplog.text and "postgresql://u:***@h/db" in caplog.text
    assert SECRET_PASSWORD not in caplog.text


async def test_a_failed_cdn_download_is_logged_without_its_signed_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A CDN (or a proxy before it) answering garbage: aiohttp's error names the whole URL,
    signature and all, which opens a private channel's file to whoever reads the log."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: nonsense\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    signed = (
        f"http://127.0.0.1:{port}/attachments/11/22/private.png"
        "?ex=6a1b2c3d&is=6a1a0000&hm=0123456789abcdef0123456789abcdef&"
    )
    attachment = Attachment("22", "private.png", "image/png", 10, signed)
    try:
        async with aiohttp.ClientSession() as session:
            media = DiscordMedia(session, [f"127.0.0.1:{port}"])
            with pytest.raises(AttachmentError):
                await media.fetch(attachment, 1000)
    finally:
        server.close()
        await server.wait_closed()
    [line] = [r.getMessage() for r in caplog.records if "download of attachment" in r.getMessage()]
    assert "22" in line and "private.png" in line and "127.0.0.1" in line
    assert "hm=" not in caplog.text and "0123456789abcdef" not in caplog.text
