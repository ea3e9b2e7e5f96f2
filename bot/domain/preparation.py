"""Preparing a turn's files: fetching them from Discord and handing each over to the model
(uploaded to fal storage, linked, or inlined), within bounds shared by all turns. What each
file becomes is planned in ``bot.domain.attachments``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import PurePosixPath

from bot.domain.attachments import (
    GENERIC_TYPES,
    GIF_TYPE,
    AttachmentLimits,
    AttachmentPolicy,
    InlinedText,
    PreparedMedia,
    Readers,
    base_type,
    cut_text,
    left_out,
    media_type,
    plan_attachments,
    safe_file_name,
    shown_name,
    shown_size,
)
from bot.domain.errors import AttachmentError, ModelError
from bot.domain.links import ReadPages, read_pages
from bot.domain.models import Attachment, MediaKind, Origin
from bot.domain.ports import MediaSource, ModelClient, OpenBody

log = logging.getLogger(__name__)

NO_READERS = Readers()  # links not read, GIFs left out


class ByteGate:
    """A semaphore counted in bytes, first come first served (a large file is not starved by
    small ones behind it). A file larger than the whole capacity waits until it is alone."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.free = capacity
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        weight = min(max(size, 1), self.capacity)
        if self._waiters or self.free < weight:
            granted = asyncio.get_running_loop().create_future()
            self._waiters.append((weight, granted))
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._release(weight)  # granted just as the waiter was cancelled
                else:
                    granted.cancel()
                    self._wake()  # it may have been the head others waited behind
                raise
        else:
            self.free -= weight
        try:
            yield
        finally:
            self._release(weight)

    def _release(self, weight: int) -> None:
        self.free += weight
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            weight, granted = self._waiters[0]
            if granted.done():
                self._waiters.popleft()  # its waiter was cancelled
            elif weight <= self.free:
                self._waiters.popleft()
                self.free -= weight
                granted.set_result(None)
            else:
                return


_Prepared = str | bytes  # a media file's URL for the model, or a text file's bytes


class PreparedFiles:
    """The files already prepared for one turn, by attachment: when a burst starts the turn
    over with a follow-up's files, the earlier ones are not downloaded or uploaded again.
    Files Discord or fal storage refused are remembered too (asking again would not help);
    a failure of fal itself is not."""

    def __init__(self) -> None:
        self._done: dict[tuple[str, str], _Prepared | AttachmentError] = {}

    def get(self, key: tuple[str, str]) -> _Prepared | AttachmentError | None:
        return self._done.get(key)

    def put(self, key: tuple[str, str], outcome: _Prepared | AttachmentError) -> None:
        self._done[key] = outcome


