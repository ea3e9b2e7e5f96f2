"""Request building: attachment planning, prompts, trimming, new history."""

from __future__ import annotations

import pytest

from bot.domain.attachments import AttachmentLimits, InlinedText, media_type, plan_attachments
from bot.domain.conversation import (
    build_request,
    compose_prompt,
    estimate_tokens,
    fence,
    new_history_messages,
    trim_history,
)
from bot.domain.models import (
    Attachment,
    ChatMessage,
    GenerationSettings,
    HistoryEntry,
    MediaKind,
    Speaker,
)


def att(name: str, ctype: str | None, size: int = 1000) -> Attachment:
    return Attachment(
        id=name, filename=name, content_type=ctype, size=size, url=f"https://cdn/{name}"
    )


@pytest.mark.parametrize(
    ("name", "ctype", "kind", "effective"),
    [
        ("a.jpg", "image/jpeg", MediaKind.IMAGE, "image/jpeg"),
        ("a.png", "image/png; charset=binary", MediaKind.IMAGE, "image/png"),
        ("a.webp", "IMAGE/WEBP", MediaKind.IMAGE, "image/webp"),
        # an animated GIF goes as a video (converted to MP4)
        ("a.gif", "image/gif", MediaKind.VIDEO, "image/gif"),
        ("a.GIF", None, MediaKind.VIDEO, "image/gif"),
        ("a.mp4", "video/mp4", MediaKind.VIDEO, "video/mp4"),
        ("a.mov", "video/quicktime", MediaKind.VIDEO, "video/quicktime"),
        ("a.webm", "video/webm", MediaKind.UNSUPPORTED, "video/webm"),
        ("a.pdf", "application/pdf", MediaKind.UNSUPPORTED, "application/pdf"),
        ("notes.txt", "text/plain; charset=utf-8", MediaKind.TEXT, "text/plain"),
        ("data.json", "application/json", MediaKind.TEXT, "application/json"),
        # content type decides, even against the extension
        ("photo.png", "application/pdf", MediaKind.UNSUPPORTED, "application/pdf"),
        ("clip.txt", "video/mp4", MediaKind.VIDEO, "video/mp4"),
        # the extension is the fallback when the type is missing or generic
        ("photo.JPG", None, MediaKind.IMAGE, "image/jpeg"),
        ("clip.mov", "application/octet-stream", MediaKind.VIDEO, "video/quicktime"),
        ("main.py", "", MediaKind.TEXT, "text/plain"),
        ("blob.bin", None, MediaKind.UNSUPPORTED, "unknown"),
        ("noext", "application/octet-stream", MediaKind.UNSUPPORTED, "application/octet-stream"),
    ],
)
def test_media_type(name: str, ctype: str | None, kind: MediaKind, effective: str) -> None:
    assert media_type(att(name, ctype)) == (kind, effective)


def test_eight_images_keep_six_and_warn() -> None:
    plan = plan_attachments([att(f"{i}.png", "image/png") for i in range(8)], AttachmentLimits())
    assert [a.filename for a in plan.images] == [f"{i}.png" for i in range(6)]
    assert plan.dropped == ("only 6 images per message are sent; left out `6.png`, `7.png`",)


def test_four_videos_keep_three() -> None:
    plan = plan_attachments([att(f"{i}.mp4", "video/mp4") for i in range(4)], AttachmentLimits())
    assert len(plan.videos) == 3
    assert plan.dropped == ("only 3 videos per message are sent; left out `3.mp4`",)


def test_unsupported_oversized_and_empty_files_are_named() -> None:
    limits = AttachmentLimits(max_image_bytes=2000, max_video_bytes=3000, max_text_bytes=100)
    plan = plan_attachments(
        [
            att("scan.bmp", "image/bmp"),
            att("paper.pdf", "application/pdf"),
            att("big.png", "image/png", size=2001),
            att("big.mp4", "video/mp4", size=3001),
            att("long.txt", "text/plain", size=101),
            att("zero.png", "image/png", size=0),
            att("ok.txt", "text/plain", size=100),
            att("evil`|@everyone\n.png", "image/png", size=0),
        ],
        limits,
    )
    assert plan.texts == (att("ok.txt", "text/plain", size=100),)
    assert plan.dropped == (
        "`scan.bmp` (image/bmp) is not a supported type (JPEG, PNG, WebP, GIF, MP4, MOV or text)",
        "`paper.pdf` (application/pdf) is not a supported type "
        "(JPEG, PNG, WebP, GIF, MP4, MOV or text)",
        "`big.png` is over the 2.0 KB image limit",
        "`big.mp4` is over the 2.9 KB video limit",
        "`long.txt` is over the 100 B text-file limit",
        "`zero.png` is empty",
        "`evileveryone.png` is empty",
    )


