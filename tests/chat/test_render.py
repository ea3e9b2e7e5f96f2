"""Tests for bot.chat.splitter and bot.chat.texts: tables of cases (hostile ones included)
and seeded properties."""

from __future__ import annotations

import random
import re
from bisect import bisect_right
from dataclasses import dataclass

import pytest

from bot.chat.splitter import DISCORD_MESSAGE_LIMIT, split_message
from bot.chat.texts import (
    EMPTY_ANSWER,
    REASONING_FILENAME,
    REASONING_HEADING,
    RenderedFile,
    compose_reply,
    render_reasoning,
    status_queued,
    status_running,
    warning_line,
)
from bot.chat.thread_names import thread_name

ZWSP = "\u200b"

# --------------------------------------------------------------------------------------------
# An independent model of fences (CommonMark rules, any indentation) to check chunks against.
# --------------------------------------------------------------------------------------------

FENCE = re.compile(r"([ \t]*)(`{3,}|~{3,})(.*)")


@dataclass(frozen=True)
class Fence:
    marker: str
    info: str


def fence_step(line: str, open_fence: Fence | None) -> tuple[str, Fence | None]:
    """("open" | "close" | "text", fence open after the line)."""
    match = FENCE.fullmatch(line)
    if match is None:
        return "text", open_fence
    marker, info = match[2], match[3]
    if open_fence is None:
        if marker[0] == "`" and "`" in info:
            return "text", None
        return "open", Fence(marker, info.strip())
    same_kind = marker[0] == open_fence.marker[0] and len(marker) >= len(open_fence.marker)
    if same_kind and not info.strip():
        return "close", None
    return "text", open_fence


def open_fence_after(text: str) -> Fence | None:
    fence = None
    for line in text.split("\n"):
        _, fence = fence_step(line, fence)
    return fence


class Original:
    """The input text, with the fence state at any offset, for aligning chunks against it."""

    def __init__(self, text: str) -> None:
        self.text = text.replace("\r\n", "\n").replace("\r", "\n")
        self.starts: list[int] = []
        self.kinds: list[str] = []
        self.before: list[Fence | None] = []
        self.after: list[Fence | None] = []
        fence = None
        offset = 0
        for line in self.text.split("\n"):
            self.starts.append(offset)
            self.before.append(fence)
            kind, fence = fence_step(line, fence)
            self.kinds.append(kind)
            self.after.append(fence)
            offset += len(line) + 1

    def skip_ws(self, position: int) -> int:
        while position < len(self.text) and self.text[position].isspace():
            position += 1
        return position

    def line_of(self, position: int) -> int:
        return bisect_right(self.starts, position) - 1

    def fence_at(self, position: int) -> Fence | None:
        """Open fence once everything before ``position`` has been read (a line counts as read
        as soon as any of it has been)."""
        line = self.line_of(position)
        read = self.text[self.starts[line] : position]
        return self.after[line] if read.strip() else self.before[line]

    def closer_next(self, position: int) -> bool:
        """Whether the next visible text is an original closing fence line."""
        position = self.skip_ws(position)
        if position >= len(self.text):
            return False
        line = self.line_of(position)
        return self.kinds[line] == "close"

    def consume(self, position: int, segment: str) -> int:
        """Match ``segment``'s visible characters against the text from ``position``."""
        for char in segment:
            if char.isspace():
                continue
            position = self.skip_ws(position)
            assert position < len(self.text), f"chunk text {char!r} past the end of the input"
            assert self.text[position] == char, (
                f"chunk has {char!r}, input has {self.text[position]!r} at {position}: "
                f"{self.text[max(0, position - 30) : position + 30]!r}"
            )
            position += 1
        return position


