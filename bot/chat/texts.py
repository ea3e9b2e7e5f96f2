"""What the bot says: every text a person sees from it, built from pure string work.

The replies around a model answer (reasoning spoiler or ``reasoning.md``, the warning line),
progress texts, refusals and error texts, and :data:`NO_MENTIONS`, the ``allowed_mentions``
every message carries so nothing the bot posts can ping anyone. The texts of a feature with
commands of its own are beside it (:mod:`bot.chat.privacy_texts`,
:mod:`bot.chat.usage_texts`); thread names are :mod:`bot.chat.thread_names`; the
fence-aware splitting of the answer itself is :mod:`bot.chat.splitter`. Lengths are counted
in code points, as Discord counts its limits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import discord

from bot.chat.splitter import DISCORD_MESSAGE_LIMIT, shorten, split_message
from bot.domain.costs import format_usd
from bot.domain.errors import (
    AccessDenied,
    AttachmentError,
    BudgetExceeded,
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
    StorageUnavailable,
)
from bot.domain.models import Turn
from bot.domain.params import PARAMS
from bot.domain.stopping import MESSAGE_DELETED

NO_MENTIONS: Final = discord.AllowedMentions.none()

WARNING_LINE_LIMIT: Final = 300
REASONING_FILENAME: Final = "reasoning.md"
REASONING_HEADING: Final = "**Reasoning**"
EMPTY_ANSWER: Final = "*(the model returned an empty answer)*"

#: compose_reply and render_reasoning need room for their fixed lines (placeholder, pointer).
MIN_REPLY_LIMIT: Final = 100

_ZWSP: Final = "\u200b"
_REASONING_POINTER: Final = f"{REASONING_HEADING} is in the attached `{REASONING_FILENAME}`."
_WARNING_PREFIX: Final = "⚠️ "
_WARNING_SEPARATOR: Final = " · "

# --------------------------------------------------------------------------------------------
# Reasoning
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenderedFile:
    """A file to attach to a message: its name and its bytes."""

    filename: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ReasoningRender:
    """How the model's reasoning is shown.

    ``content`` is one message's text: the heading and the spoilered reasoning, or, when
    ``file`` is set, a short line pointing at that attachment.
    """

    content: str
    file: RenderedFile | None = None

    @property
    def is_file(self) -> bool:
        return self.file is not None


def _neutralise_spoiler(text: str) -> str:
    # Discord closes a spoiler at the first `||` after it opens (a lazy match over the raw
    # text, before anything inside is parsed), so every pair of bars has to be broken. A
    # zero-width space between them does it everywhere and stays invisible; backslash escapes
    # (`\|\|`) would also break the pair, but Discord shows backslashes literally inside inline
    # code, which reasoning quotes often, and they change the text a user copies more visibly.
    text = re.sub(r"\|(?=\|)", "|" + _ZWSP, text)
    # A bar at either edge would touch the spoiler's own `||`; a trailing backslash could be
    # read as escaping the closing bar.
    if text.startswith("|"):
        text = _ZWSP + text
    if text.endswith(("|", "\\")):
        text += _ZWSP
    return text


def file_bytes(text: str) -> bytes:
    # Model output can carry surrogates (JSON "\ud83d\ude00" decoded one half at a time); pair
    # what pairs, replace what does not, rather than fail to encode.
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text.encode("utf-8", "replace")


def render_reasoning(
    reasoning: str, *, spoiler_limit: int = DISCORD_MESSAGE_LIMIT
) -> ReasoningRender | None:
    """Render the model's reasoning, or ``None`` when it is blank.

    Inline, it is ``REASONING_HEADING``, a newline, and the reasoning inside ``||…||`` with any
    ``||`` in it broken by a zero-width space. It goes to a ``reasoning.md`` attachment (UTF-8,
    the whole reasoning) with a one-line pointer instead when the inline text would exceed
    ``spoiler_limit``, or when it holds ```` ``` ```` anywhere: Discord opens a code block at
    any triple backtick and spoilers do not hide code blocks. (Inline code is hidden, and
    ``~~~`` is not a code block in Discord, so neither forces the file.)
    """
    if spoiler_limit < MIN_REPLY_LIMIT:
        raise ValueError(f"spoiler_limit must be at least {MIN_REPLY_LIMIT}, got {spoiler_limit}")
    text = reasoning.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        return None
    if "```" not in text:
        inline = f"{REASONING_HEADING}\n||{_neutralise_spoiler(text)}||"
        if len(inline) <= spoiler_limit:
            return ReasoningRender(inline)
    return ReasoningRender(
        _REASONING_POINTER, RenderedFile(REASONING_FILENAME, file_bytes(text + "\n"))
    )


