"""The in-flight cap's line (bot/domain/slots.py): first come, first served; each waiter
knows its place; a waiter that gives up leaves no slot taken."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from bot.domain.slots import Slots, Withdrawn


class Turns:
    """Turns taking slots: each notes when it waits (with its place) and when it runs, and
    holds its slot until released."""

    def __init__(self, slots: Slots) -> None:
        self.slots = slots
        self.places: dict[str, Callable[[], int | None]] = {}
        self.waits: dict[str, asyncio.Event] = {}
        self.runs: dict[str, asyncio.Event] = {}
        self.order: list[str] = []
        self.release = asyncio.Event()
        self.leave: dict[str, Callable[[], None]] = {}

    def start(self, name: str) -> asyncio.Task[None]:
        self.waits[name], self.runs[name] = asyncio.Event(), asyncio.Event()
        return asyncio.create_task(self._turn(name))

    async def _turn(self, name: str) -> None:
        async def on_wait(place: Callable[[], int | None]) -> None:
            self.places[name] = place
            self.waits[name].set()

        def in_line(leave: Callable[[], None]) -> None:
            self.leave[name] = leave

        async with self.slots.hold(on_wait, in_line=in_line):
            self.order.append(name)
            self.runs[name].set()
            await self.release.wait()


async def test_waiters_are_admitted_in_order_and_know_their_place() -> None:
    turns = Turns(Slots(1))
    first = turns.start("a")
    await turns.runs["a"].wait()
    others = [turns.start(n) for n in "bcd"]
    for name in "bcd":
        await turns.waits[name].wait()
    assert not turns.waits["a"].is_set()  # a free slot: no waiting
    assert [turns.places[n]() for n in "bcd"] == [1, 2, 3]
    assert (turns.slots.held, turns.slots.waiting) == (1, 3)
    others[0].cancel()  # "b" gives up
    await asyncio.gather(others[0], return_exceptions=True)
    assert [turns.places[n]() for n in "bcd"] == [None, 1, 2]
    turns.release.set()
    await asyncio.gather(first, *others[1:])
    assert turns.order == ["a", "c", "d"]
    assert (turns.slots.held, turns.slots.waiting) == (0, 0)


async def test_a_larger_cap_admits_waiters_at_once() -> None:
    turns = Turns(Slots(1))
    holding = turns.start("a")
    await turns.runs["a"].wait()
    waiting = turns.start("b")
    await turns.waits["b"].wait()
    turns.slots.resize(2)
    await turns.runs["b"].wait()  # while "a" still holds its slot
    assert turns.places["b"]() is None
    turns.release.set()
    await asyncio.gather(holding, waiting)
    assert turns.slots.held == 0


async def test_a_waiter_taken_out_of_the_line_leaves_it_at_once() -> None:
    turns = Turns(Slots(1))
    first = turns.start("a")
    await turns.runs["a"].wait()
    others = [turns.start(n) for n in "bc"]
    for name in "bc":
        await turns.waits[name].wait()
    turns.leave["b"]()  # a Stop: no wait for the task to run
    assert [turns.places[n]() for n in "bc"] == [None, 1]
    assert turns.slots.waiting == 1
    with pytest.raises(Withdrawn):
        await others[0]
    turns.release.set()
    await asyncio.gather(first, others[1])
    assert turns.order == ["a", "c"]
    assert (turns.slots.held, turns.slots.waiting) == (0, 0)
