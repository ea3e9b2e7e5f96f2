"""Attachments: what each file becomes (image, video, inlined text, or left out), and the
preparation of a turn's files: downloaded from Discord, copied to durable storage, named
safely. The plan is pure; :func:`prepare_media` does the I/O through the ports."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

from bot.domain.errors import AttachmentError, ModelError
from bot.domain.models import (
    MAX_IMAGES_PER_TURN,
    MAX_VIDEOS_PER_TURN,
    Attachment,
    MediaKind,
)
from bot.domain.ports import MediaSource, ModelClient

log = logging.getLogger(__name__)

AttachmentMode = Literal["fal_storage", "discord_url", "data_uri"]
ATTACHMENT_MODES: tuple[AttachmentMode, ...] = ("fal_storage", "discord_url", "data_uri")

IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WebP"}
VIDEO_TYPES = {"video/mp4": "MP4", "video/quicktime": "MOV"}
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


@dataclass(frozen=True, slots=True)
class AttachmentLimits:
    max_images: int = MAX_IMAGES_PER_TURN
    max_videos: int = MAX_VIDEOS_PER_TURN
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES


@dataclass(frozen=True, slots=True)
class AttachmentPolicy:
    """How a turn's files reach the model: the limits, and how media are handed over
    (copied to fal storage, the Discord URL as is, or small images inline as data URIs)."""

    limits: AttachmentLimits = field(default_factory=AttachmentLimits)
    mode: AttachmentMode = DEFAULT_ATTACHMENT_MODE
    max_data_uri_bytes: int = DEFAULT_MAX_DATA_URI_BYTES


@dataclass(frozen=True, slots=True)
class AttachmentPlan:
    """Attachments sorted by what they become, and one note per file left out."""

    images: tuple[Attachment, ...] = ()
    videos: tuple[Attachment, ...] = ()
    texts: tuple[Attachment, ...] = ()
    dropped: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InlinedText:
    filename: str
    text: str


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
        if ext in TEXT_EXTENSIONS:
            return MediaKind.TEXT, "text/plain"
        return MediaKind.UNSUPPORTED, ctype or "unknown"
    if ctype in IMAGE_TYPES:
        return MediaKind.IMAGE, ctype
    if ctype in VIDEO_TYPES:
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
    dropped: list[str] = []
    over_images: list[str] = []
    over_videos: list[str] = []
    for att in attachments:
        kind, ctype = media_type(att)
        name = shown_name(att.filename)
        if att.size <= 0:
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
            else:
                texts.append(att)
        else:
            dropped.append(
                f"{name} ({ctype}) is not a supported type (JPEG, PNG, WebP, MP4, MOV or text)"
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
    return AttachmentPlan(tuple(images), tuple(videos), tuple(texts), tuple(dropped))


def text_language(filename: str) -> str:
    return TEXT_EXTENSIONS.get(PurePosixPath(filename.lower()).suffix, "")


def left_out(filename: str, reason: str) -> str:
    """The warning for a file that could not be used. ``reason`` may come from elsewhere
    (fal's error text): on one line, short, and unable to open a code block."""
    reason = " ".join(reason.replace("`", "ˋ").split())
    if len(reason) > 160:
        reason = reason[:159] + "…"
    return f"{shown_name(filename)} could not be used: {reason}"


async def prepare_media(
    attachments: Sequence[Attachment],
    policy: AttachmentPolicy,
    media: MediaSource,
    model: ModelClient,
) -> PreparedMedia:
    """Plan the attachments, then fetch and hand over each one (concurrently). A file that
    cannot be had is left out with a warning naming it; the others go on."""
    plan = plan_attachments(attachments, policy.limits)
    limits = policy.limits
    jobs = [
        *(_media_url(a, limits.max_image_bytes, True, policy, media, model) for a in plan.images),
        *(_media_url(a, limits.max_video_bytes, False, policy, media, model) for a in plan.videos),
        *(media.fetch(a, limits.max_text_bytes) for a in plan.texts),
    ]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    kinds = [MediaKind.IMAGE] * len(plan.images) + [MediaKind.VIDEO] * len(plan.videos)
    kinds += [MediaKind.TEXT] * len(plan.texts)
    ordered = [*plan.images, *plan.videos, *plan.texts]
    warnings = list(plan.dropped)
    urls: dict[MediaKind, list[tuple[str, str]]] = {MediaKind.IMAGE: [], MediaKind.VIDEO: []}
    inlined: list[InlinedText] = []
    for att, kind, result in zip(ordered, kinds, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, AttachmentError | ModelError):
                raise result
            log.warning("attachment %s left out: %s", att.id, result)
            reason = result.reason if isinstance(result, AttachmentError) else result.message
            warnings.append(left_out(att.filename, reason))
        elif kind is MediaKind.TEXT:
            assert isinstance(result, bytes)
            try:
                inlined.append(InlinedText(att.filename, result.decode("utf-8")))
            except UnicodeDecodeError:
                warnings.append(f"{shown_name(att.filename)} is not UTF-8 text")
        else:
            assert isinstance(result, str)
            urls[kind].append((result, att.filename))
    images, videos = urls[MediaKind.IMAGE], urls[MediaKind.VIDEO]
    return PreparedMedia(
        image_urls=tuple(u for u, _ in images),
        image_names=tuple(n for _, n in images),
        video_urls=tuple(u for u, _ in videos),
        video_names=tuple(n for _, n in videos),
        inlined=tuple(inlined),
        warnings=tuple(warnings),
    )


async def _media_url(
    att: Attachment,
    max_bytes: int,
    image: bool,
    policy: AttachmentPolicy,
    media: MediaSource,
    model: ModelClient,
) -> str:
    if policy.mode == "discord_url":
        return att.url
    data = await media.fetch(att, max_bytes)
    content_type = _base_type(att.content_type) or media_type(att)[1]
    if content_type in GENERIC_TYPES:
        content_type = "application/octet-stream"
    if policy.mode == "data_uri" and image and len(data) <= policy.max_data_uri_bytes:
        return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
    return await model.upload(
        data, content_type=content_type, file_name=safe_file_name(att.filename)
    )
