"""Pure request building: which attachments go where, how the prompt reads, and how the
history is trimmed to the context budget."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from bot.domain.attachments import InlinedText, text_language
from bot.domain.models import (
    ChatMessage,
    GenerationSettings,
    HistoryEntry,
    Incoming,
    JsonValue,
    ModelRequest,
    RawJson,
    Speaker,
)
from bot.domain.params import MODEL_DEFAULT_MAX_TOKENS

# Rough token costs: the model's tokenizer is not public, so budget conservatively.
CHARS_PER_TOKEN = 3
IMAGE_TOKENS = 1_500
VIDEO_TOKENS = 10_000


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


def fence(body: str, language: str = "") -> str:
    """A fenced block that ``body`` cannot close: the fence is longer than any backtick run
    inside it."""
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    marker = "`" * max(3, longest + 1)
    return f"{marker}{language}\n{body}\n{marker}"


# How a prompt starts that quotes the message it replies to.
QUOTE_OPENING = "(In reply to a message"


def compose_prompt(
    text: str,
    *,
    quoted: str | None = None,
    quoted_author: str | None = None,
    inlined: Sequence[InlinedText] = (),
) -> str:
    """The prompt for one user turn, as stored (who wrote it is added when the request is
    built: see :func:`build_request`). ``quoted`` is the text of the message the user replied
    to; text attachments are appended as fenced blocks."""
    parts: list[str] = []
    if quoted:
        who = f" from {quoted_author}" if quoted_author else ""
        quoted_lines = "\n".join("> " + line for line in quoted.splitlines())
        parts.append(f"{QUOTE_OPENING}{who}:)\n{quoted_lines}")
    body = text.strip()
    if body:
        parts.append(body)
    for item in inlined:
        # The model is told when it sees only a file's start, so it does not answer as if
        # it had read the whole file.
        cut = (
            f" (only its first {len(item.text.encode())} of {item.cut_from} bytes)"
            if item.cut_from is not None
            else ""
        )
        if item.page:
            # The page's words are its site's, not the person's: the model must not take
            # instructions in it for the user's.
            parts.append(
                f"Text of the linked page {item.filename} (written by that site, not by the "
                f"user):\n{fence(item.text)}"
            )
            continue
        parts.append(
            f"Attached file {item.filename}{cut}:\n"
            + fence(item.text, text_language(item.filename))
        )
    return "\n\n".join(parts)


def without_quote_of_others(prompt: str, author_name: str) -> str:
    """``prompt`` (as :func:`compose_prompt` made it) without the text of a message by
    someone other than ``author_name`` it quotes; who is quoted stays."""
    if not prompt.startswith(QUOTE_OPENING):
        return prompt
    heading, _, rest = prompt.partition("\n")
    _, _, after = rest.partition("\n\n")
    if heading == f"{QUOTE_OPENING} from {author_name}:)":
        return prompt
    shown = heading.removesuffix(":)") + "; its text is left out)"
    return f"{shown}\n\n{after}" if after else shown


def speakers_note(speakers: Sequence[Speaker]) -> str | None:
    """What the model is told when several people talk in one conversation, or None when
    one person does. User turns are labelled ``[name]:`` from the moment a second person
    speaks; the turns before were all the first person's, which this note says, so every
    user turn of the thread can be attributed."""
    if len({s.author_id for s in speakers}) < 2:
        return None
    return (
        "Several people talk in this conversation. A user message that begins with "
        "[name]: was written by that person; user messages without such a label were "
        f"written by {speakers[0].author_name}."
    )


def labelled(prompt: str, author_name: str, speakers: Sequence[Speaker]) -> str:
    """The prompt as sent: prefixed with its author's name once several people talk."""
    if len({s.author_id for s in speakers}) < 2:
        return prompt
    return f"[{author_name}]: {prompt}"


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
    tokens: int = 0