def check_split(text: str, chunks: list[str], limit: int) -> None:
    """Every property split_message promises, checked against an independent fence model."""
    for chunk in chunks:
        assert 0 < len(chunk) <= limit
        assert chunk.strip(), "blank chunk"
        assert chunk == chunk.rstrip(), "trailing whitespace"
        assert not chunk.startswith("\n"), "leading blank line"
        assert "\r" not in chunk
        assert open_fence_after(chunk) is None, f"fence left open in {chunk!r}"

    original = Original(text)
    position = 0
    for chunk in chunks:
        lines = chunk.split("\n")
        reopened = original.fence_at(original.skip_ws(position))
        # Where the chunk resumes the input inside a block, it must reopen that block first.
        if reopened is not None:
            match = FENCE.fullmatch(lines[0])
            assert match is not None, f"chunk inside a fence does not reopen it: {chunk[:80]!r}"
            assert match[2] == reopened.marker
            assert reopened.info.startswith(match[3].strip())
            lines = lines[1:]
        assert lines, "chunk holds only a reopened fence"
        *body, last = lines
        position = original.consume(position, "\n".join(body))
        still_open = original.fence_at(position)
        last_kind, _ = fence_step(last, still_open)
        if still_open is not None and last_kind == "close" and not original.closer_next(position):
            # A closing line the splitter added: the input goes on inside the block.
            assert body, f"chunk holds an empty code block: {chunk[:80]!r}"
        else:
            position = original.consume(position, last)
    assert original.skip_ws(position) == len(original.text), "input left over"


# --------------------------------------------------------------------------------------------
# split_message: tables
# --------------------------------------------------------------------------------------------

CODE_LINES = [f"print({i})" for i in range(600)]
BIG_CODE = "```python\n" + "\n".join(CODE_LINES) + "\n```"


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        pytest.param("", 2000, [], id="empty"),
        pytest.param(" \n\t\n  \n", 2000, [], id="whitespace only"),
        pytest.param("\n" * 5000, 2000, [], id="all newlines"),
        pytest.param("\r\n" * 3000, 2000, [], id="all crlf"),
        pytest.param("hello", 2000, ["hello"], id="short"),
        pytest.param("\n\n  hello  \n\n", 2000, ["  hello"], id="blank lines trimmed"),
        pytest.param("a\r\nb\rc\n", 2000, ["a\nb\nc"], id="crlf and cr"),
        pytest.param("x" * 2000, 2000, ["x" * 2000], id="exactly the limit"),
        pytest.param("x" * 2001, 2000, ["x" * 2000, "x"], id="one over the limit"),
        pytest.param(
            "x" * 4500, 2000, ["x" * 2000, "x" * 2000, "x" * 500], id="one long line, hard cuts"
        ),
        pytest.param(
            "A" * 1200 + "\n\n" + "B" * 1200, 2000, ["A" * 1200, "B" * 1200], id="paragraphs"
        ),
        pytest.param(
            "A" * 1100 + "\n" + "B" * 300 + "\n\n" + "C" * 800 + "\n" + "D" * 500,
            2000,
            ["A" * 1100 + "\n" + "B" * 300, "C" * 800 + "\n" + "D" * 500],
            id="paragraph preferred to a later line break",
        ),
        pytest.param(
            "A" * 300 + "\n\n" + "B" * 1000 + "\n" + "C" * 1000,
            2000,
            ["A" * 300 + "\n\n" + "B" * 1000, "C" * 1000],
            id="line break preferred to a paragraph that leaves the message mostly empty",
        ),
        pytest.param(
            "one two three four five six", 10, ["one two", "three four", "five six"], id="spaces"
        ),
        pytest.param("a" + " " * 5000 + "b", 100, ["a", "b"], id="huge run of spaces"),
        pytest.param(
            "```py\nprint(1)", 2000, ["```py\nprint(1)\n```"], id="unclosed fence closed at end"
        ),
        pytest.param("```js```", 2000, ["```js```"], id="one-line code block is not a fence"),
        pytest.param(
            "```\n" + "y" * 5000 + "\n```",
            2000,
            [
                "```\n" + "y" * 1992 + "\n```",
                "```\n" + "y" * 1992 + "\n```",
                "```\n" + "y" * 1016 + "\n```",
            ],
            id="long line inside a code block",
        ),
        pytest.param(
            "Intro\n\n```\n" + "x\n" * 45 + "```\n\nOutro",
            100,
            ["Intro", "```\n" + "x\n" * 45 + "```", "Outro"],
            id="code block that fits is moved whole",
        ),
    ],
)
def test_split_message_table(text: str, limit: int, expected: list[str]) -> None:
    chunks = split_message(text, limit)
    assert chunks == expected
    check_split(text, chunks, limit)


