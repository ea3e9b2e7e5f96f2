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
    ModelSubmitUnknown,
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


def _model_error_text(error: ModelError, names: Mapping[str, Sequence[str]]) -> str:
    """One text per way the model service fails, each saying whether retrying may help."""
    if isinstance(error, ModelInputRejected):
        if error.problems:
            parts = [
                f"{_field(p.field, p.index, names)}: {clip(p.message)}" for p in error.problems[:3]
            ]
            text = "The model could not use " + "; ".join(parts)
        else:
            text = f"The model rejected the request: {clip(error.message)}"
        return text.rstrip(". ") + ". Retrying the same message will not help."
    if isinstance(error, ModelTimeout):
        if error.silent_for is not None:
            return (
                f"The model service (fal) kept failing for the last {error.silent_for:.0f} s "
                "of the wait, so the request was cancelled. Retrying in a few minutes may help."
            )
        if error.phase == "queue":
            return (
                "The model service's queue was too slow: the request never started within "
                "the time limit, so it was cancelled. Retrying later may help."
            )
        return (
            "The model took too long to answer, so the request was cancelled. Retrying may "
            "help; a shorter question may too."
        )
    if isinstance(error, ModelRateLimited):
        return "The model service (fal) is rate limiting the bot. Retrying in a minute should help."
    if isinstance(error, ModelAuthError):
        return (
            "The bot's model account has a problem; an admin was told. Retrying will not "
            "help until it is fixed."
        )
    if isinstance(error, ModelCancelled):
        return "The request was cancelled before the model answered. Retry to ask again."
    if isinstance(error, ModelSubmitUnknown):
        return (
            "The connection to the model service broke while sending your message, so the "
            "bot cannot tell whether it arrived. Retrying may help."
        )
    if isinstance(error, ModelUnavailable):
        tried = error.tried_for
        how_long = f": it kept failing for {tried:.0f} s" if tried and tried >= 1 else " right now"
        return (
            f"The model service (fal) is unavailable{how_long}. Retrying in a few minutes may help."
        )
    return "The model service answered something unexpected. Retrying may help."


def error_text(
    error: Exception, *, attachment_names: Mapping[str, Sequence[str]] | None = None
) -> str:
    """The reply for a failed turn or command. ``attachment_names`` maps ``image_urls`` and
    ``video_urls`` to the file names sent, so a rejected attachment is named."""
    names = attachment_names or {}
    if isinstance(error, ModelError):
        text = _model_error_text(error, names)
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