# --------------------------------------------------------------------------------------------
# Warnings and the whole reply
# --------------------------------------------------------------------------------------------


def warning_line(notes: Sequence[str], *, max_length: int = WARNING_LINE_LIMIT) -> str | None:
    """One line telling the user what was left out (attachments, trimmed history).

    Notes are joined with `` · `` after ``⚠️ ``, whitespace (newlines too) collapsed, and the
    line is cut to ``max_length`` with ``…``. ``None`` when there is nothing to say. Notes are
    used as given: escaping markdown in, say, a file name is the caller's business.
    """
    if max_length < len(_WARNING_PREFIX) + 2:
        raise ValueError(f"max_length too small: {max_length}")
    parts = [" ".join(note.split()) for note in notes]
    parts = [part for part in parts if part]
    if not parts:
        return None
    return shorten(_WARNING_PREFIX + _WARNING_SEPARATOR.join(parts), max_length)


@dataclass(frozen=True, slots=True)
class RenderedReply:
    """Message contents to send in order; ``files`` go with the first message."""

    messages: tuple[str, ...]
    files: tuple[RenderedFile, ...] = ()


def compose_reply(
    answer: str,
    reasoning: str | None,
    warnings: Sequence[str],
    limit: int = DISCORD_MESSAGE_LIMIT,
) -> RenderedReply:
    """Everything the bot posts for one model reply, in as few messages as fit.

    The reasoning comes first (spoiler, or pointer line with ``reasoning.md`` among
    ``files``), then the answer split by :func:`split_message` (:data:`EMPTY_ANSWER` when
    blank), then the warning line. The reasoning shares the answer's first message, and the
    warning line its last (after a blank line), when they fit; otherwise each is a message of
    its own. Every message is at most ``limit`` characters and not blank.
    """
    if limit < MIN_REPLY_LIMIT:
        raise ValueError(f"limit must be at least {MIN_REPLY_LIMIT}, got {limit}")
    files: list[RenderedFile] = []
    messages = split_message(answer, limit) or [EMPTY_ANSWER]
    rendered = render_reasoning(reasoning, spoiler_limit=limit) if reasoning else None
    if rendered is not None:
        if rendered.file is not None:
            files.append(rendered.file)
        if len(rendered.content) + 2 + len(messages[0]) <= limit:
            messages[0] = f"{rendered.content}\n\n{messages[0]}"
        else:
            messages.insert(0, rendered.content)
    warning = warning_line(warnings, max_length=min(WARNING_LINE_LIMIT, limit))
    if warning is not None:
        if len(messages[-1]) + 2 + len(warning) <= limit:
            messages[-1] = f"{messages[-1]}\n\n{warning}"
        else:
            messages.append(warning)
    return RenderedReply(tuple(messages), tuple(files))


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


def status_queued(queue_position: int | None) -> str:
    """Status while the request waits in fal's queue.

    ``queue_position`` is fal's: the number of requests ahead (0-based), shown 1-based.
    """
    if queue_position is None or queue_position < 0:
        return "Waiting in queue…"
    return f"Waiting in queue (position {queue_position + 1})…"


