"""The fake CDN: serves attachments at Discord-shaped signed, expiring URLs.

``/attachments/{channel_id}/{attachment_id}/{filename}?ex=<hex expiry>&is=<hex issued>&hm=<hmac>&``
(``/ephemeral-attachments/{application_id}/...`` for slash command attachment options, and the
same under ``/media`` for ``proxy_url``). Like Discord's CDN: an expired link answers 404 and
a missing or wrong signature 403, both with "This content is no longer available.". Expiry
follows the fake's clock (``fake.advance_time``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .events import CdnFetched
from .models import FakeAttachment

if TYPE_CHECKING:
    from .server import FakeDiscord

__all__ = ["handle_cdn"]

GONE = "This content is no longer available."


async def handle_cdn(fake: FakeDiscord, request: web.Request) -> web.StreamResponse:
    raw_path = request.raw_path.split("?", 1)[0]
    path = raw_path.removeprefix("/media")
    attachment_id = request.match_info["attachment_id"]
    attachment = fake.attachments.get(int(attachment_id)) if attachment_id.isdigit() else None
    status = _check(fake, request, path, attachment)
    fake.record(
        CdnFetched(
            path=raw_path, attachment_id=attachment.id if attachment else None, status=status
        )
    )
    if status != 200 or attachment is None:
        return web.Response(status=status, text=GONE)
    content_type = attachment.content_type or "application/octet-stream"
    if isinstance(attachment.data, bytes):
        return web.Response(body=attachment.data, headers={"Content-Type": content_type})
    response = web.StreamResponse(headers={"Content-Type": content_type})
    response.content_length = attachment.size
    await response.prepare(request)
    for chunk in attachment.data.chunks():
        await response.write(chunk)
    await response.write_eof()
    return response


def _check(
    fake: FakeDiscord, request: web.Request, path: str, attachment: FakeAttachment | None
) -> int:
    if attachment is None or attachment.path != path:
        return 404
    ex, is_, hm = (request.query.get(k, "") for k in ("ex", "is", "hm"))
    if not (ex and is_ and hm) or not fake.check_signature(path, ex, is_, hm):
        return 403
    try:
        expires = int(ex, 16)
    except ValueError:
        return 403
    if expires < fake.now():
        return 404
    return 200