def test_fence_cannot_be_closed_by_its_body() -> None:
    assert fence("x = 1", "python") == "```python\nx = 1\n```"
    body = "a ```` b"
    out = fence(body)
    assert out.startswith("`````\n") and out.endswith("\n`````")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"text": " hi "}, "hi"),
        (
            {"text": "and this?", "quoted": "line1\nline2", "quoted_author": "Bo"},
            "(In reply to a message from Bo:)\n> line1\n> line2\n\nand this?",
        ),
        (
            {"text": "see file", "inlined": [InlinedText("a.py", "print(1)")]},
            "see file\n\nAttached file a.py:\n```python\nprint(1)\n```",
        ),
        ({"text": ""}, ""),
    ],
)
def test_compose_prompt(kwargs: dict[str, object], expected: str) -> None:
    text = kwargs.pop("text")
    assert compose_prompt(text, **kwargs) == expected  # type: ignore[arg-type]


ALICE, BOB = Speaker("1", "Alice"), Speaker("2", "Bob")


def test_one_speaker_is_not_labelled() -> None:
    settings = GenerationSettings(system_prompt="Be brief.")
    built = build_request(
        [],
        prompt="hi",
        settings=settings,
        context_budget_tokens=100_000,
        author_name="Alice",
        speakers=[ALICE],
    )
    assert built.request.prompt == "hi"
    assert built.request.system_prompt == "Be brief."


def test_several_speakers_every_user_turn_can_be_attributed() -> None:
    """Once a second person speaks, the new turn is labelled and the model is told that the
    unlabelled turns (written before) are the first speaker's."""
    built = build_request(
        entries(2),
        prompt="and me?",
        settings=GenerationSettings(system_prompt="Be brief."),
        context_budget_tokens=100_000,
        author_name="Bob",
        speakers=[ALICE, BOB],
    )
    assert built.request.prompt == "[Bob]: and me?"
    system = built.request.system_prompt or ""
    assert system.startswith("Be brief.\n\n")
    assert "without such a label were written by Alice" in system
    alone = build_request(
        [],
        prompt="x",
        settings=GenerationSettings(),
        context_budget_tokens=100_000,
        author_name="Alice",
        speakers=[ALICE, BOB],
    )
    assert alone.request.prompt == "[Alice]: x"
    assert alone.request.system_prompt is not None and "Alice" in alone.request.system_prompt


def entries(turns: int, chars: int = 300) -> list[HistoryEntry]:
    out = []
    for t in range(turns):
        for i, (role, text) in enumerate((("user", "u" * chars), ("assistant", "a" * chars))):
            out.append(HistoryEntry(t, 2 * t + i, ChatMessage(role, text), estimate_tokens(text)))
    return out


def test_trim_drops_oldest_whole_turns() -> None:
    history = entries(10)
    per_turn = 2 * estimate_tokens("u" * 300)
    kept = trim_history(history, per_turn * 3 + 1)
    assert kept.dropped_turns == 7
    assert len(kept.messages) == 6
    assert kept.messages[0] == history[14].message
    assert trim_history(history, 10**9).dropped_turns == 0
    assert trim_history(history, 0).messages == ()


def test_media_parts_cost_more() -> None:
    plain = estimate_tokens([{"type": "text", "text": "hi"}])
    with_image = estimate_tokens(
        [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "u"}}]
    )
    assert with_image - plain >= 1500


def test_build_request_carries_settings_and_trims() -> None:
    settings = GenerationSettings(
        thinking="auto",
        effort="high",
        system_prompt="sys",
        max_completion_tokens=1000,
        temperature=0.3,
        top_p=0.8,
    )
    built = build_request(
        entries(50, chars=3000),
        prompt="now",
        image_urls=["i"],
        video_urls=["v"],
        settings=settings,
        context_budget_tokens=30_000,
    )
    req = built.request
    assert (req.prompt, req.image_urls, req.video_urls) == ("now", ("i",), ("v",))
    assert (req.thinking, req.reasoning_effort, req.system_prompt) == ("auto", "high", "sys")
    assert (req.max_completion_tokens, req.temperature, req.top_p) == (1000, 0.3, 0.8)
    assert built.dropped_turns > 0
    assert sum(estimate_tokens(m.content) for m in req.messages) <= 30_000 - 1000 - 11_500


def test_turns_the_store_left_out_count_as_dropped() -> None:
    kept = build_request(
        entries(2, chars=10),
        prompt="now",
        settings=GenerationSettings(),
        context_budget_tokens=30_000,
        omitted_turns=3,
    )
    assert len(kept.request.messages) == 4  # everything given fits
    assert kept.dropped_turns == 3


def test_new_history_messages() -> None:
    h = [ChatMessage("user", "q1"), ChatMessage("assistant", "a1")]
    new = [ChatMessage("user", "q2"), ChatMessage("assistant", "a2")]
    system = ChatMessage("system", "be nice")
    assert new_history_messages([*h, *new], 2) == tuple(new)
    assert new_history_messages([system, *h, *new], 2) == tuple(new)  # system left out
    assert new_history_messages([*h, *new], None) == tuple(new)  # resumed: after last user
    assert new_history_messages(new, 4) == tuple(new)  # model dropped history: last user on
    assert new_history_messages([ChatMessage("assistant", "x")], None) == (
        ChatMessage("assistant", "x"),
    )