def test_split_reopens_a_long_code_block_in_every_message() -> None:
    chunks = split_message(BIG_CODE)
    assert len(chunks) >= 3
    for chunk in chunks:
        assert chunk.startswith("```python\n")
        assert chunk.endswith(")\n```")
    content = [line for chunk in chunks for line in chunk.split("\n")[1:-1]]
    assert content == CODE_LINES
    check_split(BIG_CODE, chunks, DISCORD_MESSAGE_LIMIT)


def test_split_keeps_indentation_and_marker_of_the_fence() -> None:
    body = "\n".join(f"      if x{i}:  # {'z' * 30}" for i in range(120))
    text = "Steps:\n\n1. Run this:\n   ````js title=a.js\n" + body + "\n   ````\n2. Done"
    chunks = split_message(text, 500)
    check_split(text, chunks, 500)
    inner = [c for c in chunks if "if x" in c]
    assert len(inner) > 2
    for chunk in inner[1:]:
        assert chunk.startswith("   ````js title=a.js\n      if x")
    for chunk in inner[:-1]:
        assert chunk.endswith("\n   ````")


def test_split_tilde_fence_treats_backtick_fences_as_content() -> None:
    block = "~~~markdown\n" + "```py\nprint('hi')\n```\n" * 60 + "~~~"
    text = block + "\n\nafter"
    chunks = split_message(text, 300)
    check_split(text, chunks, 300)
    for chunk in chunks[:-1]:
        assert chunk.startswith("~~~markdown\n")
        assert chunk.endswith("\n~~~")
    assert chunks[-1].endswith("after")


def test_split_shorter_fence_inside_longer_one_is_content() -> None:
    text = "````\n" + "```\ninner\n```\n" * 100 + "````"
    chunks = split_message(text, 200)
    check_split(text, chunks, 200)
    assert all(chunk.startswith("````\n") and chunk.endswith("\n````") for chunk in chunks)


@pytest.mark.parametrize(
    "info",
    [
        pytest.param("a" * 3000, id="one huge word"),
        pytest.param("python " + "b" * 2500, id="language then huge attribute"),
        pytest.param(" ".join(["attr=1"] * 600), id="many attributes"),
    ],
)
def test_split_fence_line_with_huge_info_string(info: str) -> None:
    text = "Before\n\n```" + info + "\nprint(1)\n" + "x = 2\n" * 400 + "```\nafter"
    chunks = split_message(text)
    check_split(text, chunks, DISCORD_MESSAGE_LIMIT)
    reopen_lines = {chunk.split("\n", 1)[0] for chunk in chunks if "x = 2" in chunk}
    # Never the whole opener again: at most the language.
    assert reopen_lines
    assert all(line.startswith("```") and len(line) < 20 for line in reopen_lines)


def test_split_huge_marker_is_text() -> None:
    text = "`" * 5000 + "\nafter"
    chunks = split_message(text)
    assert all(len(chunk) <= DISCORD_MESSAGE_LIMIT for chunk in chunks)
    assert "".join(chunks).count("`") == 5000


