"""A turn's attempts: where a stored turn's answer goes, which of its attachments fal
refused, and the next attempt of a turn (Retry, or a try without the refused attachments)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bot.domain.attachments import PreparedMedia, left_out
from bot.domain.conversation import compose_prompt
from bot.domain.errors import FieldProblem, ModelInputRejected
from bot.domain.models import Destination, Incoming, NewTurn, Turn

# The API requires a prompt; an image alone still deserves an answer.
NO_TEXT_PROMPT = "(no text; see the attachments)"
# The prompt of a message with neither text nor media.
EMPTY_PROMPT = "Hello!"


def first_attempt(
    incoming: Incoming, media: PreparedMedia, supersedes: int | None = None
) -> NewTurn:
    """The turn one message (or burst) becomes, its attachments prepared as ``media``;
    ``supersedes``: the attempt it replaces when a follow-up joined the burst."""
    return _carrying(
        NewTurn(
            scope_id=incoming.scope_id,
            source_id=incoming.source_id,
            author_id=incoming.author_id,
            author_name=incoming.author_name,
            reply_channel_id=incoming.channel_id or incoming.scope_id,
            prompt=_prompt(incoming, media),
            supersedes=supersedes,
        ),
        media,
    )


def edited_attempt(turn: Turn, scope_id: str, edited: Incoming, media: PreparedMedia) -> NewTurn:
    """The next attempt of ``turn`` once its message was edited to ``edited`` (its
    attachments prepared as ``media``)."""
    return _after(turn, scope_id, _prompt(edited, media), media)


def _prompt(incoming: Incoming, media: PreparedMedia) -> str:
    prompt = compose_prompt(
        incoming.text,
        quoted=incoming.reply_text,
        quoted_author=incoming.reply_author,
        inlined=media.inlined,
    )
    if not prompt.strip():
        prompt = NO_TEXT_PROMPT if media.image_urls or media.video_urls else EMPTY_PROMPT
    return prompt


def _after(turn: Turn, scope_id: str, prompt: str, media: PreparedMedia) -> NewTurn:
    """The next attempt of ``turn``: it answers the same message, for the same author, in
    the same channel, asking ``prompt`` with ``media``."""
    return _carrying(
        NewTurn(
            scope_id=scope_id,
            source_id=turn.source_id,
            author_id=turn.author_id,
            author_name=turn.author_name,
            reply_channel_id=turn.reply_channel_id,
            prompt=prompt,
            attempt=turn.attempt + 1,
            supersedes=turn.id,
        ),
        media,
    )


def _carrying(new: NewTurn, media: PreparedMedia) -> NewTurn:
    """``new`` with the prepared files it sends, and the notes on those left out."""
    return replace(
        new,
        image_urls=media.image_urls,
        image_names=media.image_names,
        video_urls=media.video_urls,
        video_names=media.video_names,
        warnings=media.warnings,
    )


def destination_of(turn: Turn) -> Destination:
    """Where a stored turn's answer goes: its channel, replying to its message (a thread
    opened on that message has the message's id, and the answer inside it replies to
    nothing, as a live turn does)."""
    replies = turn.source_id.isdigit() and turn.source_id != turn.reply_channel_id
    return Destination(turn.reply_channel_id, turn.source_id if replies else None)


def rejected_media(turn: Turn, error: ModelInputRejected) -> dict[str, set[int]] | None:
    """The attachments fal refused, by field and index, when that is all it refused and
    something is left to answer; None when the turn cannot go on without them."""
    refused: dict[str, set[int]] = {"image_urls": set(), "video_urls": set()}
    sizes = {"image_urls": len(turn.image_urls), "video_urls": len(turn.video_urls)}
    if not error.problems:
        return None
    for problem in error.problems:
        if problem.field not in refused or problem.index is None:
            return None
        if not 0 <= problem.index < sizes[problem.field]:
            return None
        refused[problem.field].add(problem.index)
    remaining = sum(sizes.values()) - sum(len(v) for v in refused.values())
    if remaining == 0 and turn.prompt == NO_TEXT_PROMPT:
        return None
    return refused


def next_attempt(
    turn: Turn,
    scope_id: str,
    refused: dict[str, set[int]] | None = None,
    problems: Sequence[FieldProblem] = (),
) -> NewTurn:
    """The next attempt of ``turn``: the same message, prompt and media, except the
    attachments ``refused`` (by field and index), which are left out with a warning naming
    each and why."""
    refused = refused or {}
    reasons = {(p.field, p.index): p.message for p in problems}
    warnings = list(turn.warnings)

    def keep(
        field_name: str, urls: tuple[str, ...], names: tuple[str, ...]
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        kept_urls, kept_names = [], []
        for index, url in enumerate(urls):
            name = names[index] if index < len(names) else f"attachment {index + 1}"
            if index in refused.get(field_name, ()):
                reason = reasons.get((field_name, index), "the model could not read it")
                warnings.append(left_out(name, reason.rstrip(".")))
            else:
                kept_urls.append(url)
                kept_names.append(name)
        return tuple(kept_urls), tuple(kept_names)

    image_urls, image_names = keep("image_urls", turn.image_urls, turn.image_names)
    video_urls, video_names = keep("video_urls", turn.video_urls, turn.video_names)
    kept = PreparedMedia(image_urls, image_names, video_urls, video_names, warnings=tuple(warnings))
    return _after(turn, scope_id, turn.prompt, kept)
