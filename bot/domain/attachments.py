"""Attachments: what each file becomes (image, video, inlined text, or left out), and the
preparation of a turn's files: streamed from Discord to durable storage, named safely, with
a bound on the files and bytes being prepared at once over all turns. The plan is pure;
:class:`MediaPreparer` does the I/O through the ports."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import unicodedata
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

from bot.domain.errors import AttachmentError, ModelError
from bot.domain.links import LinkPolicy, PageReader, ReadPages, read_pages
from bot.domain.models import (
    MAX_IMAGES_PER_TURN,
    MAX_VIDEOS_PER_TURN,
    Attachment,
    MediaKind,
    Origin,
)
from bot.domain.ports import MediaSource, ModelClient, OpenBody

log = logging.getLogger(__name__)

AttachmentMode = Literal["fal_storage", "discord_url", "data_uri"]
ATTACHMENT_MODES: tuple[AttachmentMode, ...] = ("fal_storage", "discord_url", "data_uri")

IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WebP"}
VIDEO_TYPES = {"video/mp4": "MP4", "video/quicktime": "MOV"}
# The model takes no GIF: an animated GIF goes as a video (converted to MP4, see bot/gifs.py).
GIF_TYPE = "image/gif"
IMAGE_EXTENSIONS = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}
VIDEO_EXTENSIONS = {".mp4": "video/mp4", ".mov": "video/quicktime"}
TEXT_EXTENSIONS = {
    ".txt": "",
    ".md": "markdown",
    ".py": "python",
    ".json": "json",
    ".csv": "csv",
    ".log": "",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".ini": "ini",
    ".cfg": "ini",
    ".js": "javascript",
    ".ts": "typescript",
    ".html": "html",
    ".css": "css",
    ".xml": "xml",
    ".sh": "bash",
    ".c": "c",
    ".h": "c",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".rs": "rust",
    ".go": "go",
    ".java": "java",
    ".kt": "kotlin",
    ".rb": "ruby",
    ".sql": "sql",
    ".diff": "diff",
    ".patch": "diff",
    ".rst": "rst",
    ".tex": "latex",
}
TEXT_TYPES = {
    "application/json",
    "application/xml",
    "application/x-yaml",
    "application/toml",
    "application/javascript",
    "application/x-sh",
}
GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream"}

# The defaults of the attachment limits, written once (config.py uses them).
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_VIDEO_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_TEXT_BYTES = 64 * 1024
DEFAULT_MAX_DATA_URI_BYTES = 256 * 1024
DEFAULT_ATTACHMENT_MODE: AttachmentMode = "fal_storage"
# Inlined text per turn (a burst, a quoted message's files included): ~48k tokens at most.
DEFAULT_MAX_TEXT_FILES = 10
DEFAULT_MAX_TEXT_BYTES_PER_TURN = 192 * 1024
# Preparation over all turns at once: a few full-size videos streaming side by side.
DEFAULT_MAX_FILES_IN_FLIGHT = 8
DEFAULT_MAX_BYTES_IN_FLIGHT = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class AttachmentLimits:
    max_images: int = MAX_IMAGES_PER_TURN
    max_videos: int = MAX_VIDEOS_PER_TURN
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES
    max_text_files: int = DEFAULT_MAX_TEXT_FILES
    max_text_bytes_per_turn: int = DEFAULT_MAX_TEXT_BYTES_PER_TURN


@dataclass(frozen=True, slots=True)
class AttachmentPolicy:
    """How a turn's files reach the model: the limits, how media are handed over (copied
    to fal storage, the Discord URL as is, or small images inline as data URIs), and how
    many files and bytes may be prepared at once over all turns."""

    limits: AttachmentLimits = field(default_factory=AttachmentLimits)
    mode: AttachmentMode = DEFAULT_ATTACHMENT_MODE
    max_data_uri_bytes: int = DEFAULT_MAX_DATA_URI_BYTES
    max_files_in_flight: int = DEFAULT_MAX_FILES_IN_FLIGHT
    max_bytes_in_flight: int = DEFAULT_MAX_BYTES_IN_FLIGHT
    links: LinkPolicy = field(default_factory=LinkPolicy)


# A GIF's bytes -> the same animation as MP4; raises AttachmentError naming the file.
GifConverter = Callable[[bytes, str], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class Readers:
    """What turns links and GIFs into what the model takes (adapters outside the domain;
    without them, linked pages are not read and GIFs are left out)."""

    pages: PageReader | None = None
    gif_to_mp4: GifConverter | None = None


@dataclass(frozen=True, slots=True)
class AttachmentPlan:
    """Attachments sorted by what they become, and one note per file left out."""

    images: tuple[Attachment, ...] = ()
    videos: tuple[Attachment, ...] = ()
    texts: tuple[Attachment, ...] = ()
    dropped: tuple[str, ...] = ()
    # The bytes of each text file (parallel to ``texts``) that fit the turn's text budget,
    # judged by the sizes Discord reports: a file given less than its size is cut.
    text_allowances: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class InlinedText:
    filename: str
    text: str
    # Set when only the file's start is inlined: its full size in bytes.
    cut_from: int | None = None
    # A linked web page's text (``filename`` is its link), not a file the person attached.
    page: bool = False


@dataclass(frozen=True, slots=True)
class PreparedMedia:
    """A turn's files once prepared: the URLs sent with the names of the files behind them
    (parallel tuples), text files to inline, and a note per file left out."""

    image_urls: tuple[str, ...] = ()
    image_names: tuple[str, ...] = ()
    video_urls: tuple[str, ...] = ()
    video_names: tuple[str, ...] = ()
    inlined: tuple[InlinedText, ...] = ()
    warnings: tuple[str, ...] = ()


def _base_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def media_type(att: Attachment) -> tuple[MediaKind, str]:
    """What an attachment is: by content type, with the file extension as the fallback when
    the type is missing or generic. Returns the kind and the effective MIME type."""
    ctype = _base_type(att.content_type)
    ext = PurePosixPath(att.filename.lower()).suffix
    if ctype in GENERIC_TYPES:
        if ext in IMAGE_EXTENSIONS:
            return MediaKind.IMAGE, IMAGE_EXTENSIONS[ext]
        if ext in VIDEO_EXTENSIONS:
            return MediaKind.VIDEO, VIDEO_EXTENSIONS[ext]
        if ext == ".gif":
            return MediaKind.VIDEO, GIF_TYPE
        if ext in TEXT_EXTENSIONS:
            return MediaKind.TEXT, "text/plain"
        return MediaKind.UNSUPPORTED, ctype or "unknown"
    if ctype in IMAGE_TYPES:
        return MediaKind.IMAGE, ctype
    if ctype in VIDEO_TYPES or ctype == GIF_TYPE:
        return MediaKind.VIDEO, ctype
    if ctype.startswith("text/") or ctype in TEXT_TYPES:
        return MediaKind.TEXT, ctype
    return MediaKind.UNSUPPORTED, ctype


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def shown_name(name: str) -> str:
    """A user's file name quoted for a warning line: short, in a code span, unable to break
    Discord markdown or ping anyone."""
    clean = re.sub(r"[`*_~|<>@\\\n\r\t]", "", name)[:60]
    return f"`{clean or 'file'}`"


_UNSAFE_NAME_CHARS = re.compile(r"[^\w.\- ]+")


def safe_file_name(name: str, fallback: str = "file") -> str:
    """A file name fit to hand to another service: the last path segment only (no ``../``),
    without control, format or path characters, at most 100 characters with its extension
    kept, never empty or a dot name."""
    base = re.split(r"[\\/]", name)[-1]
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C")
    base = _UNSAFE_NAME_CHARS.sub("_", base).strip(" .")
    if len(base) > 100:
        stem, dot, ext = base.rpartition(".")
        ext = ext[:16] if dot else ""
        base = (stem if dot else base)[: 100 - len(ext) - 1].rstrip(" .") + (
            f".{ext}" if ext else ""
        )
    return base or fallback


def plan_attachments(attachments: Sequence[Attachment], limits: AttachmentLimits) -> AttachmentPlan:
    """Sort attachments into images, videos and text files within the limits; everything
    left out gets one short note naming it and why."""
    images: list[Attachment] = []
    videos: list[Attachment] = []
    texts: list[Attachment] = []
    allowances: list[int] = []
    text_left = limits.max_text_bytes_per_turn
    dropped: list[str] = []
    over_images: list[str] = []
    over_videos: list[str] = []
    over_texts: list[str] = []
    no_room: list[str] = []
    for att in attachments:
        kind, ctype = media_type(att)
        name = shown_name(att.filename)
        if att.size <= 0 and att.origin is Origin.FILE:
            dropped.append(f"{name} is empty")
        elif kind is MediaKind.IMAGE:
            if att.size > limits.max_image_bytes:
                dropped.append(f"{name} is over the {_size(limits.max_image_bytes)} image limit")
            elif len(images) >= limits.max_images:
                over_images.append(name)
            else:
                images.append(att)
        elif kind is MediaKind.VIDEO:
            if att.size > limits.max_video_bytes:
                dropped.append(f"{name} is over the {_size(limits.max_video_bytes)} video limit")
            elif len(videos) >= limits.max_videos:
                over_videos.append(name)
            else:
                videos.append(att)
        elif kind is MediaKind.TEXT:
            if att.size > limits.max_text_bytes:
                dropped.append(f"{name} is over the {_size(limits.max_text_bytes)} text-file limit")
            elif len(texts) >= limits.max_text_files:
                over_texts.append(name)
            elif text_left <= 0:
                no_room.append(name)
            else:
                texts.append(att)
                allowances.append(min(att.size, text_left))
                text_left -= allowances[-1]
        else:
            dropped.append(
                f"{name} ({ctype}) is not a supported type (JPEG, PNG, WebP, GIF, MP4, MOV or text)"
            )
    if over_images:
        dropped.append(
            f"only {limits.max_images} images per message are sent; left out "
            + ", ".join(over_images)
        )
    if over_videos:
        dropped.append(
            f"only {limits.max_videos} videos per message are sent; left out "
            + ", ".join(over_videos)
        )
    # The count first: a long list of names may be cut from the end of the warning line.
    if over_texts:
        dropped.append(
            f"{len(over_texts)} text files left out (only {limits.max_text_files} per "
            "message are read): " + ", ".join(over_texts)
        )
    if no_room:
        dropped.append(
            f"{len(no_room)} text files left out (at most "
            f"{_size(limits.max_text_bytes_per_turn)} of text per message): " + ", ".join(no_room)
        )
    return AttachmentPlan(
        tuple(images), tuple(videos), tuple(texts), tuple(dropped), tuple(allowances)
    )


def text_language(filename: str) -> str:
    return TEXT_EXTENSIONS.get(PurePosixPath(filename.lower()).suffix, "")


def left_out(filename: str, reason: str) -> str:
    """The warning for a file that could not be used. ``reason`` may come from elsewhere
    (fal's error text): on one line, short, and unable to open a code block."""
    reason = " ".join(reason.replace("`", "ˋ").split())
    if len(reason) > 160:
        reason = reason[:159] + "…"
    return f"{shown_name(filename)} could not be used: {reason}"


def cut_text(data: bytes, allowance: int) -> str:
    """The start of a UTF-8 text (``data`` decodes) within ``allowance`` bytes: never half a
    character, and ending at a line end when one lies in its second half."""
    text = data[:allowance].decode("utf-8", "ignore")  # only a split last character drops
    newline = text.rfind("\n")
    return text[:newline] if newline >= len(text) // 2 else text


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
        readers: Readers = Readers(),
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
        content_type = _base_type(att.content_type) or media_type(att)[1]
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
        f"{shown_name(att.filename)} was cut to its first {_size(len(cut.encode()))} "
        f"(at most {_size(limits.max_text_bytes_per_turn)} of text per message)"
    )
    return InlinedText(att.filename, cut, cut_from=len(data))