def test_split_nine_thousand_characters_with_code_in_the_middle() -> None:
    rng = random.Random(9000)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]

    def paragraph() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(30, 90))) + "."

    prose_before = "\n\n".join(paragraph() for _ in range(9))
    code = "```rust\n" + "\n".join(f"    let v{i} = compute({i}, &data);" for i in range(80))
    code += "\n```"
    prose_after = "\n\n".join(paragraph() for _ in range(7))
    text = f"{prose_before}\n\n{code}\n\n{prose_after}"
    assert 8500 <= len(text) <= 10500
    chunks = split_message(text)
    check_split(text, chunks, DISCORD_MESSAGE_LIMIT)
    assert len(chunks) <= len(text) // 1000 + 1
    # Prose chunks end at paragraph ends; the code block is cut only between its lines.
    for chunk in chunks:
        assert chunk.endswith((".", "```"))
        if "```rust" in chunk:
            assert chunk.count("```") == 2


def test_split_code_block_right_before_the_end_of_a_message_is_not_emptied() -> None:
    text = "p" * 95 + "\n```\ncode\n```"
    chunks = split_message(text, 100)
    check_split(text, chunks, 100)
    assert chunks == ["p" * 95, "```\ncode\n```"]


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        pytest.param("use ``` here " * 30, 30, id="inline triple backticks at cut points"),
        pytest.param("~~~ " * 200, 25, id="tilde runs"),
        pytest.param("```\n" + "x ```` y " * 50 + "\n```", 40, id="closer-looking cut in code"),
        pytest.param("```\n````` " + "y" * 100 + "\n```", 40, id="long marker line in code"),
    ],
)
def test_split_never_cuts_a_line_into_a_fence(text: str, limit: int) -> None:
    chunks = split_message(text, limit)
    check_split(text, chunks, limit)


@pytest.mark.parametrize(
    ("unit", "limit"),
    [
        pytest.param("👍🏽", 2000, id="skin tone"),
        pytest.param("👨\u200d👩\u200d👧", 2000, id="zwj family"),
        pytest.param("🇫🇷", 2001, id="flags, odd limit"),
        pytest.param("e\u0301\u0302", 100, id="combining marks"),
        pytest.param("\ud83d\ude00", 101, id="surrogate pair as two code points"),
    ],
)
def test_split_hard_cuts_keep_graphemes_whole(unit: str, limit: int) -> None:
    text = unit * (3 * limit // len(unit))
    chunks = split_message(text, limit)
    assert all(len(chunk) <= limit for chunk in chunks)
    for chunk in chunks:
        assert len(chunk) % len(unit) == 0
        assert chunk == unit * (len(chunk) // len(unit))
    assert "".join(chunks) == text


def test_split_rejects_nonpositive_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_message("x", 0)


# --------------------------------------------------------------------------------------------
# split_message: property over generated hostile text
# --------------------------------------------------------------------------------------------

WORDS = [
    "hello",
    "world",
    "||",
    "|",
    "|||",
    "`code`",
    "``",
    "```inline```",
    "use ``` here",
    "~~strike~~",
    "**bold**",
    "@everyone",
    "<@123>",
    "naïve",
    "漢字",
    "👍🏽",
    "👨\u200d👩\u200d👧",
    "🇫🇷🇩🇪",
    "e\u0301",
    "\\",
    "\t",
    "\u00a0",
    "-",
    "#",
    "> quote",
]
MARKERS = ["```", "```", "````", "~~~", "~~~~"]
INFOS = ["", "py", "python", " js ", "rust title=x.rs", "a" * 50, "c++", "`bad`"]


def hostile_text(rng: random.Random) -> str:
    lines: list[str] = []
    open_marker: str | None = None
    for _ in range(rng.randint(0, 120)):
        roll = rng.random()
        if roll < 0.12:
            indent = " " * rng.choice([0, 0, 0, 1, 2, 3, 4, 6])
            if open_marker is not None and rng.random() < 0.7:
                closer = open_marker + open_marker[0] * rng.choice([0, 0, 1])
                lines.append(indent + closer + rng.choice(["", " ", "\t"]))
                open_marker = None
            else:
                marker = rng.choice(MARKERS)
                lines.append(indent + marker + rng.choice(INFOS))
                open_marker = open_marker or marker
        elif roll < 0.22:
            lines.append(rng.choice(["", "", " ", "\t \t"]))
        elif roll < 0.27:
            alphabet = rng.choice(["x", "ab ", "漢", "👍🏽", "||", "`~"])
            lines.append(alphabet * rng.randint(20, 1200))
        else:
            line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 25)))
            lines.append(" " * rng.choice([0, 0, 2, 4]) + line)
    text = ""
    for line in lines:
        text += line + rng.choice(["\n", "\n", "\n", "\r\n", "\n\n", "\r"])
    return text