def status_waiting(place: int | None) -> str:
    """Status while the turn waits for one of the bot's in-flight slots (the bot's own
    line, before fal's). ``place`` is 1-based: 1 is next."""
    if place is None or place < 1:
        return "Busy with other answers: waiting for a free slot…"
    return f"Busy with other answers: waiting for a free slot (position {place})…"


def status_running() -> str:
    """Status while the model works on the request."""
    return "Thinking…"


# Status while a turn waits for the bot's database to come back (an outage).
STATUS_DATABASE = "waiting for the bot's database…"


# --------------------------------------------------------------------------------------------
# Errors and refusals
# --------------------------------------------------------------------------------------------

# How an input field the model refused is named; the parameters name themselves.
FIELD_NAMES = {
    "prompt": "your message",
    "messages": "the conversation history",
    **{p.wire_key: p.shown for p in PARAMS if p.wire_key is not None},
}


def escape_name(name: str) -> str:
    """A display name safe to show in bold: no markdown, no mentions."""
    return discord_escape(name)[:80] or "someone"


def bold_name(name: str) -> str:
    """A display name in bold, escaped (see :func:`escape_name`)."""
    return f"**{escape_name(name)}**"


def quote_inline(text: str, limit: int) -> str:
    """User text shown back on one line, clipped and unable to break markdown."""
    return "`" + clip(text.replace("`", "ˋ"), limit) + "`"


def discord_escape(text: str) -> str:
    for ch in "\\*_~|`>#":
        text = text.replace(ch, "\\" + ch)
    return text.replace("@", "@\u200b")


def clip(text: str, limit: int = 200) -> str:
    """``text`` on one line (whitespace collapsed), cut to ``limit`` with an ellipsis."""
    return shorten(" ".join(text.split()), limit)


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
    elif isinstance(error, BudgetExceeded):
        text = budget_refusal(error)
    elif isinstance(error, AttachmentError):
        text = f"`{clip(error.filename, 60)}` could not be used: {error.reason}."
    elif isinstance(error, InvalidSetting):
        text = f"Invalid {error.name}: {error.message}."
    elif isinstance(error, AccessDenied):
        text = f"Sorry, {error}."
    elif isinstance(error, StorageUnavailable):
        text = (
            "The bot's database stayed unreachable too long, so this message was not "
            "answered. Try again once the bot is back."
        )
    elif isinstance(error, StorageError):
        text = "The bot's database is unavailable right now. Try again in a minute."
    else:
        text = "Something went wrong on the bot's side. Try again?"
    request_id = getattr(error, "request_id", None)
    if request_id:
        text += f" (request `{request_id}`)"
    return "⚠️ " + text


# --------------------------------------------------------------------------------------------
# What the bot says around a turn
# --------------------------------------------------------------------------------------------

DM_REFUSAL: Final = (
    "Direct messages are turned off for this bot. Mention me in a server channel instead."
)
SUPERSEDED_NOTE: Final = "\n-# ↩️ replaced by a newer answer below"
NOT_CONVERSATION: Final = "⛔ This thread has no conversation with me yet."
UNKNOWN_TURN: Final = "This answer is no longer known to me."
ALREADY_FINISHED: Final = "This answer has already finished."
STILL_WRITING: Final = "This answer is still being written."
ONLY_LATEST: Final = "Only the latest answer in a thread can be retried."
NOTHING_TO_RETRY: Final = "⛔ There is nothing to retry here."
ANSWERING_AGAIN: Final = "🔁 Answering again…"


def turn_error_text(turn: Turn | None, error: Exception) -> str:
    """What a failed turn shows: ``error`` naming the turn's attachments it is about."""
    names = (
        {"image_urls": turn.image_names, "video_urls": turn.video_names} if turn is not None else {}
    )
    return error_text(error, attachment_names=names)


