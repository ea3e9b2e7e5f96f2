"""Thread names: the first line of a prompt that still says something once Discord markup
and markdown are removed, short enough for Discord."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from bot.chat.splitter import is_fence_line, shorten

THREAD_NAME_LIMIT: Final = 100
_DEFAULT_THREAD_NAME: Final = "Conversation"


# Escaped markdown characters are swapped for private-use stand-ins while markup is removed.
_ESCAPE: Final = re.compile(r"\\([*_~`|>#\-\[\]()<:@!\\])")
_STAND_INS: Final = range(0xF0000, 0xF0080)

_DISCORD_MARKUP: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"<a?:(\w+):\d+>"), r":\1:"),  # custom emoji
    (re.compile(r"</([\w -]+):\d+>"), r"/\1"),  # slash command mention
    (re.compile(r"<(?:@[!&]?|#)\d+>"), ""),  # user, role and channel mentions
    (re.compile(r"<id:\w+>"), ""),  # guild navigation
    (re.compile(r"<t:-?\d+(?::[tTdDfFR])?>"), ""),  # timestamps
    (re.compile(r"\[([^\]\n]+)\]\(\s*<?[^)\s>]+>?\s*\)"), r"\1"),  # masked links
    (re.compile(r"<((?:https?|ftp)://[^>\s]+)>"), r"\1"),  # embed-suppressed links
)
_LINE_PREFIX: Final = re.compile(r"^(?:\s*(?:>>>|>|#{1,3}|-#|[-*+])\s+)+")
_EMPHASIS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"`+([^`]+?)`+"), r"\1"),
    (re.compile(r"\*\*(.+?)\*\*"), r"\1"),
    (re.compile(r"__(.+?)__"), r"\1"),
    (re.compile(r"~~(.+?)~~"), r"\1"),
    (re.compile(r"\|\|(.+?)\|\|"), r"\1"),
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"), r"\1"),
    (re.compile(r"(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])"), r"\1"),
)
_STRAY_MARKUP: Final = re.compile(r"`+|\*\*|__|~~|\|\|")
_MASS_PING: Final = re.compile(r"@(?:everyone|here)", re.IGNORECASE)


def _restore(char: str) -> str:
    code = ord(char)
    if code in _STAND_INS:
        return chr(code - _STAND_INS.start)
    category = unicodedata.category(char)
    if category == "Cf":
        # Invisible and direction-changing characters (U+200B-U+200F, U+202A-U+202E,
        # U+2066-U+2069, U+FEFF, ...): a name must show what it says.
        return ""
    return " " if category == "Cc" else char


def _plain(line: str) -> str:
    line = _ESCAPE.sub(lambda m: chr(_STAND_INS.start + ord(m[1])), line)
    for pattern, replacement in _DISCORD_MARKUP:
        line = pattern.sub(replacement, line)
    line = _LINE_PREFIX.sub("", line)
    for pattern, replacement in _EMPHASIS:
        line = pattern.sub(replacement, line)
    line = _STRAY_MARKUP.sub("", line)
    # After restoring escapes, so that `\@everyone` goes too (and `@@everyonee` cannot
    # reassemble one once the inner match is gone).
    line = "".join(map(_restore, line))
    while _MASS_PING.search(line):
        line = _MASS_PING.sub("", line)
    return " ".join(line.split())


def thread_name(prompt: str, fallback: str) -> str:
    """A thread name for a conversation started by ``prompt``.

    The first line that still says something once mentions, timestamps and markdown are
    removed (custom emoji become ``:name:``, links their text; fence lines are skipped), with
    whitespace collapsed and cut to 100 characters at a word end with ``…``. ``fallback``
    (shortened the same way) when nothing is left, and ``"Conversation"`` if that is blank too
    (Discord refuses an empty name).
    """
    for line in prompt.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if is_fence_line(line):
            continue
        name = _plain(line)
        if name:
            return shorten(name, THREAD_NAME_LIMIT)
    name = _plain(fallback)
    return shorten(name, THREAD_NAME_LIMIT) if name else _DEFAULT_THREAD_NAME