@pytest.mark.parametrize("seed", range(40))
def test_split_property_over_hostile_text(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(10):
        text = hostile_text(rng)
        limit = rng.choice([60, 100, 333, 2000])
        chunks = split_message(text, limit)
        check_split(text, chunks, limit)
        if not text.strip():
            assert chunks == []


# --------------------------------------------------------------------------------------------
# Reasoning
# --------------------------------------------------------------------------------------------


def spoiler_body(content: str) -> str:
    heading = REASONING_HEADING + "\n||"
    assert content.startswith(heading)
    assert content.endswith("||")
    return content[len(heading) : -2]


@pytest.mark.parametrize("reasoning", ["", "   ", "\n\r\n\t"])
def test_reasoning_blank_renders_nothing(reasoning: str) -> None:
    assert render_reasoning(reasoning) is None


@pytest.mark.parametrize(
    ("reasoning", "body"),
    [
        pytest.param("Let me think.", "Let me think.", id="plain"),
        pytest.param("  padded\r\nlines  ", "padded\nlines", id="trimmed, crlf"),
        pytest.param("a || b", f"a |{ZWSP}| b", id="pair of bars"),
        pytest.param("||||", f"{ZWSP}|{ZWSP}|{ZWSP}|{ZWSP}|{ZWSP}", id="only bars"),
        pytest.param("x |", f"x |{ZWSP}", id="trailing bar"),
        pytest.param("| x", f"{ZWSP}| x", id="leading bar"),
        pytest.param("path C:\\", f"path C:\\{ZWSP}", id="trailing backslash"),
        pytest.param("`a || b` is code", f"`a |{ZWSP}| b` is code", id="bars in inline code"),
        pytest.param("@everyone <@1> ~~~", "@everyone <@1> ~~~", id="faithful otherwise"),
    ],
)
def test_reasoning_inline_spoiler(reasoning: str, body: str) -> None:
    rendered = render_reasoning(reasoning)
    assert rendered is not None
    assert rendered.file is None
    assert not rendered.is_file
    assert spoiler_body(rendered.content) == body
    assert rendered.content.count("||") == 2
    assert rendered.content.replace(ZWSP, "") == (
        f"{REASONING_HEADING}\n||{reasoning.replace(chr(13) + chr(10), chr(10)).strip()}||"
    )


@pytest.mark.parametrize(
    "reasoning",
    [
        pytest.param("Consider:\n```py\nprint(1)\n```\nDone.", id="fenced block"),
        pytest.param("inline ```x``` block", id="triple backticks anywhere"),
        pytest.param("y" * 2000, id="too long"),
        pytest.param("|" * 1000, id="too long once neutralised"),
    ],
)
def test_reasoning_goes_to_file(reasoning: str) -> None:
    rendered = render_reasoning(reasoning)
    assert rendered is not None
    assert rendered.file == RenderedFile(REASONING_FILENAME, (reasoning.strip() + "\n").encode())
    assert rendered.is_file
    assert REASONING_FILENAME in rendered.content
    assert "||" not in rendered.content
    assert len(rendered.content) <= 200


def test_reasoning_limit_boundary() -> None:
    overhead = len(REASONING_HEADING) + 5
    fits = render_reasoning("r" * (2000 - overhead))
    assert fits is not None
    assert fits.file is None
    assert len(fits.content) == 2000
    over = render_reasoning("r" * (2001 - overhead))
    assert over is not None
    assert over.file is not None
    small = render_reasoning("r" * 200, spoiler_limit=150)
    assert small is not None
    assert small.file is not None


def test_reasoning_file_survives_lone_surrogates() -> None:
    rendered = render_reasoning("```\n\ud83d\ude00 and \ud800 alone\n```")
    assert rendered is not None
    assert rendered.file is not None
    assert rendered.file.data.decode("utf-8") == "```\n😀 and \ufffd alone\n```\n"


# --------------------------------------------------------------------------------------------
# Warnings
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notes", "expected"),
    [
        pytest.param([], None, id="none"),
        pytest.param(["", "  \n"], None, id="blank notes"),
        pytest.param(["Left out clip.avi."], "⚠️ Left out clip.avi.", id="one"),
        pytest.param(["a", "", "b\nc"], "⚠️ a · b c", id="joined, collapsed"),
    ],
)
def test_warning_line(notes: list[str], expected: str | None) -> None:
    assert warning_line(notes) == expected


