"""Bursts: the messages one person sent in quick succession become one turn. This module is
the one mechanism that does it, per conversation, through the conversation's *line*:

- the flows of one conversation are handled one at a time, in arrival order (a ``Redone``
  or a ``Resume`` is a turn of its own);
- a message becomes a :class:`Burst` when the line takes it up; a follow-up of its author
  that comes within the batch window, before the answer is stored, *joins* it: the attempt
  in flight is stopped (as ``MERGED``) and the burst starts over with every message,
  reusing the files already prepared;
- the messages of one author waiting in the line behind a turn in progress go in together,
  as one burst (which later follow-ups may join in turn).

Nothing waits on a timer: an idle conversation's message is taken up at once, and an idle
conversation keeps no state here. The service only calls it (intake stays there)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any

from bot.domain.flows import Flow, Redone, Resume
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

    @property
    def first(self) -> Incoming:
        """The message it started with (the answer replies to it)."""
        return self.items[0]

    def attempting(self, turn_id: int) -> None:
        self.turn_id = turn_id

    def stored(self) -> None:
        self.closed = True


# What the line hands over, one at a time per conversation.
Work = Burst | Redone | Resume


@dataclass(eq=False)
class _Waiting:
    """A flow waiting in its conversation's line: ``batch_key`` groups consecutive ones into
    one burst (``None``: never grouped)."""

    flow: Flow
    batch_key: str | None
    future: asyncio.Future[None] = field(repr=False)


@dataclass(eq=False)
class _Line:
    """One conversation's line: what waits, whether a caller is working it off, and the
    burst being answered (open to follow-ups)."""

    waiting: deque[_Waiting] = field(default_factory=deque)
    busy: bool = False
    burst: Burst | None = None


class Bursts:
    """The conversations' lines: runs ``handler`` on each conversation's work, one at a time.

    The caller whose flow finds a conversation idle becomes its worker and works the line
    off; the others wait until their flow is handled (the handler's exception, if any, is
    raised to each of them); a follow-up that joins a burst waits until the burst is
    answered."""

    def __init__(
        self,
        handler: Callable[[Work], Awaitable[None]],
        stop: Callable[[int, str], Coroutine[Any, Any, StopResult]],
    ) -> None:
        self._handler = handler
        self._stop = stop
        self._lines: dict[str, _Line] = {}
        # Each message of a merged burst -> the messages of that burst (see withdraw).
        self._merged: OrderedDict[str, tuple[str, ...]] = OrderedDict()

    # -- the ways in ---------------------------------------------------------------------------

    async def take(self, incoming: Incoming, window: float) -> None:
        """A person's message: it joins its author's burst being answered, if it may (within
        ``window`` seconds of their previous message, before the answer is stored), or it
        waits in the line, grouped with its author's messages waiting next to it. With no
        ``window`` (0) it neither joins nor is grouped. Returns once it is answered. It is
        in the line (or the burst) before this first suspends."""
        merging = window > 0
        if merging and await self._join(incoming, window):
            return
        await self.queue(incoming.scope_id, incoming, incoming.author_id if merging else None)

    async def queue(self, scope_id: str, flow: Flow, batch_key: str | None = None) -> None:
        """Put ``flow`` in the line of conversation ``scope_id``; return once it is handled
        (a message: as part of a burst)."""
        loop = asyncio.get_running_loop()
        line = self._lines.setdefault(scope_id, _Line())
        waiting = _Waiting(flow, batch_key, loop.create_future())
        line.waiting.append(waiting)
        if line.busy:
            return await waiting.future
        line.busy = True
        batch: list[_Waiting] = []
        try:
            while line.waiting:
                batch = self._next_batch(line)
                if not batch:
                    continue
                try:
                    await self._work(line, [w.flow for w in batch])
                except Exception as exc:
                    for w in batch:
                        if not w.future.done():
                            w.future.set_exception(exc)
                    continue
                for w in batch:
                    if not w.future.done():
                        w.future.set_result(None)
        finally:
            line.busy = False
            # Unresolved futures remain only when the worker itself was cancelled (shutdown).
            for w in [*batch, *line.waiting]:
                if not w.future.done():
                    w.future.cancel()
            line.waiting.clear()
            if self._lines.get(scope_id) is line:
                del self._lines[scope_id]
        if not waiting.future.done():
            waiting.future.cancel()
        return await waiting.future

    # -- the line ------------------------------------------------------------------------------

    async def _work(self, line: _Line, flows: list[Flow]) -> None:
        first = flows[0]
        if not isinstance(first, Incoming):
            await self._handler(first)
            return
        now = asyncio.get_running_loop().time()
        burst = Burst(first.author_id, [f for f in flows if isinstance(f, Incoming)], now)
        line.burst = burst
        try:
            await self._handler(burst)
        finally:
            self.end(burst)

    def _next_batch(self, line: _Line) -> list[_Waiting]:
        run = self._head_run(line)
        for _ in run:
            line.waiting.popleft()
        return [w for w in run if not w.future.cancelled()]

    @staticmethod
    def _head_run(line: _Line) -> list[_Waiting]:
        first = line.waiting[0]
        if first.batch_key is None:
            return [first]
        run = []
        for waiting in line.waiting:
            if waiting.batch_key != first.batch_key:
                break
            run.append(waiting)
        return run

    # -- the burst being answered ----------------------------------------------------------------

    def end(self, burst: Burst) -> None:
        """The burst is over (answered, failed or withdrawn): a follow-up from now on is the
        next turn, and the follow-ups that joined it return. The handler ends it before it
        lets go of the delivery; the line ends it anyway once the handler returns."""
        burst.closed = True
        line = self._lines.get(burst.first.scope_id)
        if line is not None and line.burst is burst:
            line.burst = None
        burst.done.set()

    async def _join(self, incoming: Incoming, window: float) -> bool:
        """Add ``incoming`` to its author's burst in flight, if there is one it may join;
        return once the burst is answered (True), or False to queue it as the next turn."""
        line = self._lines.get(incoming.scope_id)
        burst = line.burst if line is not None else None
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
        """The bursts being answered that hold one of ``source_ids``."""
        return [
            line.burst
            for line in self._lines.values()
            if line.burst is not None and any(i.source_id in source_ids for i in line.burst.items)
        ]
