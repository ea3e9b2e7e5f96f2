"""Conversation controls end to end: Stop, Retry, edit-to-redo, batching, buttons after a
restart, live config reload."""

from __future__ import annotations

from typing import Any

from tests.chat.conftest import Harness, HarnessFactory, status_with_stop
from tests.fakes.discord.events import MessageCreated

# -- Stop ---------------------------------------------------------------------------------------


async def test_stop_while_queued_cancels_and_nothing_is_posted(harness: Harness) -> None:
    h = harness
    thread, _ = await h.converse(h.world.alice, "first")
    h.fal.concurrency = 0  # everything waits in fal's queue
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "second")
    status = await status_with_stop(h, thread, since)
    assert "queue" in status.content.lower()
    [stop_id] = [i for i in status.custom_ids() if i.startswith("seed:stop:")]
    pressed = await h.fake.press_button(h.world.alice, status, stop_id)
    response = await pressed.wait_response()
    assert response.type == 6  # acknowledged at once; the status message is edited after
    stopped = await h.fake.wait_for_edit(status, lambda m: "Stopped by" in m.content, since=since)
    assert stopped.custom_ids() == []
    request = list(h.fal.requests.values())[-1]
    await h.fal.wait_for(lambda: request.cancel_requested)
    # fal frees up; the stopped turn is never answered, and its text never reaches history
    h.fal.concurrency = 2
    answer = await h.say(h.world.alice, thread, "third")
    assert answer.content.endswith("echo: third")
    assert not [
        e
        for e in h.fake.events_of(MessageCreated, since=since)
        if "echo: second" in e.message.content
    ]
    last = list(h.fal.requests.values())[-1]
    sent = [m["content"] for m in last.input["messages"] if m["role"] == "user"]
    assert sent == ["first"]


async def test_stop_while_running_and_a_late_answer_is_not_posted(harness: Harness) -> None:
    h = harness
    h.fal.honour_cancel = False  # the model finishes anyway
    thread, _ = await h.converse(h.world.alice, "first")
    h.fal.hold()
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "slow one")
    status = await status_with_stop(h, thread, since)
    [stop_id] = status.custom_ids()
    await (await h.fake.press_button(h.world.alice, status, stop_id)).wait_response()
    await h.fake.wait_for_edit(status, lambda m: "Stopped by" in m.content, since=since)
    h.fal.unhold()
    request = list(h.fal.requests.values())[-1]
    await h.fal.wait_for(lambda: request.state == "COMPLETED")
    answer = await h.say(h.world.alice, thread, "next")
    assert "echo: next" in answer.content
    posted = [e.message.content for e in h.fake.events_of(MessageCreated, since=since) if e.by_bot]
    assert not any("slow one" in c for c in posted if c.startswith("echo:"))
    last = list(h.fal.requests.values())[-1]
    assert [m["content"] for m in last.input["messages"] if m["role"] == "user"] == ["first"]


async def test_stop_by_someone_without_rights_is_refused(harness: Harness) -> None:
    h = harness
    thread, _ = await h.converse(h.world.alice, "first")
    h.fal.hold()
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "keep going")
    status = await status_with_stop(h, thread, since)
    [stop_id] = status.custom_ids()
    pressed = await h.fake.press_button(h.world.bob, status, stop_id)
    response = await pressed.wait_response()
    assert response.ephemeral
    assert response.data is not None and "Only the person who asked" in response.data["content"]
    h.fal.unhold()
    answer = await h.fake.wait_for_post(thread, contains="echo: keep going", since=since)
    assert answer is not None


# -- Retry --------------------------------------------------------------------------------------


