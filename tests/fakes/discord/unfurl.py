"""Links Discord unfurls: the embeds it adds to a message a moment after it is created
(MESSAGE_UPDATE), shaped as Discord documents them (``type`` image/gifv/video/link, the
media under ``thumbnail``/``image``/``video`` with ``url``, ``proxy_url``, ``width`` and
``height``), and its media proxy (``images-ext-N.discordapp.net/external/...``) serving them.

The proxy is served by the fake itself under ``/external/{key}/{original host and path}``:
the bot reaches the linked media only through it, never the linked site.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from aiohttp import web
from yarl import URL

from .events import CdnFetched
from .media import image_size

if TYPE_CHECKING:
    from .server import FakeDiscord

__all__ = ["gifv_embed", "handle_external", "image_embed", "link_embed", "video_embed"]


def _proxied(fake: FakeDiscord, url: str, data: bytes, content_type: str) -> dict[str, Any]:
    """Register ``data`` with the fake media proxy; the embed media object for ``url``."""
    key = hashlib.sha256(url.encode()).hexdigest()[:24]
    original = URL(url)
    fake.external_media[key] = (data, content_type)
    proxy = f"{fake.base_url}/external/{key}/{original.scheme}/{original.host}{original.path}"
    width, height = image_size(data) or (640, 360)
    return {"url": url, "proxy_url": proxy, "width": width, "height": height}


def image_embed(
    fake: FakeDiscord, url: str, data: bytes, content_type: str = "image/png"
) -> dict[str, Any]:
    """A link straight to an image: Discord shows the image as the embed's thumbnail."""
    return {"type": "image", "url": url, "thumbnail": _proxied(fake, url, data, content_type)}


def gifv_embed(fake: FakeDiscord, url: str, mp4: bytes, still: bytes) -> dict[str, Any]:
    """A Tenor/Giphy link: a looping MP4 (``video``) with a still (``thumbnail``)."""
    stem = url.rstrip("/").rsplit("/", 1)[-1]
    return {
        "type": "gifv",
        "url": url,
        "provider": {"name": "Tenor", "url": "https://tenor.co"},
        "thumbnail": _proxied(
            fake, f"https://media.tenor.com/{stem}/AAAAe/{stem}.png", still, "image/png"
        ),
        "video": _proxied(
            fake, f"https://media.tenor.com/{stem}/AAAPo/{stem}.mp4", mp4, "video/mp4"
        ),
    }


def video_embed(fake: FakeDiscord, url: str, mp4: bytes) -> dict[str, Any]:
    """A link straight to a video file."""
    return {"type": "video", "url": url, "video": _proxied(fake, url, mp4, "video/mp4")}


def link_embed(url: str, title: str, description: str = "") -> dict[str, Any]:
    """A web page's preview card: nothing the bot downloads through the proxy."""
    return {"type": "link", "url": url, "title": title, "description": description}


async def handle_external(fake: FakeDiscord, request: web.Request) -> web.StreamResponse:
    key = request.match_info["key"]
    found = fake.external_media.get(key)
    status = 200 if found is not None else 404
    fake.record(CdnFetched(path=request.path, attachment_id=None, status=status))
    if found is None:
        return web.Response(status=404, text="Not Found")
    data, content_type = found
    return web.Response(body=data, headers={"Content-Type": content_type})
