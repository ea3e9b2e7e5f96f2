"""What the bot says when something goes wrong: short, specific, no internals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bot.domain.errors import (
    AccessDenied,
    AttachmentError,
    InvalidSetting,
    ModelAuthError,
    ModelCancelled,
    ModelError,
    ModelInputRejected,
    ModelRateLimited,
    ModelTimeout,
    ModelUnavailable,
    QuotaExceeded,
    StorageError,
)

FIELD_NAMES = {
    "prompt": "your message",
    "system_prompt": "the system prompt",
    "messages": "the conversation history",
    "thinking": "the thinking setting",
    "reasoning_effort": "the effort setting",
    "max_completion_tokens": "the max tokens setting",
    "temperature": "the temperature setting",
    "top_p": "the top_p setting",
}


def escape_name(name: str) -> str:
    """A display name safe to show in bold: no markdown, no mentions."""
    return discord_escape(name)[:80] or "someone"


def quote_inline(text: str, limit: int) -> str:
    """User text shown back on one line, clipped and unable to break markdown."""
    return "`" + clip(text.replace("`", "ˋ"), limit) + "`"


def discord_escape(text: str) -> str:
    for ch in "\\*_~|`>#":
        text = text.replace(ch, "\\" + ch)
    return text.replace("@", "@\u200b")


def clip(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field(field: str, index: int | None, names: Mapping[str, Sequence[str]]) -> str:
    if field in ("image_urls", "video_urls"):
        kind = "image" if field == "image_urls" else "video"
        files = names.get(field, ())
        if index is not None and 0 <= index < len(files):
            return f"the {kind} `{clip(files[index], 60)}`"
        return f"{kind} {index + 1}" if index is not None else f"the {kind}s"
    return FIELD_NAMES.get(field, f"`{field}`")


def error_text(
    error: Exception, *, attachment_names: Mapping[str, Sequence[str]] | None = None
) -> str:
    """The reply for a failed turn or command. ``attachment_names`` maps ``image_urls`` and
    ``video_urls`` to the file names sent, so a rejected attachment is named."""
    names = attachment_names or {}
    if isinstance(error, ModelInputRejected):
        if error.problems:
            parts = [
                f"{_field(p.field, p.index, names)}: {clip(p.message)}" for p in error.problems[:3]
            ]
            text = "The model could not use " + "; ".join(parts)
        else:
            text = f"The model rejected the request: {clip(error.message)}"
    elif isinstance(error, ModelTimeout):
        text = "The model took too long to answer, so the request was cancelled. Try again?"
    elif isinstance(error, ModelRateLimited):
        text = "The model service is busy right now (rate limited). Try again in a minute."
    elif isinstance(error, ModelAuthError):
        text = "The bot's model credentials were refused; a bot admin needs to check them."
    elif isinstance(error, ModelCancelled):
        text = "The request was cancelled before the model answered."
    elif isinstance(error, ModelUnavailable):
        text = "The model service is unavailable right now. Try again in a minute."
    elif isinstance(error, ModelError):
        text = "The model service answered something unexpected. Try again?"
    elif isinstance(error, QuotaExceeded):
        when = f"<t:{int(error.retry_at.timestamp())}:R>"
        who = "You have" if error.scope == "user" else "This server has"
        text = f"{who} reached the bot's request limit; you can ask again {when}."
    elif isinstance(error, AttachmentError):
        text = f"`{clip(error.filename, 60)}` could not be used: {error.reason}."
    elif isinstance(error, InvalidSetting):
        text = f"Invalid {error.name}: {error.message}."
    elif isinstance(error, AccessDenied):
        text = f"Sorry, {error}."
    elif isinstance(error, StorageError):
        text = "The bot's database is unavailable right now. Try again in a minute."
    else:
        text = "Something went wrong on the bot's side. Try again?"
    request_id = getattr(error, "request_id", None)
    if request_id:
        text += f" (request `{request_id}`)"
    return "⚠️ " + text
