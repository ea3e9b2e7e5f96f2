"""A long, shared thread end to end: the history read stops at the context budget, yet the
speakers (labels and the note naming who wrote the unlabelled messages) are those of the
whole thread, through a Retry of its first answer."""

from __future__ import annotations

from tests.chat.conftest import HarnessFactory

LONG = "x" * 1800  # each exchange is ~1,210 tokens; 6,500 leave room for one of them


async def test_a_trimmed_shared_thread_keeps_its_speakers(make_harness: HarnessFactory) -> None:
    h = await make_harness(SEED_BOT_MODEL__CONTEXT_BUDGET_TOKENS="6500")
    since = h.fake.mark()
    _, thread = await h.start_thread(h.world.alice, "one")
    answer = await h.answer_in(thread, since=since, contains="echo: one")
    await h.app.bot.idle()
    # Retry the first answer: Alice's first turn in the history is now the new attempt.
    [retry_id] = [c["custom_id"] for row in answer.components for c in row["components"]]
    since = h.fake.mark()
    await (await h.fake.press_button(h.world.alice, answer, retry_id)).wait_response()
    await h.fake.wait_for_message(thread, contains="echo: one", since=since, timeout=10)
    await h.app.bot.idle()

    await h.say(h.world.bob, thread, "bob two", settle=True)
    for word in ("three", "four", "five"):
        await h.say(h.world.alice, thread, f"{word} {LONG}", settle=True)

    last = list(h.fal.requests.values())[-1].input
    sent = [m["content"] for m in last["messages"] if m["role"] == "user"]
    # Only the newest exchange fits: Bob's turn and the first are not sent...
    assert [text[:12] for text in sent] == ["[Alice]: fou"]
    # ...but they are still who spoke: Alice first (her unlabelled "one"), then Bob.
    assert last["prompt"] == f"[Alice]: five {LONG}"
    assert last["system_prompt"].endswith(
        "user messages without such a label were written by Alice."
    )