async def test_retry_replaces_the_last_answer(harness: Harness) -> None:
    h = harness
    thread, _ = await h.converse(h.world.alice, "first")
    answer = await h.say(h.world.alice, thread, "second")
    [retry_id] = answer.custom_ids()
    assert retry_id.startswith("seed:retry:")
    since = h.fake.mark()
    pressed = await h.fake.press_button(h.world.alice, answer, retry_id)
    assert (await pressed.wait_response()).type == 6  # acknowledged quietly
    again = await h.fake.wait_for_message(thread, contains="echo: second", since=since)
    assert again.id != answer.id
    old = await h.fake.wait_for_edit(answer, lambda m: "replaced by a newer answer" in m.content)
    assert old.custom_ids() == []
    assert h.prompts() == ["first", "second", "second"]
    # the old answer is replaced in the history, not duplicated
    await h.say(h.world.alice, thread, "third")
    last = list(h.fal.requests.values())[-1]
    assert [m["content"] for m in last.input["messages"] if m["role"] == "user"] == [
        "first",
        "second",
    ]


async def test_retry_on_an_older_answer_is_explained(harness: Harness) -> None:
    h = harness
    thread, first = await h.converse(h.world.alice, "first")
    await h.say(h.world.alice, thread, "second")
    [retry_id] = first.custom_ids()
    pressed = await h.fake.press_button(h.world.alice, first, retry_id)
    response = await pressed.wait_response()
    assert response.ephemeral
    assert response.data is not None and "Only the latest answer" in response.data["content"]
    assert h.prompts() == ["first", "second"]


async def test_retry_slash_command(harness: Harness) -> None:
    h = harness
    thread, _ = await h.converse(h.world.alice, "only question")
    since = h.fake.mark()
    interaction = await h.fake.invoke_command(h.world.alice, thread, "retry")
    await interaction.wait_response()
    await h.fake.wait_for_message(thread, contains="echo: only question", since=since)
    assert h.prompts() == ["only question", "only question"]
    refused = await h.fake.invoke_command(h.world.bob, thread, "retry")
    response = await refused.wait_response()
    assert response.data is not None and "Only the person who asked" in response.data["content"]


async def test_retry_button_works_after_a_restart(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    thread, answer = await h.converse(h.world.alice, "before restart")
    [retry_id] = answer.custom_ids()
    await h.stop()
    h2 = await make_harness()
    since = h2.fake.mark()
    pressed = await h2.fake.press_button(h2.world.alice, answer, retry_id)
    await pressed.wait_response()
    await h2.fake.wait_for_message(thread, contains="echo: before restart", since=since)
    assert h2.prompts() == ["before restart", "before restart"]


# -- edit-to-redo ---------------------------------------------------------------------------------


async def test_editing_the_latest_message_answers_it_again(harness: Harness) -> None:
    h = harness
    thread, _ = await h.converse(h.world.alice, "first")
    since = h.fake.mark()
    message = await h.fake.send_message(h.world.alice, thread, "wrong question")
    answer = await h.fake.wait_for_message(thread, contains="echo: wrong question", since=since)
    since = h.fake.mark()
    await h.fake.edit_message(message, "right question")
    await h.fake.wait_for_message(thread, contains="echo: right question", since=since)
    await h.fake.wait_for_edit(answer, lambda m: "replaced by a newer answer" in m.content)
    await h.say(h.world.alice, thread, "then")
    last = list(h.fal.requests.values())[-1]
    assert [m["content"] for m in last.input["messages"] if m["role"] == "user"] == [
        "first",
        "right question",
    ]


async def test_editing_an_older_message_changes_nothing(harness: Harness) -> None:
    h = harness
    since = h.fake.mark()
    _, thread = await h.start_thread(h.world.alice, "opening")
    await h.answer_in(thread, since=since, contains="echo: opening")
    older = await h.fake.send_message(h.world.alice, thread, "older")
    await h.fake.wait_for_message(thread, contains="echo: older", since=since)
    await h.say(h.world.alice, thread, "newer")
    await h.fake.edit_message(older, "older, edited")
    # barrier: a later message is answered, and nothing was redone before it
    await h.say(h.world.alice, thread, "after the edit")
    assert "older, edited" not in h.prompts()


# -- batching -----------------------------------------------------------------------------------


async def test_a_burst_is_answered_as_one_turn_without_a_wait(
    make_harness: HarnessFactory,
) -> None:
    """The first message goes to fal at once; each follow-up within the window, while the
    answer is not yet in, replaces the request with the merged turn."""
    h = await make_harness(SEED_BOT_DISCORD__BATCH_WINDOW_SECONDS="5")
    thread, _ = await h.converse(h.world.alice, "hello")
    h.fal.hold()
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "one")
    [_, first] = await h.fal.wait_for_submissions(2)  # submitted at once: no fixed wait
    await h.fake.send_message(h.world.alice, thread, "two")
    await h.fal.wait_for(lambda: h.fal.requests[first].cancel_requested)
    await h.fake.send_message(h.world.alice, thread, "three")
    await h.fal.wait_for(lambda: h.prompts()[-1] == "one\ntwo\nthree")
    h.fal.unhold()
    answer = await h.answer_in(thread, since=since, contains="echo:")
    assert answer.content.endswith("echo: one\ntwo\nthree")
    assert h.prompts()[0] == "hello" and h.prompts()[-1] == "one\ntwo\nthree"
    cancelled = [r for r in list(h.fal.requests.values())[1:-1]]
    assert cancelled and all(r.cancel_requested for r in cancelled)
    await h.app.bot.idle()
    answers = [m for m in h.fake.bot_messages(thread) if "echo: one" in m.content]
    assert len(answers) == 1  # one answer, nothing about the replaced attempts


