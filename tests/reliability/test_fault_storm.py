"""200 turns while fal fails 30% of its answers (ingress 5xx without a request id, connection
resets, 429s): every message ends answered or with a clear failure notice, and no message is
ever submitted to fal twice."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.chat.conftest import HarnessFactory
from tests.fakes.discord.events import Event, MessageCreated, MessageEdited, ThreadCreated
from tests.fakes.discord.models import FakeChannel, FakeMessage
from tests.fakes.fal import Fault
from tests.reliability.botproc import wait_until

TURNS = 200
# Each fault draws from the fake's seeded RNG: about 1 - 0.89**3 ≈ 30% of calls fail.
P = 0.11
NOTICES = (
    "⚠️ The model service is unavailable right now.",
    "⚠️ The model service is busy right now (rate limited).",
)


def prompt(index: int) -> str:
    return f"storm-{index:03d} go"


@pytest.mark.timeout(60)
async def test_every_turn_of_a_fault_storm_ends_answered_or_with_a_notice(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(
        SEED_BOT_LIMITS__USER_REQUESTS="0",
        SEED_BOT_LIMITS__GUILD_REQUESTS="0",
        SEED_BOT_LIMITS__MAX_IN_FLIGHT="32",
    )
    fake, fal = h.fake, h.fal
    fal.concurrency = 64
    for fault in (Fault.ingress(502), Fault.reset(), Fault.rate_limited()):
        fault.route, fault.times, fault.probability = None, None, P
        fal.add_fault(fault)
    users = []
    for index in range(TURNS):
        user = fake.create_user(f"storm{index:03d}")
        fake.add_member(h.world.guild, user)
        users.append(user)
    await fake.sync_gateway()

    # The bot's messages by id, as they are now (a status message is edited into the answer).
    latest: dict[int, FakeMessage] = {}

    def track(event: Event) -> None:
        if isinstance(event, MessageCreated) and event.by_bot:
            latest[event.message.id] = event.message
        elif isinstance(event, MessageEdited) and event.by_bot:
            latest[event.after.id] = event.after

    def outcomes(thread: FakeChannel) -> list[str]:
        return [
            m.content
            for m in latest.values()
            if m.channel_id == thread.id and ("echo: storm-" in m.content or "⚠️" in m.content)
        ]

    # Each mention opens a thread of its own: 200 independent turns. (Messages in one
    # thread would be batched into fewer turns while an answer is produced.)
    started = time.monotonic()
    since = fake.mark()
    mentions = [await h.mention(users[i], prompt(i)) for i in range(TURNS)]
    await fake.wait_for(
        lambda _e: len(fake.events_of(ThreadCreated, since=since)) == TURNS, timeout=30
    )
    by_message = {
        e.from_message_id: e.thread_id for e in fake.events_of(ThreadCreated, since=since)
    }
    threads = [fake.channels[by_message[m.id]] for m in mentions]

    seen = 0

    def all_settled() -> bool:
        nonlocal seen
        for event in fake.events[seen:]:
            track(event)
        seen = len(fake.events)
        return all(outcomes(thread) for thread in threads)

    await wait_until(fake, all_settled, timeout=45)
    await h.stop()  # waits for nothing more: every turn has its outcome
    elapsed = time.monotonic() - started
    all_settled()

    answered = failed = 0
    for index, thread in enumerate(threads):
        results = outcomes(thread)
        assert len(results) == 1, (index, results)
        if "⚠️" in results[0]:
            assert results[0].startswith(NOTICES), results
            failed += 1
        else:
            assert results == [f"echo: {prompt(index)}"]
            answered += 1
        # nothing left saying "Thinking…" or "waiting in queue"
        leftovers = [
            m.content
            for m in latest.values()
            if m.channel_id == thread.id
            and ("Thinking…" in m.content or "waiting in queue" in m.content.lower())
        ]
        assert leftovers == []
    submitted = Counter(r.input["prompt"] for r in fal.requests.values())
    duplicates = {p: n for p, n in submitted.items() if n > 1}
    assert duplicates == {}
    faults = sum(f.hits for f in fal.faults)
    print(
        f"{answered} answered, {failed} failure notices, {faults} faults injected over "
        f"{len(fal.calls)} fal calls, in {elapsed:.1f}s"
    )
    assert answered + failed == TURNS
    assert answered > TURNS // 2  # retries carried most turns through
    assert faults > len(fal.calls) // 5  # the storm did blow
