"""Attachments: what each file becomes (image, video, inlined text, or left out), the limits
and policy that decide it, and how files are named safely. Pure: the preparation that does
the I/O through the ports is ``bot.domain.preparation``."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

from bot.domain.links import LinkPolicy, PageReader
from bot.domain.models import (
    MAX_IMAGES_PER_TURN,
    MAX_VIDEOS_PER_TURN,
    Attachment,
    MediaKind,
    Origin,
)

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


def base_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def media_type(att: Attachment) -> tuple[MediaKind, str]:
    """What an attachment is: by content type, with the file extension as the fallback when
    the type is missing or generic. Returns the kind and the effective MIME type."""
    ctype = base_type(att.content_type)
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


def shown_size(n: float) -> str:
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
    # Per kind: the largest file, how many per message, and the limit's name.
    caps = {
        MediaKind.IMAGE: (limits.max_image_bytes, limits.max_images, "image"),
        MediaKind.VIDEO: (limits.max_video_bytes, limits.max_videos, "video"),
        MediaKind.TEXT: (limits.max_text_bytes, limits.max_text_files, "text-file"),
    }
    kept: dict[MediaKind, list[Attachment]] = {kind: [] for kind in caps}
    over: dict[MediaKind, list[str]] = {kind: [] for kind in caps}
    allowances: list[int] = []
    text_left = limits.max_text_bytes_per_turn
    dropped: list[str] = []
    no_room: list[str] = []
    for att in attachments:
        kind, ctype = media_type(att)
        name = shown_name(att.filename)
        cap = caps.get(kind)
        if att.size <= 0 and att.origin is Origin.FILE:
            dropped.append(f"{name} is empty")
        elif cap is None:
            dropped.append(
                f"{name} ({ctype}) is not a supported type (JPEG, PNG, WebP, GIF, MP4, MOV or text)"
            )
        elif att.size > cap[0]:
            dropped.append(f"{name} is over the {shown_size(cap[0])} {cap[2]} limit")
        elif len(kept[kind]) >= cap[1]:
            over[kind].append(name)
        elif kind is MediaKind.TEXT and text_left <= 0:
            no_room.append(name)
        else:
            kept[kind].append(att)
            if kind is MediaKind.TEXT:
                allowances.append(min(att.size, text_left))
                text_left -= allowances[-1]
    for kind, many in ((MediaKind.IMAGE, "images"), (MediaKind.VIDEO, "videos")):
        if over[kind]:
            dropped.append(
                f"only {caps[kind][1]} {many} per message are sent; left out "
                + ", ".join(over[kind])
            )
    # The count first: a long list of names may be cut from the end of the warning line.
    over_texts = over[MediaKind.TEXT]
    if over_texts:
        dropped.append(
            f"{len(over_texts)} text files left out (only {limits.max_text_files} per "
            "message are read): " + ", ".join(over_texts)
        )
    if no_room:
        dropped.append(
            f"{len(no_room)} text files left out (at most "
            f"{shown_size(limits.max_text_bytes_per_turn)} of text per message): "
            + ", ".join(no_room)
        )
    return AttachmentPlan(
        images=tuple(kept[MediaKind.IMAGE]),
        videos=tuple(kept[MediaKind.VIDEO]),
        texts=tuple(kept[MediaKind.TEXT]),
        dropped=tuple(dropped),
        text_allowances=tuple(allowances),
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
