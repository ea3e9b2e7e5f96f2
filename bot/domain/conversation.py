"""Pure request building: which attachments go where, how the prompt reads, and how the
history is trimmed to the context budget."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from bot.domain.models import (
    MAX_IMAGES_PER_TURN,
    MAX_VIDEOS_PER_TURN,
    Attachment,
    ChatMessage,
    GenerationSettings,
    HistoryEntry,
    Incoming,
    JsonValue,
    MediaKind,
    ModelRequest,
    RawJson,
)

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

# Rough token costs: the model's tokenizer is not public, so budget conservatively.
CHARS_PER_TOKEN = 3
IMAGE_TOKENS = 1_500
VIDEO_TOKENS = 10_000


@dataclass(frozen=True, slots=True)
class AttachmentLimits:
    max_images: int = MAX_IMAGES_PER_TURN
    max_videos: int = MAX_VIDEOS_PER_TURN
    max_image_bytes: int = 10 * 1024 * 1024
    max_video_bytes: int = 50 * 1024 * 1024
    max_text_bytes: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class AttachmentPlan:
    """Attachments sorted by what they become, and one note per file left out."""

    images: tuple[Attachment, ...] = ()
    videos: tuple[Attachment, ...] = ()
    texts: tuple[Attachment, ...] = ()
    dropped: tuple[str, ...] = ()


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


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _shown_name(name: str) -> str:
    # A filename is user-controlled: keep it short and unable to break Discord markdown.
    clean = re.sub(r"[`*_~|<>@\\\n\r\t]", "", name)[:60]
    return f"`{clean or 'file'}`"


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
        name = _shown_name(att.filename)
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


def merge_incoming(items: Sequence[Incoming]) -> Incoming:
    """Several messages of one person, sent in quick succession, as one turn: their texts in
    order, all their attachments, answered as (and replying to) the last one."""
    if len(items) == 1:
        return items[0]
    first, last = items[0], items[-1]
    return replace(
        last,
        text="\n".join(i.text for i in items if i.text.strip()),
        attachments=tuple(a for i in items for a in i.attachments),
        reply_text=first.reply_text,
        reply_author=first.reply_author,
    )


def text_language(filename: str) -> str:
    return TEXT_EXTENSIONS.get(PurePosixPath(filename.lower()).suffix, "")


def fence(body: str, language: str = "") -> str:
    """A fenced block that ``body`` cannot close: the fence is longer than any backtick run
    inside it."""
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    marker = "`" * max(3, longest + 1)
    return f"{marker}{language}\n{body}\n{marker}"


@dataclass(frozen=True, slots=True)
class InlinedText:
    filename: str
    text: str


def compose_prompt(
    text: str,
    *,
    author_name: str | None = None,
    quoted: str | None = None,
    quoted_author: str | None = None,
    inlined: Sequence[InlinedText] = (),
) -> str:
    """The prompt for one user turn. ``author_name`` is given once several people talk in the
    conversation, so the model can tell who said what; ``quoted`` is the text of the message
    the user replied to; text attachments are appended as fenced blocks."""
    parts: list[str] = []
    if quoted:
        who = f" from {quoted_author}" if quoted_author else ""
        quoted_lines = "\n".join("> " + line for line in quoted.splitlines())
        parts.append(f"(In reply to a message{who}:)\n{quoted_lines}")
    body = text.strip()
    if body:
        parts.append(body)
    for item in inlined:
        parts.append(
            f"Attached file {item.filename}:\n{fence(item.text, text_language(item.filename))}"
        )
    prompt = "\n\n".join(parts)
    if author_name:
        prompt = f"[{author_name}]: {prompt}"
    return prompt


def estimate_tokens(content: JsonValue | RawJson) -> int:
    """A conservative token estimate for one message's content (text plus media parts).
    Stored messages carry theirs (computed once, when stored): the hot path never calls
    this on the history."""
    if isinstance(content, RawJson):
        content = json.loads(content.text)
    if isinstance(content, str):
        return len(content) // CHARS_PER_TOKEN + 4
    media = 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                kind = str(part.get("type", ""))
                if "image" in kind:
                    media += IMAGE_TOKENS
                elif "video" in kind:
                    media += VIDEO_TOKENS
    text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return len(text) // CHARS_PER_TOKEN + media + 4


@dataclass(frozen=True, slots=True)
class TrimmedHistory:
    messages: tuple[ChatMessage, ...]
    dropped_turns: int


def trim_history(history: Sequence[HistoryEntry], budget_tokens: int) -> TrimmedHistory:
    """Keep the newest whole turns whose messages fit ``budget_tokens``; drop the oldest."""
    turns: list[list[HistoryEntry]] = []
    for entry in history:
        if turns and turns[-1][0].turn_id == entry.turn_id:
            turns[-1].append(entry)
        else:
            turns.append([entry])
    kept: list[list[HistoryEntry]] = []
    used = 0
    for turn in reversed(turns):
        cost = sum(e.tokens for e in turn)
        if used + cost > budget_tokens:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    messages = tuple(e.message for turn in kept for e in turn)
    return TrimmedHistory(messages, len(turns) - len(kept))


@dataclass(frozen=True, slots=True)
class BuiltRequest:
    request: ModelRequest
    dropped_turns: int


def build_request(
    history: Sequence[HistoryEntry],
    *,
    prompt: str,
    image_urls: Sequence[str] = (),
    video_urls: Sequence[str] = (),
    settings: GenerationSettings,
    context_budget_tokens: int,
) -> BuiltRequest:
    """The model request for one turn: history trimmed so that it, the new prompt, its media
    and the output budget fit the context budget."""
    fixed = (
        estimate_tokens(prompt)
        + estimate_tokens(settings.system_prompt or "")
        + IMAGE_TOKENS * len(image_urls)
        + VIDEO_TOKENS * len(video_urls)
        + (settings.max_completion_tokens or 4096)
    )
    trimmed = trim_history(history, max(0, context_budget_tokens - fixed))
    request = ModelRequest(
        prompt=prompt,
        messages=trimmed.messages,
        image_urls=tuple(image_urls),
        video_urls=tuple(video_urls),
        system_prompt=settings.system_prompt,
        thinking=settings.thinking,
        reasoning_effort=settings.effort,
        max_completion_tokens=settings.max_completion_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
    )
    return BuiltRequest(request, trimmed.dropped_turns)


def new_history_messages(
    returned: Sequence[ChatMessage], sent_count: int | None
) -> tuple[ChatMessage, ...]:
    """What a reply adds to the stored history: the returned messages past the ``sent_count``
    that were sent. System messages are left out: the system prompt is a setting sent with
    every request, so a stored copy would go stale when ``/system`` changes it. When the
    count is unknown (a request resumed after a restart) or does not fit, keep what follows
    the last user message: the API appends the new user turn, then the answer."""
    conversation = [m for m in returned if m.role != "system"]
    if sent_count is not None and len(conversation) > sent_count:
        return tuple(conversation[sent_count:])
    last_user = max((i for i, m in enumerate(conversation) if m.role == "user"), default=None)
    return tuple(conversation[last_user:]) if last_user is not None else tuple(conversation[-1:])
