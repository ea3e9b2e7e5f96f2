"""Logging set-up: readable text or one JSON object per line, and the third-party lines an
operator should not have to read.

Each JSON line holds ``time``, ``level``, ``logger``, ``message`` and the ids the line is
about: ``conversation``, ``turn``, ``guild``, ``channel``, ``fal_request``. An id comes from
the record's ``extra`` when the caller gave one (``log.info(..., extra={"turn": 7})``), else
from the wording of the message itself ("turn 7", "conversation 3", "request <id>", "guild
…", "channel …": how the bot's log lines name what they are about).

Below DEBUG, a third-party library's traceback (discord.py logs one for every failed gateway
connection attempt) is cut to one line naming the exception; at DEBUG it is kept.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import Any, Literal

IDS = ("conversation", "turn", "guild", "channel", "fal_request")

# What a message says it is about: "turn 12", "conversation 3", "request 6f1c…", …
_PATTERNS: dict[str, re.Pattern[str]] = {
    "conversation": re.compile(r"\bconversation (\d+)"),
    "turn": re.compile(r"\bturn (\d+)"),
    "guild": re.compile(r"\b(?:guild|server) (\d{5,20})"),
    "channel": re.compile(r"\b(?:channel|thread) (\d{5,20})"),
    "fal_request": re.compile(r"\b(?:request|fal) ([0-9a-f]{8}-[0-9a-f-]{27,})"),
}

# discord.py's set-up chatter: the bot has no voice, and the bot logs its own login attempts.
# (Alembic narrates its plugins at INFO: its logger is set to WARNING below DEBUG.)
_CHATTER = frozenset(
    {
        "PyNaCl is not installed, voice will NOT be supported",
        "davey is not installed, voice will NOT be supported",
        "logging in using static token",
    }
)
_OWN_LOGGERS = ("bot", "__main__")

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# Where discord.py's DEBUG lines show an interaction's token (which lets anyone answer it for
# 15 minutes): in the URLs of its webhook and callback, and in the gateway event's payload.
_INTERACTION_TOKENS = re.compile(
    r"(?P<keep>/(?:webhooks|interactions)/\d+/)[^/?\s'\"]+"
    r"|(?P<key>['\"]token['\"]:\s*['\"])[^'\"]+"
)


def ids_of(record: logging.LogRecord) -> dict[str, str]:
    """The ids a log record is about (explicit ``extra`` first, else read off its text)."""
    found: dict[str, str] = {}
    message: str | None = None
    for name in IDS:
        explicit = record.__dict__.get(name)
        if explicit is not None:
            found[name] = str(explicit)
            continue
        if message is None:
            message = record.getMessage()
        if match := _PATTERNS[name].search(message):
            found[name] = match.group(1)
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback, when kept, goes in ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(ids_of(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


# discord.py's loggers whose lines may show one (what they log at DEBUG: payloads, URLs).
_DISCORD_LOGGERS = (
    "discord.client",
    "discord.gateway",
    "discord.http",
    "discord.shard",
    "discord.state",
    "discord.ui.modal",
    "discord.ui.view",
    "discord.webhook.async_",
    "discord.webhook.sync",
)


def hide_interaction_tokens(text: str) -> str:
    return _INTERACTION_TOKENS.sub(lambda m: (m["keep"] or m["key"]) + "***", text)


class _HideInteractionTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = hide_interaction_tokens(message)
        if hidden != message:
            record.msg, record.args = hidden, None
        return True


_HIDER = _HideInteractionTokens()


def hide_discord_secrets() -> None:
    """Hide interaction tokens in discord.py's log records, on the loggers themselves: no
    handler (a test's, an operator's own) ever sees one. Idempotent."""
    for name in _DISCORD_LOGGERS:
        logging.getLogger(name).addFilter(_HIDER)


class QuietThirdParty(logging.Filter):
    """Drops the voice warnings and, unless ``keep_tracebacks``, cuts a library's
    traceback to its exception's name on the message line."""

    def __init__(self, *, keep_tracebacks: bool) -> None:
        super().__init__()
        self._keep = keep_tracebacks

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("discord") and str(record.msg) in _CHATTER:
            return False
        if (
            not self._keep
            and record.exc_info
            and not record.name.startswith(_OWN_LOGGERS)
            and record.exc_info[1] is not None
        ):
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({describe_exception(exc)})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def describe_exception(exc: BaseException) -> str:
    """A one-line, secret-free name for an exception: its type and, for OS-level errors, the
    reason (``ConnectionRefusedError (Connect call failed)``)."""
    cause = exc
    while cause.__cause__ is not None and not isinstance(cause, OSError):
        cause = cause.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        return f"{type(cause).__name__} ({cause.strerror})"
    return type(cause).__name__


def setup_logging(level: str, fmt: Literal["text", "json"] = "text", *, stream: Any = None) -> None:
    """Configure the root logger for a command of the CLI."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(QuietThirdParty(keep_tracebacks=level == "DEBUG"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    hide_discord_secrets()
    if level != "DEBUG":
        # Alembic narrates every plugin and context at INFO; its warnings are what matter.
        logging.getLogger("alembic").setLevel(logging.WARNING)