def test_warning_line_is_cut_at_a_word() -> None:
    line = warning_line([f"Left out image{i}.png (over the limit of 6 images)" for i in range(20)])
    assert line is not None
    assert len(line) <= 300
    assert line.endswith("…")
    assert "\n" not in line
    assert line[:-1] == line[:-1].rstrip()
    assert line.startswith("⚠️ Left out image0.png")


# --------------------------------------------------------------------------------------------
# compose_reply
# --------------------------------------------------------------------------------------------


def test_compose_empty_answer_gets_placeholder() -> None:
    reply = compose_reply("  \n", None, [])
    assert reply.messages == (EMPTY_ANSWER,)
    assert reply.files == ()


def test_compose_order_reasoning_answer_warning_in_one_message_when_they_fit() -> None:
    reply = compose_reply("The answer.", "Because.", ["Left out a.exe."])
    assert reply.messages == (
        f"{REASONING_HEADING}\n||Because.||\n\nThe answer.\n\n⚠️ Left out a.exe.",
    )
    assert reply.files == ()


def test_compose_reasoning_gets_its_own_message_when_the_answer_does_not_fit_beside_it() -> None:
    reply = compose_reply("a" * 1990, "Because.", [])
    assert reply.messages == (f"{REASONING_HEADING}\n||Because.||", "a" * 1990)


def test_compose_reasoning_file_goes_with_first_message() -> None:
    reply = compose_reply("ok", "```\ncode\n```", [])
    assert len(reply.messages) == 1
    assert REASONING_FILENAME in reply.messages[0] and reply.messages[0].endswith("\n\nok")
    assert reply.files == (RenderedFile(REASONING_FILENAME, b"```\ncode\n```\n"),)


def test_compose_warning_gets_own_message_when_last_is_full() -> None:
    reply = compose_reply("a" * 1990, None, ["Trimmed older turns."])
    assert reply.messages == ("a" * 1990, "⚠️ Trimmed older turns.")


def test_compose_blank_reasoning_is_skipped() -> None:
    assert compose_reply("hi", "   ", []).messages == ("hi",)


def test_compose_rejects_tiny_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        compose_reply("hi", None, [], limit=10)


@pytest.mark.parametrize("seed", range(10))
def test_compose_property_every_message_fits(seed: int) -> None:
    rng = random.Random(1000 + seed)
    for _ in range(10):
        limit = rng.choice([100, 150, 500, 2000])
        reasoning = rng.choice([None, "", hostile_text(rng)])
        notes = [hostile_text(rng)[:400] for _ in range(rng.randint(0, 3))]
        reply = compose_reply(hostile_text(rng), reasoning, notes, limit)
        assert reply.messages
        for message in reply.messages:
            assert 0 < len(message) <= limit
            assert message.strip()
        assert len(reply.files) <= 1
        if reasoning and "```" in reasoning:
            assert reply.files