# -- live config reload -------------------------------------------------------------------------


async def test_admin_reload_applies_a_valid_file_and_keeps_the_config_on_errors(
    harness: Harness,
) -> None:
    h = harness
    config_file = h.tmp_path / "config.toml"
    thread, _ = await h.converse(h.world.alice, "first")
    config_file.write_text(f'[access]\ndeny_users = ["{h.world.bob.id}"]\n')
    owner: Any = h.fake.owner
    h.fake.add_member(h.world.guild, owner)
    reloaded = await h.fake.invoke_command(owner, h.world.channel, "admin reload")
    response = await reloaded.wait_response()
    assert response.data is not None and "Config reloaded" in response.data["content"]
    since = h.fake.mark()
    await h.fake.send_message(h.world.bob, thread, "may I?")
    refusal = await h.fake.wait_for_message(thread, contains="Sorry", since=since)
    assert "not allowed" in refusal.content
    # an invalid file is reported and the running config kept
    config_file.write_text("[limits]\nmax_in_flight = 0\n")
    again = await h.fake.invoke_command(owner, h.world.channel, "admin reload")
    response = await again.wait_response()
    assert response.data is not None and "was not reloaded" in response.data["content"]
    assert "max_in_flight" in response.data["content"]
    assert h.app.config.access.deny_users == (str(h.world.bob.id),)
    # not the owner: refused
    denied = await h.fake.invoke_command(h.world.alice, h.world.channel, "admin reload")
    response = await denied.wait_response()
    assert response.data is not None and "Only the bot's owner" in response.data["content"]


async def test_retry_counts_against_the_quota(make_harness: HarnessFactory) -> None:
    h = await make_harness(SEED_BOT_LIMITS__USER_REQUESTS="2")
    thread, answer = await h.converse(h.world.alice, "first")
    [retry_id] = answer.custom_ids()
    since = h.fake.mark()
    await (await h.fake.press_button(h.world.alice, answer, retry_id)).wait_response()
    again = await h.fake.wait_for_message(thread, contains="echo: first", since=since)
    [retry_id] = again.custom_ids()
    pressed = await h.fake.press_button(h.world.alice, again, retry_id)
    response = await pressed.wait_response()
    assert response.ephemeral
    assert response.data is not None and "request limit" in response.data["content"]
    assert h.prompts() == ["first", "first"]