class MediaPreparer:
    """Prepares turns' files, all turns sharing one bound on the files being prepared at
    once and on their bytes (by the sizes Discord reports). Media are streamed from Discord
    to fal storage chunk by chunk; only text files and data-URI images are held whole, and
    those are small by their limits."""

    def __init__(
        self,
        media: MediaSource,
        model: ModelClient,
        policy: AttachmentPolicy,
        readers: Readers = NO_READERS,
    ) -> None:
        self.source = media
        self._model = model
        self.readers = readers
        self.max_files_in_flight = policy.max_files_in_flight
        self.bytes = ByteGate(policy.max_bytes_in_flight)
        self._slots = asyncio.Semaphore(policy.max_files_in_flight)
        self.waiting = 0  # files waiting for room to be prepared
        self.waiting_changed = asyncio.Event()  # set on each change (tests wait on it)

    def bounded_as(self, policy: AttachmentPolicy) -> bool:
        """Whether this preparer's bounds are ``policy``'s (else a reload needs a new one)."""
        return (
            self.max_files_in_flight == policy.max_files_in_flight
            and self.bytes.capacity == policy.max_bytes_in_flight
        )

    async def prepare(
        self,
        attachments: Sequence[Attachment],
        policy: AttachmentPolicy,
        reuse: PreparedFiles | None = None,
    ) -> PreparedMedia:
        """Plan the attachments, then fetch and hand over each one (concurrently, within
        the bounds). A file that cannot be had is left out with a warning naming it; the
        others go on. Files in ``reuse`` are taken from there, and new ones added. Linked
        pages are read meanwhile, and inlined after the files."""
        links = [a for a in attachments if a.origin is Origin.PAGE]
        plan = plan_attachments(
            [a for a in attachments if a.origin is not Origin.PAGE], policy.limits
        )
        kinds = [MediaKind.IMAGE] * len(plan.images) + [MediaKind.VIDEO] * len(plan.videos)
        kinds += [MediaKind.TEXT] * len(plan.texts)
        ordered = [*plan.images, *plan.videos, *plan.texts]
        # Pages are read while the files are prepared; most turns link none: no task then.
        read = (
            asyncio.ensure_future(read_pages(self.readers.pages, links, policy.links))
            if links
            else None
        )
        try:
            results = await asyncio.gather(
                *(self._prepared(a, k, policy, reuse) for a, k in zip(ordered, kinds, strict=True)),
                return_exceptions=True,
            )
            pages = await read if read is not None else ReadPages()
        finally:
            if read is not None:
                read.cancel()
        failures: list[str] = []
        cut: list[str] = []  # first: a cut file is in the prompt, the user should know
        urls: dict[MediaKind, list[tuple[str, str]]] = {MediaKind.IMAGE: [], MediaKind.VIDEO: []}
        inlined: list[InlinedText] = []
        allowances = iter(plan.text_allowances)
        for att, kind, result in zip(ordered, kinds, results, strict=True):
            allowance = next(allowances) if kind is MediaKind.TEXT else 0
            if isinstance(result, BaseException):
                if not isinstance(result, AttachmentError | ModelError):
                    raise result
                log.warning("attachment %s left out: %s", att.id, result)
                reason = result.reason if isinstance(result, AttachmentError) else result.message
                failures.append(left_out(att.filename, reason))
            elif kind is MediaKind.TEXT:
                assert isinstance(result, bytes)
                text = _inlined(att, result, allowance, policy.limits, cut, failures)
                if text is not None:
                    inlined.append(text)
            else:
                assert isinstance(result, str)
                urls[kind].append((result, att.filename))
        images, videos = urls[MediaKind.IMAGE], urls[MediaKind.VIDEO]
        return PreparedMedia(
            image_urls=tuple(u for u, _ in images),
            image_names=tuple(n for _, n in images),
            video_urls=tuple(u for u, _ in videos),
            video_names=tuple(n for _, n in videos),
            inlined=(
                *inlined,
                *(InlinedText(p.url, p.text, page=True) for p in pages.pages),
            ),
            warnings=(*cut, *plan.dropped, *failures, *pages.notes),
        )

    async def _prepared(
        self,
        att: Attachment,
        kind: MediaKind,
        policy: AttachmentPolicy,
        reuse: PreparedFiles | None,
    ) -> _Prepared:
        key = (att.id, policy.mode)
        known = reuse.get(key) if reuse is not None else None
        if isinstance(known, AttachmentError):
            raise known
        if known is not None:
            return known
        try:
            outcome = await self._prepare_one(att, kind, policy)
        except AttachmentError as exc:
            if reuse is not None:
                reuse.put(key, exc)
            raise
        if reuse is not None:
            reuse.put(key, outcome)
        return outcome

    async def _prepare_one(
        self, att: Attachment, kind: MediaKind, policy: AttachmentPolicy
    ) -> _Prepared:
        limits = policy.limits
        if kind is MediaKind.TEXT:
            async with self._held(att.size):
                return await self.source.fetch(att, limits.max_text_bytes)
        if media_type(att)[1] == GIF_TYPE:
            return await self._gif(att, limits.max_image_bytes)
        if policy.mode == "discord_url":
            return att.url
        image = kind is MediaKind.IMAGE
        max_bytes = limits.max_image_bytes if image else limits.max_video_bytes
        if att.origin is Origin.LINKED:
            return await self._linked(att, max_bytes, policy, inline=image)
        content_type = base_type(att.content_type) or media_type(att)[1]
        if content_type in GENERIC_TYPES:
            content_type = "application/octet-stream"
        file_name = safe_file_name(att.filename)
        async with self._held(att.size):
            if policy.mode == "data_uri" and image and att.size <= policy.max_data_uri_bytes:
                data = await self.source.fetch(att, max_bytes)
                if len(data) <= policy.max_data_uri_bytes:
                    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
                return await self._model.upload(
                    data, content_type=content_type, file_name=file_name
                )
            return await self._model.upload_stream(
                self._body(att, max_bytes),
                size=att.size,
                content_type=content_type,
                file_name=file_name,
            )

    async def _linked(
        self, att: Attachment, max_bytes: int, policy: AttachmentPolicy, *, inline: bool
    ) -> str:
        """Linked media, whose size no one reported: fetched whole within the cap (held as
        large as the cap), then copied like a file (a streamed upload must announce a size)."""
        content_type = media_type(att)[1]
        async with self._held(max_bytes):
            data = await self.source.fetch(att, max_bytes)
            if inline and policy.mode == "data_uri" and len(data) <= policy.max_data_uri_bytes:
                return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
            return await self._model.upload(
                data, content_type=content_type, file_name=safe_file_name(att.filename)
            )

    async def _gif(self, att: Attachment, max_bytes: int) -> str:
        """A GIF as the MP4 the model takes, copied to fal storage whatever the mode (no
        link to the GIF would do). Held whole: bounded by the image limit."""
        convert = self.readers.gif_to_mp4
        if convert is None:
            raise AttachmentError(att.filename, "GIFs cannot be converted here")
        async with self._held(att.size or max_bytes):
            mp4 = await convert(await self.source.fetch(att, max_bytes), att.filename)
            name = safe_file_name(PurePosixPath(att.filename).stem + ".mp4")
            return await self._model.upload(mp4, content_type="video/mp4", file_name=name)

    def _body(self, att: Attachment, max_bytes: int) -> OpenBody:
        media = self.source

        async def body() -> AsyncGenerator[bytes, None]:
            # Closed with the body: a PUT that fails half-way lets go of the download too.
            async with contextlib.aclosing(media.stream(att, max_bytes)) as chunks:
                async for chunk in chunks:
                    yield chunk

        return body

    @contextlib.asynccontextmanager
    async def _held(self, size: int) -> AsyncIterator[None]:
        # A slot, then the bytes: the bytes held are those of files being prepared now (a
        # file waiting for bytes holds a slot, but the files behind it would wait for bytes
        # anyway: the byte gate is first come, first served).
        self._count_waiting(1)
        try:
            async with self._slots, self.bytes.hold(size):
                self._count_waiting(-1)
                size = -1  # marks it no longer waiting
                yield
        finally:
            if size >= 0:
                self._count_waiting(-1)

    def _count_waiting(self, change: int) -> None:
        self.waiting += change
        self.waiting_changed.set()


def _inlined(
    att: Attachment,
    data: bytes,
    allowance: int,
    limits: AttachmentLimits,
    cut_notes: list[str],
    failures: list[str],
) -> InlinedText | None:
    """A text file as inlined (cut to its share of the turn's text budget, with a note),
    or None with a failure note when it is not UTF-8 text."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        failures.append(f"{shown_name(att.filename)} is not UTF-8 text")
        return None
    if len(data) <= allowance:
        return InlinedText(att.filename, text)
    cut = cut_text(data, allowance)
    cut_notes.append(
        f"{shown_name(att.filename)} was cut to its first {shown_size(len(cut.encode()))} "
        f"(at most {shown_size(limits.max_text_bytes_per_turn)} of text per message)"
    )
    return InlinedText(att.filename, cut, cut_from=len(data))
