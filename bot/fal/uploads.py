"""Uploads to fal storage: a file's bytes (or a stream of them) in, a public URL out
(fal-protocol §7). Used by ``FalClient.upload`` and ``upload_stream``."""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot.domain.errors import AttachmentError, ModelError, ModelUnavailable
from bot.domain.ports import OpenBody
from bot.fal import wire
from bot.fal.http import Http, Response
from bot.fal.settings import FalSettings

log = logging.getLogger(__name__)

# A refusal of the bot's key as the domain error (``FalClient._error``: logged once).
Refused = Callable[[Response, str, str | None], ModelError]


class FalUploads:
    """Initiates an upload with the bot's key, then PUTs the file to the signed URL fal
    returns (which is the credential there: the key does not go along)."""

    def __init__(
        self, http: Http, settings: FalSettings, headers: dict[str, str], refused: Refused
    ) -> None:
        self._http = http
        self._settings = settings
        self._refused = refused
        self._initiate_url = f"{settings.rest_base.rstrip('/')}/storage/upload/initiate"
        self._initiate_headers = dict(headers)
        lifetime = settings.upload_lifetime
        if lifetime is not None:
            # The file lives as long as the history that points at it (fal-protocol §7.2).
            preference = wire.dumps({"expiration_duration_seconds": lifetime})
            self._initiate_headers["X-Fal-Object-Lifecycle-Preference"] = preference.decode()

    async def store(
        self, data: bytes | OpenBody, size: int, content_type: str, file_name: str
    ) -> str:
        """Store ``data`` (bytes, or a body of ``size`` bytes opened again for each try) in
        fal's CDN and return its public URL (fal-protocol §7.1). The PUT announces ``size``
        as its length and sends a streamed body's chunks as they come, so no whole file is
        held; an ``AttachmentError`` from the body (its source) ends the upload as it is.

        A refused key raises ``ModelAuthError`` (it concerns every turn, not this file);
        any other failure raises ``AttachmentError`` naming the file, so a turn can go on
        without that attachment.
        """
        try:
            response = await self._http.call(
                "POST",
                self._initiate_url,
                op="upload initiate",
                # Initiating only mints a signed URL: doing it twice leaves an unused URL,
                # so a retry after an unanswered POST is harmless.
                idempotent=True,
                headers=self._initiate_headers,
                params={"storage_type": "fal-cdn-v3"},
                data=wire.dumps({"content_type": content_type, "file_name": file_name}),
            )
        except ModelUnavailable as exc:
            raise AttachmentError(file_name, "fal storage could not be reached") from exc
        if response.status in (401, 403):
            raise self._refused(response, "upload initiate", None)
        if not response.ok:
            log.warning("fal upload initiate for a file failed: HTTP %d", response.status)
            raise AttachmentError(
                file_name, f"fal storage refused the file (HTTP {response.status})"
            )
        urls = wire.parse_upload(response.json())
        if urls is None:
            raise AttachmentError(file_name, "fal storage answered unexpectedly")
        try:
            # The signed URL is the credential here: no Authorization header may go along.
            # The length is announced, so a streamed body is sent as is, not chunked.
            stored = await self._http.call(
                "PUT",
                urls["upload_url"],
                op="upload",
                idempotent=True,
                headers={
                    "Content-Type": content_type,
                    "Content-Length": str(size),
                    "User-Agent": self._settings.user_agent,
                },
                data=data,
                total_timeout=self._settings.upload_timeout,
            )
        except ModelUnavailable:
            # Not chained: some aiohttp errors quote the URL, whose query is a signature.
            raise AttachmentError(file_name, "the upload to fal storage failed") from None
        if not stored.ok:
            log.warning("fal upload of a file failed: HTTP %d", stored.status)
            raise AttachmentError(
                file_name, f"fal storage refused the upload (HTTP {stored.status})"
            )
        log.info("fal stored a file of %d bytes (%s)", size, content_type)
        return urls["file_url"]