# --------------------------------------------------------------------------------------------
# Thread names
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        pytest.param("<@123> what is in this photo?", "what is in this photo?", id="mention"),
        pytest.param(
            "<@!123>\n\nExplain **quantum** _physics_", "Explain quantum physics", id="nick"
        ),
        pytest.param("<@&1> ping <#2> now", "ping now", id="role and channel"),
        pytest.param("<:blob:1234> hi <a:dance:5678>", ":blob: hi :dance:", id="custom emoji"),
        pytest.param("# Big   heading\tline", "Big heading line", id="heading, whitespace"),
        pytest.param("> quoted\nsecond", "quoted", id="first line only"),
        pytest.param("-# small print", "small print", id="subtext"),
        pytest.param("- item one", "item one", id="list item"),
        pytest.param("||spoiler|| and ~~gone~~", "spoiler and gone", id="spoiler, strike"),
        pytest.param("use `snake_case` here", "use snake_case here", id="inline code"),
        pytest.param("2 * 3 * 4 = 24", "2 * 3 * 4 = 24", id="lone asterisks"),
        pytest.param(r"a \*literal\* star", "a *literal* star", id="escapes"),
        pytest.param("see [docs](https://x.y/z) now", "see docs now", id="masked link"),
        pytest.param("at <t:1700000000:R> ok", "at ok", id="timestamp"),
        pytest.param("```py\nprint(1)\n```", "print(1)", id="code block"),
        pytest.param("```hello```", "hello", id="one-line code block"),
        pytest.param("@everyone look", "look", id="everyone dropped"),
        pytest.param("hey @here and @Everyone!", "hey and !", id="here dropped"),
        pytest.param(r"\@everyone escaped", "escaped", id="escaped everyone dropped"),
        pytest.param("@@everyoneeveryone x", "x", id="no reassembly"),
        pytest.param("a\u200bb\u200fc\u202ed\u2066e\u2069f\ufeffg", "abcdefg", id="invisible"),
        pytest.param("\u202egnp.exe", "gnp.exe", id="right-to-left override"),
        pytest.param("😀 emoji", "😀 emoji", id="unicode emoji"),
    ],
)
def test_thread_name(prompt: str, expected: str) -> None:
    assert thread_name(prompt, "fallback") == expected


@pytest.mark.parametrize(
    "prompt",
    ["", "   \n ", "<@123>", "<@1> <#2>\n\n**  **", "```\n```", "@everyone @here", "\u200b\u202e"],
)
def test_thread_name_fallback(prompt: str) -> None:
    assert thread_name(prompt, "Chat with Ann") == "Chat with Ann"


def test_thread_name_cut_at_word() -> None:
    prompt = " ".join(f"word{i}" for i in range(60))
    name = thread_name(prompt, "fb")
    assert len(name) <= 100
    assert name.endswith("…")
    assert prompt.startswith(name[:-1])
    assert prompt[len(name) - 1] == " "


def test_thread_name_hard_cut_single_word() -> None:
    name = thread_name("x" * 300, "fb")
    assert name == "x" * 99 + "…"


def test_thread_name_hard_cut_keeps_emoji_whole() -> None:
    name = thread_name("👍🏽" * 100, "fb")
    assert len(name) <= 100
    assert name[:-1] == "👍🏽" * (len(name[:-1]) // 2)


def test_thread_name_long_fallback_and_blank_fallback() -> None:
    assert len(thread_name("", "f " * 200)) <= 100
    assert thread_name("", "  ") == "Conversation"
    # a display name is cleaned like a prompt, and never leaves the name empty
    assert thread_name("", "Chat with @everyone\u202e") == "Chat with"
    assert thread_name("", "\u200b@here") == "Conversation"


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        (0, "Waiting in queue (position 1)…"),
        (2, "Waiting in queue (position 3)…"),
        (None, "Waiting in queue…"),
        (-1, "Waiting in queue…"),
    ],
)
def test_status_queued(position: int | None, expected: str) -> None:
    assert status_queued(position) == expected


def test_status_running() -> None:
    assert status_running() == "Thinking…"
