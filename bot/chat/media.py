"""Downloads attachments from Discord's CDN, and only from there."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncGenerator, Collection

import aiohttp
from yarl import URL

from bot.domain.errors import AttachmentError
from bot.domain.models import Attachment, Origin
from bot.ops.logs import describe_exception
from bot.urls import describe_url

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DiscordMedia:
    """``MediaSource`` over the bot's shared aiohttp session. ``allowed_hosts`` are host names
    (or ``host:port``) of Discord's CDN; anything else is refused, so a crafted attachment URL
    cannot make the bot fetch from elsewhere. Plain http is accepted only on loopback (the
    test fakes)."""

    def __init__(
        self, session: aiohttp.ClientSession, allowed_hosts: Collection[str], *, timeout: float = 60
    ) -> None:
        self._session = session
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self._total = timeout
        # A stream lasts as long as the upload it feeds (which has its own deadline): only a
        # stalled read is cut here. A whole download (fetch) is bounded in total as well.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout)

    def allows(self, url: str) -> bool:
        try:
            parsed = URL(url)
        except ValueError:
            return False
        host = (parsed.host or "").lower()
        netloc = f"{host}:{parsed.port}" if parsed.explicit_port else host
        if host not in self.allowed_hosts and netloc not in self.allowed_hosts:
            return False
        return parsed.scheme == "https" or (parsed.scheme == "http" and _is_loopback(host))

    async def fetch(self, attachment: Attachment, max_bytes: int) -> bytes:
        data = bytearray()
        try:
            async with (
                asyncio.timeout(self._total),
                contextlib.aclosing(self.stream(attachment, max_bytes)) as chunks,
            ):
                async for chunk in chunks:
                    data += chunk
        except TimeoutError:
            log.warning("download of attachment %s timed out", attachment.id)
            raise AttachmentError(
                attachment.filename, "it could not be downloaded from Discord"
            ) from None
        return bytes(data)

    async def stream(self, attachment: Attachment, max_bytes: int) -> AsyncGenerator[bytes, None]:
        """The file in chunks as they arrive. Its length must be the size Discord reported
        (a streamed upload announces that size): a file longer is cut off and refused at
        the first byte over, one shorter is refused at its end."""
        name = attachment.filename
        # Linked media come with no size: only the cap bounds them.
        reported = attachment.size if attachment.origin is Origin.FILE else None
        if not self.allows(attachment.url):
            raise AttachmentError(name, "it is not hosted on Discord's CDN")
        if attachment.size > max_bytes:
            raise AttachmentError(name, f"it is larger than {max_bytes} bytes")
        received = 0
        try:
            async with self._session.get(
                attachment.url, timeout=self._timeout, allow_redirects=False
            ) as response:
                if response.status in (403, 404, 410):
                    raise AttachmentError(name, "Discord no longer serves it (the link expired?)")
                if response.status != 200:
                    raise AttachmentError(name, f"Discord's CDN answered HTTP {response.status}")
                if (response.content_length or 0) > max_bytes:
                    raise AttachmentError(name, f"it is larger than {max_bytes} bytes")
                async for chunk in response.content.iter_chunked(CHUNK):
                    received += len(chunk)
                    if received > max_bytes:
                        raise AttachmentError(name, f"it is larger than {max_bytes} bytes")
                    if reported is not None and received > reported:
                        raise AttachmentError(name, "it is larger than Discord reported")
                    yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Not the exception's text: it may carry the signed URL, which opens a private
            # channel's file to whoever reads the log.
            log.warning(
                "download of attachment %s (%s) from %s failed: %s",
                attachment.id,
                name,
                describe_url(attachment.url),
                describe_exception(exc),
            )
            raise AttachmentError(name, "it could not be downloaded from Discord") from exc
        if reported is not None and received != reported:
            raise AttachmentError(name, "it is smaller than Discord reported")