def trim_history(history: Sequence[HistoryEntry], budget_tokens: int) -> TrimmedHistory:
    """Keep the newest whole turns whose messages fit ``budget_tokens``; drop the oldest.
    (A turn is a run of entries with the same ``turn_id``.) One pass from the newest entry,
    stopping at the first turn that does not fit: no per-turn lists."""
    kept = end = len(history)
    used = 0
    while end > 0:
        turn_id = history[end - 1].turn_id
        start = end - 1
        cost = history[start].tokens
        while start > 0 and history[start - 1].turn_id == turn_id:
            start -= 1
            cost += history[start].tokens
        if used + cost > budget_tokens:
            break
        used += cost
        kept = end = start
    dropped = sum(1 for i in range(kept) if i == 0 or history[i].turn_id != history[i - 1].turn_id)
    messages = tuple(entry.message for entry in history[kept:])
    return TrimmedHistory(messages, dropped, used)


@dataclass(frozen=True, slots=True)
class BuiltRequest:
    request: ModelRequest
    dropped_turns: int
    # The estimate of everything sent (history, prompt, system prompt, media): what the
    # turn's cost is reserved and, when fal reports nothing, estimated from.
    input_tokens: int = 0


def build_request(
    history: Sequence[HistoryEntry],
    *,
    prompt: str,
    image_urls: Sequence[str] = (),
    video_urls: Sequence[str] = (),
    settings: GenerationSettings,
    context_budget_tokens: int,
    author_name: str = "",
    speakers: Sequence[Speaker] = (),
    omitted_turns: int = 0,
) -> BuiltRequest:
    """The model request for one turn: history trimmed so that it, the new prompt, its media
    and the output budget fit the context budget. With several ``speakers`` (the authors of
    the conversation's turns, first speaker first) the prompt is labelled with
    ``author_name`` and the system prompt says how to read the labels. ``omitted_turns``
    older turns, left out of ``history`` before it got here, count as dropped."""
    prompt = labelled(prompt, author_name, speakers)
    note = speakers_note(speakers)
    system_prompt = settings.system_prompt
    if note is not None:
        system_prompt = f"{system_prompt}\n\n{note}" if system_prompt else note
    sent = (
        estimate_tokens(prompt)
        + estimate_tokens(system_prompt or "")
        + IMAGE_TOKENS * len(image_urls)
        + VIDEO_TOKENS * len(video_urls)
    )
    fixed = sent + (settings.max_completion_tokens or MODEL_DEFAULT_MAX_TOKENS)
    trimmed = trim_history(history, max(0, context_budget_tokens - fixed))
    request = ModelRequest(
        prompt=prompt,
        messages=trimmed.messages,
        image_urls=tuple(image_urls),
        video_urls=tuple(video_urls),
        **{**settings.wire_values(), "system_prompt": system_prompt},
    )
    return BuiltRequest(request, trimmed.dropped_turns + omitted_turns, sent + trimmed.tokens)


def new_history_messages(
    returned: Sequence[ChatMessage], sent_count: int | None, skipped: int = 0
) -> tuple[ChatMessage, ...]:
    """What a reply adds to the stored history: the returned messages past the ``sent_count``
    that were sent (of which the first ``skipped`` were not decoded, see ``ModelReply``).
    System messages are left out: the system prompt is a setting sent with every request,
    so a stored copy would go stale when ``/system`` changes it. When the count is unknown
    (a request resumed after a restart) or does not fit, keep what follows the last user
    message: the API appends the new user turn, then the answer."""
    if sent_count is not None:
        sent_count -= skipped
    conversation = [m for m in returned if m.role != "system"]
    if sent_count is not None and len(conversation) > sent_count:
        return tuple(conversation[sent_count:])
    last_user = max((i for i, m in enumerate(conversation) if m.role == "user"), default=None)
    return tuple(conversation[last_user:]) if last_user is not None else tuple(conversation[-1:])
