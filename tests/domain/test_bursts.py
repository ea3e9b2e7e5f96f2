"""A conversation's line (bot/domain/bursts.py): arrival order, one turn at a time, the
messages of one author waiting together become one burst, a follow-up joins the burst being
answered."""

from __future__ import annotations

import asyncio

import pytest

from bot.domain.bursts import Burst, Bursts, Work
from bot.domain.flows import Resume
from bot.domain.models import Incoming
from bot.domain.stopping import StopResult

WINDOW = 60.0  # wide enough that no follow-up here comes too late to join


def message(scope: str, text: str, author: str = "alice") -> Incoming:
    return Incoming(
        source_id=f"{scope}-{text}",
        scope_id=scope,
        author_id=author,
        author_name=author,
        text=text,
    )


async def never_stopped(turn_id: int, by: str) -> StopResult:
    raise AssertionError("no turn runs here")


class Handler:
    """Records each burst's texts; a burst waits for ``release`` when it is given one. With
    ``answered`` its answer counts as stored at once: follow-ups then wait in the line."""

    def __init__(self, *, answered: bool = True) -> None:
        self.batches: list[list[str]] = []
        self.bursts: list[Burst] = []
        self.running = 0
        self.most_at_once = 0
        self.release: asyncio.Event | None = None
        self.answered = answered
        self.started = asyncio.Event()
        self.two_at_once = asyncio.Event()

    async def __call__(self, work: Work) -> None:
        assert isinstance(work, Burst)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        if self.running == 2:
            self.two_at_once.set()
        self.bursts.append(work)
        self.batches.append([i.text for i in work.items])
        if self.answered:
            work.stored()
        self.started.set()
        try:
            if self.release is not None:
                await self.release.wait()
            if any(i.text == "boom" for i in work.items):
                raise ValueError("boom")
        finally:
            self.running -= 1


async def test_items_of_one_key_run_one_batch_at_a_time_in_arrival_order() -> None:
    handler = Handler()
    bursts = Bursts(handler, never_stopped)
    handler.release = asyncio.Event()
    first = asyncio.create_task(bursts.take(message("a", "1"), 0))
    await handler.started.wait()
    rest = [asyncio.create_task(bursts.take(message("a", str(i)), 0)) for i in (2, 3)]
    await asyncio.sleep(0)  # one loop pass: the new tasks run up to their first await
    handler.release.set()
    await asyncio.gather(first, *rest)
    assert handler.batches == [["1"], ["2"], ["3"]]
    assert handler.most_at_once == 1


async def test_waiting_items_of_one_author_become_one_batch() -> None:
    handler = Handler()
    bursts = Bursts(handler, never_stopped)
    handler.release = asyncio.Event()
    first = asyncio.create_task(bursts.take(message("a", "q1"), WINDOW))
    await handler.started.wait()
    later = [
        asyncio.create_task(bursts.take(message("a", text, author), WINDOW))
        for text, author in (("q2", "alice"), ("q3", "alice"), ("b1", "bob"), ("q4", "alice"))
    ]
    await asyncio.sleep(0)  # one loop pass: the new tasks run up to their first await
    handler.release.set()
    await asyncio.gather(first, *later)
    assert handler.batches == [["q1"], ["q2", "q3"], ["b1"], ["q4"]]


async def test_a_follow_up_joins_the_burst_being_answered() -> None:
    handler = Handler(answered=False)
    bursts = Bursts(handler, never_stopped)
    handler.release = asyncio.Event()
    first = asyncio.create_task(bursts.take(message("a", "q1"), WINDOW))
    await handler.started.wait()
    follow_up = asyncio.create_task(bursts.take(message("a", "q2"), WINDOW))
    await asyncio.sleep(0)  # one loop pass: the follow-up joins before its first await
    handler.release.set()
    await asyncio.gather(first, follow_up)
    assert handler.batches == [["q1"]]  # one turn ...
    assert [i.text for i in handler.bursts[0].items] == ["q1", "q2"]  # ... of both


async def test_flows_other_than_messages_are_turns_of_their_own() -> None:
    handled: list[Work] = []

    async def handler(work: Work) -> None:
        handled.append(work)

    bursts = Bursts(handler, never_stopped)
    resume = Resume(turn=object())  # type: ignore[arg-type]
    await bursts.queue("a", resume)
    assert handled == [resume]


async def test_different_keys_run_concurrently() -> None:
    handler = Handler()
    bursts = Bursts(handler, never_stopped)
    handler.release = asyncio.Event()
    tasks = [asyncio.create_task(bursts.take(message(key, key), 0)) for key in ("a", "b")]
    await handler.two_at_once.wait()  # both started without waiting for each other
    handler.release.set()
    await asyncio.gather(*tasks)
    assert handler.most_at_once == 2


async def test_a_failing_batch_raises_to_its_callers_and_the_line_goes_on() -> None:
    handler = Handler()
    bursts = Bursts(handler, never_stopped)
    with pytest.raises(ValueError, match="boom"):
        await bursts.take(message("a", "boom"), 0)
    await bursts.take(message("a", "fine"), 0)
    assert handler.batches == [["boom"], ["fine"]]


async def test_an_idle_line_keeps_nothing() -> None:
    handler = Handler(answered=False)
    bursts = Bursts(handler, never_stopped)
    await bursts.take(message("a", "x"), WINDOW)
    assert bursts._lines == {}
    assert handler.bursts[0].closed and handler.bursts[0].done.is_set()
