"""The fence-aware splitter: an answer cut into Discord messages without breaking code blocks.

Pure string work. Lengths are counted in code points, which is how Discord's API counts the
2,000-character limit. :func:`split_message` is the public entry; :func:`is_grapheme_boundary`
and :func:`is_fence_line` are shared with :mod:`bot.chat.texts`.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DISCORD_MESSAGE_LIMIT",
    "GRAPHEME_BACKOFF",
    "is_fence_line",
    "is_grapheme_boundary",
    "split_message",
]

DISCORD_MESSAGE_LIMIT: Final = 2000

# --------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------

_TEXT: Final = 0
_OPEN: Final = 1
_CLOSE: Final = 2

# CommonMark fences, except that any indentation counts: Discord opens a code block at ```
# wherever it appears, and models nest fences in list items deeper than three spaces.
_FENCE_LINE: Final = re.compile(r"([ \t]*)(`{3,}|~{3,})(.*)")


class _Fence:
    """One fenced block of the text being split (identity matters, hence no dataclass eq)."""

    __slots__ = ("closed", "end", "indent", "marker", "reopen", "start")

    def __init__(self, indent: str, marker: str, info: str, start: int, limit: int) -> None:
        self.indent = indent
        self.marker = marker
        self.start = start  # offset of the opener line
        self.end = start  # offset just past the closer line (or the text's end), set later
        self.closed = False
        # Reopening repeats the opener so the language survives, but a chunk must keep at least
        # half the limit for content; a hostile info string degrades to the language alone,
        # then to the bare marker (always short enough, see _Doc.max_marker).
        opener = indent + marker + info
        # Keep the blank between marker and language: "~~~ ~~~" must not become "~~~~~~".
        first_word = re.match(r"\s*\S*", info)
        language = indent + marker + (first_word[0] if first_word else "")
        budget = limit // 2 - len(self.closer) - 2
        self.reopen = next(
            (line for line in (opener, language) if len(line) <= budget), indent + marker
        )

    @property
    def closer(self) -> str:
        return self.indent + self.marker

    @property
    def overhead(self) -> int:
        """Characters the added closing line costs at the end of a chunk."""
        return 1 + len(self.closer)


def _overhead(fence: _Fence | None) -> int:
    return fence.overhead if fence is not None else 0


def _classify(line: str, fence: _Fence | None, max_marker: int) -> int:
    """Kind of ``line`` (already right-stripped) given the fence open before it."""
    match = _FENCE_LINE.fullmatch(line)
    if match is None or len(match[1]) + len(match[2]) > max_marker:
        return _TEXT
    marker, info = match[2], match[3]
    if fence is None:
        # CommonMark: a backtick fence's info string may not hold a backtick (```js``` is text).
        return _TEXT if marker[0] == "`" and "`" in info else _OPEN
    if marker[0] == fence.marker[0] and len(marker) >= len(fence.marker) and not info:
        return _CLOSE
    return _TEXT


_FENCE_PREFIXES: Final = ("```", "~~~")
_ANY_MARKER: Final = sys.maxsize


class _Doc:
    """The normalised text with, per line, its offsets, kind and surrounding fence state."""

    def __init__(self, text: str, limit: int) -> None:
        # A marker (with its indentation) longer than this is never taken for a fence, so that
        # reopen line + closer + newlines always fit in half a message.
        self.max_marker = (limit // 2 - 2) // 2
        raw_lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        # Trailing whitespace is invisible in Discord (in code blocks too); dropping it makes
        # every non-empty line end in a visible character, which the cut rules rely on.
        lines = [line.rstrip() for line in raw_lines]
        self.text = "\n".join(lines)
        self.content_end = len(self.text.rstrip())
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.kinds: list[int] = []
        self.fence_in: list[_Fence | None] = []
        self.fence_out: list[_Fence | None] = []
        self.marker_ends: list[int] = []
        fence: _Fence | None = None
        offset = 0
        for line in lines:
            kind = _classify(line, fence, self.max_marker)
            self.starts.append(offset)
            self.ends.append(offset + len(line))
            self.kinds.append(kind)
            self.fence_in.append(fence)
            marker_end = offset
            if kind == _OPEN:
                match = _FENCE_LINE.fullmatch(line)
                assert match is not None
                fence = _Fence(match[1], match[2], match[3], offset, limit)
                marker_end = offset + len(match[1]) + len(match[2])
            elif kind == _CLOSE:
                assert fence is not None
                fence.end = offset + len(line)
                fence.closed = True
                fence = None
            self.marker_ends.append(marker_end)
            self.fence_out.append(fence)
            offset += len(line) + 1
        if fence is not None:
            fence.end = self.content_end
        self.final_fence = fence
        # next_content[i]: first line at or after i that is not empty (len(lines) if none).
        count = len(lines)
        self.next_content = [count] * (count + 1)
        for i in range(count - 1, -1, -1):
            self.next_content[i] = i if lines[i] else self.next_content[i + 1]

    def line_of(self, position: int) -> int:
        return bisect_right(self.starts, position) - 1

    def fence_at(self, position: int, line: int) -> _Fence | None:
        """Fence open at ``position`` (a chunk start: a line start or just after a cut)."""
        if position == self.starts[line] or self.kinds[line] != _OPEN:
            return self.fence_in[line]
        return self.fence_out[line]

    def fence_during(self, position: int) -> _Fence | None:
        """Fence open at a break at ``position`` (what an added closer would close)."""
        line = self.line_of(position)
        if position == self.ends[line] or self.kinds[line] == _OPEN:
            return self.fence_out[line]
        return self.fence_in[line]

    def skip(self, position: int) -> int:
        """Where the next chunk starts after a break at ``position``.

        After a cut inside a line, the blanks at the cut go; after a line break, empty lines
        go. The indentation of the next line is kept: it may be code.
        """
        text, size = self.text, len(self.text)
        if 0 < position < size and text[position - 1] != "\n":
            while position < size and text[position] != "\n" and text[position].isspace():
                position += 1
        while position < size and text[position] == "\n":
            position += 1
        return position

    def cut_keeps_fences(self, line: int, seg_start: int, cut: int, fence: _Fence | None) -> bool:
        """Whether cutting ``line`` at ``cut`` leaves both halves as the kind they were.

        Without this, ``use ``` here`` cut after ``use`` starts the next chunk with an
        opening fence, and the text line `````js```` cut after ``js`` ends one with it. Markers
        of any length count here: a half that a Markdown renderer would take for a fence is
        rejected even where this module's own cap would call it text.
        """
        text = self.text
        if not (self.kinds[line] == _OPEN and seg_start == self.starts[line]):
            head_start = seg_start
            while head_start < cut and text[head_start] in " \t":
                head_start += 1
            if (
                text.startswith(_FENCE_PREFIXES, head_start)
                and _classify(text[seg_start:cut], fence, _ANY_MARKER) != _TEXT
            ):
                return False
        rest_start = self.skip(cut)
        return not (
            text.startswith(_FENCE_PREFIXES, rest_start)
            and _classify(text[rest_start : self.ends[line]], fence, _ANY_MARKER) != _TEXT
        )


_VARIATION_SELECTORS: Final = range(0xFE00, 0xFE10)
_VARIATION_SELECTORS_SUPPLEMENT: Final = range(0xE0100, 0xE01F0)
_EMOJI_MODIFIERS: Final = range(0x1F3FB, 0x1F400)
_TAG_CHARACTERS: Final = range(0xE0020, 0xE0080)
_REGIONAL_INDICATORS: Final = range(0x1F1E6, 0x1F200)
_HIGH_SURROGATES: Final = range(0xD800, 0xDC00)
_LOW_SURROGATES: Final = range(0xDC00, 0xE000)
_ZWJ: Final = "\u200d"
GRAPHEME_BACKOFF: Final = 32


def _is_extender(char: str) -> bool:
    code = ord(char)
    return (
        char == _ZWJ
        or unicodedata.category(char) in ("Mn", "Mc", "Me")
        or code in _VARIATION_SELECTORS
        or code in _VARIATION_SELECTORS_SUPPLEMENT
        or code in _EMOJI_MODIFIERS
        or code in _TAG_CHARACTERS
    )


def is_grapheme_boundary(text: str, cut: int) -> bool:
    """Cheap approximation of a grapheme-cluster boundary between ``text[cut - 1]`` and
    ``text[cut]``: keeps combining marks, ZWJ emoji sequences, skin tones, flags and surrogate
    pairs whole. It only has to be good enough to avoid visibly mangled hard cuts."""
    if cut <= 0 or cut >= len(text):
        return True
    before, after = text[cut - 1], text[cut]
    if _is_extender(after) or before == _ZWJ:
        return False
    if ord(before) in _HIGH_SURROGATES and ord(after) in _LOW_SURROGATES:
        return False
    if ord(before) in _REGIONAL_INDICATORS and ord(after) in _REGIONAL_INDICATORS:
        run = 0
        index = cut - 1
        while index >= 0 and ord(text[index]) in _REGIONAL_INDICATORS:
            run += 1
            index -= 1
        return run % 2 == 0
    return True


@dataclass(frozen=True, slots=True)
class _Candidate:
    position: int
    fence: _Fence | None  # fence left open at the break, closed by an added line


_PARAGRAPH: Final = 0
_LINE: Final = 1
_INSIDE: Final = 2


def _take_chunk(doc: _Doc, start: int, limit: int) -> tuple[str, int]:
    """The chunk beginning at ``start`` (a visible character) and where it ends in the text."""
    text = doc.text
    first = doc.line_of(start)
    fence0 = doc.fence_at(start, first)
    prefix = fence0.reopen + "\n" if fence0 is not None else ""
    room = limit - len(prefix)  # for the body and, if a fence is left open, the added closer

    def render(cut: int, fence: _Fence | None) -> tuple[str, int]:
        body = text[start:cut].rstrip()
        closer = "\n" + fence.closer if fence is not None else ""
        chunk = prefix + body + closer
        assert body, (start, cut)
        assert len(chunk) <= limit, (start, cut, len(chunk))
        return chunk, cut

    if doc.content_end - start <= room - _overhead(doc.final_fence):
        return render(doc.content_end, doc.final_fence)

    min_fill = limit // 2
    lines: list[tuple[int, int, _Fence | None]] = []  # (position, category, fence)
    space: _Candidate | None = None
    hard: _Candidate | None = None
    # Whether the open fence already has content in this chunk: an added closer right after an
    # opener (or a reopen) would leave an empty code block.
    has_content = fence0 is not None
    last_line = first
    index = first
    count = len(doc.starts)
    while index < count and doc.starts[index] <= start + room:
        last_line = index
        seg_start = max(start, doc.starts[index])
        end = doc.ends[index]
        kind = doc.kinds[index]
        fence_in, fence_out = doc.fence_in[index], doc.fence_out[index]
        opened_here = kind == _OPEN and seg_start == doc.starts[index]
        if opened_here:
            has_content = False
        elif kind == _TEXT and end > seg_start and fence_out is not None:
            has_content = True

        if kind != _CLOSE and end - seg_start >= 2:
            during = fence_out if kind == _OPEN else fence_in
            low = max(seg_start, doc.marker_ends[index] if opened_here else seg_start) + 1
            high = min(end - 1, start + room - _overhead(during))
            found = _latest_space(doc, index, seg_start, low, high, during)
            if found is not None:
                space = _Candidate(found, during)
            found = _latest_hard_cut(doc, index, seg_start, low, high, during)
            if found is not None:
                hard = _Candidate(found, during)

        if end < doc.content_end and end - start <= room - _overhead(fence_out):
            if fence_out is None:
                following = index + 1
                paragraph = (
                    kind == _CLOSE
                    or doc.starts[index] == end
                    or doc.starts[following] == doc.ends[following]
                    or doc.kinds[following] == _OPEN
                )
                lines.append((end, _PARAGRAPH if paragraph else _LINE, None))
            else:
                # Breaking inside a fence needs content on both sides, else one chunk holds an
                # empty code block (the next content line must not be the closer).
                nxt = doc.next_content[index + 1]
                if has_content and nxt < count and doc.kinds[nxt] == _TEXT:
                    lines.append((end, _INSIDE, fence_out))
        index += 1

    def filled(position: int) -> bool:
        return len(prefix) + position - start >= min_fill

    def latest(categories: tuple[int, ...], need_fill: bool) -> _Candidate | None:
        for position, category, fence in reversed(lines):
            if category in categories and (filled(position) or not need_fill):
                return _Candidate(position, fence)
        return None

    choice = latest((_PARAGRAPH,), need_fill=True)
    if choice is None:
        choice = _keep_block_whole(doc, start, limit, room, last_line, lines)
    if choice is None:
        choice = latest((_PARAGRAPH, _LINE), need_fill=True)
    if choice is None:
        choice = latest((_INSIDE,), need_fill=True)
    if choice is None:
        choice = latest((_PARAGRAPH, _LINE, _INSIDE), need_fill=False)
    if choice is None and space is not None and filled(space.position):
        choice = space
    if choice is None:
        choice = hard or space
    if choice is None:
        # Only a run of backticks or tildes longer than the window gets here (every cut in it
        # would make a fence line): the limit wins over fence balance, leaving room for the
        # longest closer there can be.
        cut = min(doc.content_end, start + max(1, room - 1 - doc.max_marker))
        return render(cut, doc.fence_during(cut))
    return render(choice.position, choice.fence)


def _keep_block_whole(
    doc: _Doc,
    start: int,
    limit: int,
    room: int,
    last_line: int,
    lines: list[tuple[int, int, _Fence | None]],
) -> _Candidate | None:
    """Break before a code block that the window would cut but that fits in a message alone."""
    reached = doc.ends[last_line] <= start + room
    if doc.kinds[last_line] == _OPEN or reached:
        fence = doc.fence_out[last_line]
    else:
        fence = doc.fence_in[last_line]
    if fence is None or fence.start <= start:
        return None
    size = fence.end - fence.start + (0 if fence.closed else fence.overhead)
    if size > limit:
        return None
    for position, _category, open_fence in reversed(lines):
        if open_fence is None and position < fence.start:
            return _Candidate(position, None)
    return None


def _latest_space(
    doc: _Doc, line: int, seg_start: int, low: int, high: int, fence: _Fence | None
) -> int | None:
    text = doc.text
    for cut in range(high, low - 1, -1):
        if (
            text[cut].isspace()
            and not text[cut - 1].isspace()
            and doc.cut_keeps_fences(line, seg_start, cut, fence)
        ):
            return cut
    return None


def _latest_hard_cut(
    doc: _Doc, line: int, seg_start: int, low: int, high: int, fence: _Fence | None
) -> int | None:
    text = doc.text
    for graphemes in (True, False):
        bottom = max(low, high - GRAPHEME_BACKOFF) if graphemes else low
        for cut in range(high, bottom - 1, -1):
            if (
                not text[cut - 1].isspace()
                and (not graphemes or is_grapheme_boundary(text, cut))
                and doc.cut_keeps_fences(line, seg_start, cut, fence)
            ):
                return cut
    return None


def split_message(text: str, limit: int = DISCORD_MESSAGE_LIMIT) -> list[str]:
    """Split ``text`` into message contents of at most ``limit`` characters each.

    Breaks go, in order of preference, at paragraph boundaries (a blank line, or just before
    an opening or after a closing code fence), at line ends, at spaces, and last at any
    character that does not split a grapheme. A break is taken late enough to fill at least
    half a message when it can be; a code block that would be cut but fits in one message is
    moved whole to the next one.

    Code fences (```` ``` ```` or ``~~~``, any indentation, CommonMark rules for what closes
    what) are never left open: a chunk ending inside a block gets a closing line, and the next
    chunk reopens it with the same indentation, marker and info string (just the language, or
    the bare marker, if the info string is too long to repeat). Those lines count toward
    ``limit``. A fence left open at the end of the text is closed too.

    Line endings become ``\\n``; trailing whitespace of lines and of chunks, and blank lines at
    chunk starts, are dropped; indentation is kept. No chunk is empty or whitespace-only, and a
    blank text gives ``[]``.
    """
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    doc = _Doc(text, limit)
    chunks: list[str] = []
    position = doc.skip(0)
    while position < doc.content_end:
        chunk, end = _take_chunk(doc, position, limit)
        chunks.append(chunk)
        position = doc.skip(end)
    return chunks


def is_fence_line(line: str) -> bool:
    """Whether ``line`` opens or closes a code fence (CommonMark rules, any indentation)."""
    match = _FENCE_LINE.fullmatch(line.rstrip())
    return match is not None and not (match[2][0] == "`" and "`" in match[3])


ELLIPSIS: Final = "…"


def shorten(text: str, max_length: int) -> str:
    """``text`` cut to ``max_length`` with an ellipsis, at a word end when one is near."""
    if len(text) <= max_length:
        return text
    cut = max_length - 1
    if not text[cut].isspace():
        space = text.rfind(" ", 0, cut)
        if space >= max_length // 2:
            cut = space
        else:
            floor = max(1, cut - GRAPHEME_BACKOFF)
            while cut > floor and not is_grapheme_boundary(text, cut):
                cut -= 1
    return text[:cut].rstrip() + ELLIPSIS
