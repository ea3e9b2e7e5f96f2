"""Bursts: one person's messages in quick succession answered as one turn. A follow-up that
comes within the batch window, before the answer is stored, joins the burst: the attempt in
flight is stopped (as ``MERGED``) and the burst starts over with every message. (Messages
that wait behind an answer being produced are batched by the inbox, and handed over as one
burst too.)"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any

from bot.domain.models import Incoming
from bot.domain.preparation import PreparedFiles
from bot.domain.stopping import MERGED, StopResult

log = logging.getLogger(__name__)

# Messages merged into one turn, remembered so deleting any of them finds the turn (bounded:
# a burst older than that is found by its last message only).
MERGED_CACHE_SIZE = 4096


@dataclass(eq=False)
class Burst:
    """One person's messages being answered as one turn, which a follow-up may still join.
    ``closed`` once the answer is stored: from then on a follow-up is the next turn. It
    follows its turn's attempts as the runner's ``TurnWatch``."""

    author_id: str
    items: list[Incoming]
    last_arrival: float
    turn_id: int | None = None
    joined: bool = False
    closed: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # The stop of the attempt a follow-up replaces: its turn id and the stop. Follow-ups that
    # come while it is under way, or while that attempt winds down, share its outcome rather
    # than stop a turn already stopped (which would make them a turn of their own).
    replacing: tuple[int, asyncio.Task[StopResult]] | None = None
    # Its files, prepared once: starting over for a follow-up reuses them.
    files: PreparedFiles = field(default_factory=PreparedFiles)
    # One of its messages was deleted: its turn is stopped and not started over.
    withdrawn: bool = False

    def attempting(self, turn_id: int) -> None:
        self.turn_id = turn_id

    def stored(self) -> None:
        self.closed = True


class Bursts:
    """The bursts being answered, one per conversation at most."""

    def __init__(self, stop: Callable[[int, str], Coroutine[Any, Any, StopResult]]) -> None:
        self._stop = stop
        self._open: dict[str, Burst] = {}
        # Each message of a merged burst -> the messages of that burst (see withdraw).
        self._merged: OrderedDict[str, tuple[str, ...]] = OrderedDict()

    def begin(self, items: list[Incoming], now: float) -> Burst:
        """The burst of ``items`` (the first one's conversation), open to follow-ups."""
        first = items[0]
        burst = Burst(first.author_id, list(items), now)
        self._open[first.scope_id] = burst
        return burst

    def end(self, scope_id: str, burst: Burst) -> None:
        burst.closed = True
        if self._open.get(scope_id) is burst:
            del self._open[scope_id]
        burst.done.set()

    async def join(self, incoming: Incoming, window: float) -> bool:
        """Add ``incoming`` to its author's burst in flight, if there is one it may join;
        return once the burst is answered (True), or False to queue it as the next turn."""
        burst = self._open.get(incoming.scope_id)
        now = asyncio.get_running_loop().time()
        if (
            burst is None
            or burst.closed
            or burst.withdrawn
            or burst.author_id != incoming.author_id
            or now - burst.last_arrival > window
        ):
            return False
        burst.items.append(incoming)
        burst.last_arrival = now
        burst.joined = True
        turn_id = burst.turn_id
        if turn_id is not None:
            log.info("message %s joins turn %s: starting over", incoming.source_id, turn_id)
            if burst.replacing is None or burst.replacing[0] != turn_id:
                burst.replacing = (turn_id, asyncio.create_task(self._stop(turn_id, MERGED)))
            if await asyncio.shield(burst.replacing[1]) is not StopResult.STOPPED:
                # Its answer was stored (or it ended) first: this one is the next turn.
                burst.items.remove(incoming)
                return False
        await burst.done.wait()
        return True

    def remember_merged(self, burst: Burst) -> None:
        if len(burst.items) < 2:
            return
        together = tuple(i.source_id for i in burst.items)
        for source in together:
            self._merged[source] = together
            self._merged.move_to_end(source)
        while len(self._merged) > MERGED_CACHE_SIZE:
            self._merged.popitem(last=False)

    def merged_with(self, source_id: str) -> tuple[str, ...]:
        """The messages a burst merged ``source_id`` with (empty: none remembered)."""
        return self._merged.get(source_id, ())

    def containing(self, source_ids: Collection[str]) -> list[Burst]:
        return [b for b in self._open.values() if any(i.source_id in source_ids for i in b.items)]