def denied(reason: str) -> str:
    """An access-list refusal (``reason`` from the domain's access policy)."""
    return f"⛔ Sorry, {reason}."


def only_controller(action: str) -> str:
    """A control (stop, retry, reply, settings, export) refused to someone who may not use
    it."""
    return (
        f"⛔ Only the person who asked, the owner of the thread, or members who may manage "
        f"threads, can {action}."
    )


STOPPED_MESSAGE_DELETED: Final = "⏹️ Stopped: the message was deleted."


def stopped_by(name: str) -> str:
    if name == MESSAGE_DELETED:
        return STOPPED_MESSAGE_DELETED
    return f"⏹️ Stopped by {bold_name(name)}." if name else "⏹️ Stopped."


def no_thread_permission(private: bool = False) -> str:
    perm = "Create Private Threads" if private else "Create Public Threads"
    return f"⚠️ I can't start a thread here: I need the **{perm}** permission in this channel."


THREAD_REFUSED: Final = "⚠️ Discord refused to create a thread here. Try again?"


def undeliverable(thread_id: str, why: str) -> str:
    """Posted where the person can see it (the thread's parent channel) when the answer could
    not be posted in its thread: ``why`` says what happened (locked, archived…)."""
    return f"⚠️ I couldn't post my answer in <#{thread_id}>: {why}."


def undelivered_rest(why: str) -> str:
    """After part of an answer through an interaction: why the rest is missing."""
    return f"⚠️ The rest of my answer could not be posted: {why}."


# Where the bot is not a member: answering through the interaction.
REPLY_LABEL: Final = "Reply"
REPLY_MODAL_TITLE: Final = "Reply to Seed"
REPLY_FIELD_LABEL: Final = "Your reply"
ASK_MENU_NAME: Final = "Ask Seed"
ASK_MODAL_TITLE: Final = "Ask Seed about this message"
ASK_FIELD_LABEL: Final = "Your question (optional)"
EMPTY_REPLY: Final = "⛔ Your reply was empty: write something for me to answer."
NOTHING_USABLE: Final = (
    "⛔ That message has nothing I can read: no text and no image, video or text file."
)
CONVERSATION_GONE: Final = "⛔ I can't find that conversation any more."
ASK_NOT_HERE: Final = "⛔ I can only be asked about messages in text channels, threads and DMs."
ASKED_HERE: Final = "✅ Asked: my answer follows here."


def started_in(thread_mention: str) -> str:
    return f"Started {thread_mention}."


def asked_about(name: str, question: str, jump_url: str) -> str:
    """The line a conversation started with "Ask Seed" opens with in its thread."""
    asked = f": {quote_inline(question, 1500)}" if question.strip() else ""
    return f"{bold_name(name)} asked about {jump_url}{asked}"


# --------------------------------------------------------------------------------------------
# Costs and budgets (/usage)
# --------------------------------------------------------------------------------------------

BUDGET_OWNER: Final = {
    "user": ("You have used your", "your"),
    "server": ("This server has used its", "this server's"),
    "bot": ("The bot has used its", "the bot's"),
}


def budget_refusal(error: BudgetExceeded) -> str:
    """e.g. "This server has used its $5.00 daily budget; it resets <t:…:R>." """
    used, _ = BUDGET_OWNER.get(error.scope, BUDGET_OWNER["bot"])
    when = f"<t:{int(error.resets_at.timestamp())}:R>"
    return f"{used} {format_usd(error.limit_usd)} {error.period} budget; it resets {when}."


# --------------------------------------------------------------------------------------------
# Personas (/persona, /ask persona:)
# --------------------------------------------------------------------------------------------

PERSONA_GONE: Final = "no longer in the config: ignored"


def unknown_persona(name: str, known: Sequence[str]) -> str:
    offered = ", ".join(f"`{k}`" for k in known) if known else "none are set up"
    return f"⛔ There is no persona `{name}` (personas: {offered}). Nothing was changed."
