"""Stop: a turn's running state in this process, and stopping it wherever it runs. The turn
runner registers each turn it runs here; ``stop`` marks a turn stopped in the store, and a
turn running here cancels its own fal request at whichever step it is."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from bot.domain.errors import ModelError, StorageError
from bot.domain.models import ModelReply, RequestHandle, Turn
from bot.domain.ports import ModelClient, TurnStore

log = logging.getLogger(__name__)

STOP_CANCEL_SECONDS = 5.0
# Who "stops" a turn that a follow-up of the same person replaces (never shown to anyone).
# It is stored as the turn's error, and read back when the stop raced the answer: longer than
# any Discord name (32 characters at most), so no name can be taken for it, and printable,
# since stored text never carries a NUL (PostgreSQL refuses one).
MERGED = "(replaced by a follow-up of the same person's burst)"
# Who "stops" a turn whose Discord message was deleted (see ConversationService.withdraw).
MESSAGE_DELETED = "message deleted"


class TurnStopped(Exception):
    """Internal: the turn was stopped while it ran (not an error to report). ``reply``: the
    answer fal had given by the time the stop won (to the wait, or to the cancel of a
    request that had already completed): fal billed it, so the turn costs what it reports."""

    def __init__(self, by: str, reply: ModelReply | None = None) -> None:
        super().__init__(by)
        self.by = by
        self.reply = reply


class StopResult(enum.Enum):
    STOPPED = "stopped"
    ALREADY_FINISHED = "finished"
    UNKNOWN = "unknown"


@dataclass(eq=False)
class Active:
    """A turn running in this process: how to stop it, and when it has ended."""

    source_id: str
    stopped_by: str | None = None
    waiter: asyncio.Future[ModelReply] | None = None
    # Takes the turn out of the line for an in-flight slot, while it waits in it.
    leave_line: Callable[[], None] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def in_line(self, leave: Callable[[], None]) -> None:
        """The turn waits for a slot: a stop takes it out of the line with ``leave``."""
        self.leave_line = leave

    def check(self) -> None:
        """Raise ``TurnStopped`` if a stop was requested (read afresh after every await)."""
        if self.stopped_by is not None:
            raise TurnStopped(self.stopped_by)


class Stops:
    """The turns running in this process, and Stop for any turn."""

    def __init__(self, turns: TurnStore, model: ModelClient) -> None:
        self._turns = turns
        self._model = model
        self._active: dict[int, Active] = {}

    def running(self, turn: Turn) -> Active:
        """Register ``turn`` as running here (until :meth:`ended`)."""
        return self._active.setdefault(turn.id, Active(turn.source_id))

    def ended(self, turn_id: int, active: Active) -> None:
        self._active.pop(turn_id, None)
        active.ended.set()

    def running_from(self, sources: Collection[str]) -> list[tuple[int, Active]]:
        """The turns running here for any of the messages ``sources``."""
        return [(t, a) for t, a in self._active.items() if a.source_id in sources]

    async def stop(self, turn_id: int, by: str) -> StopResult:
        """Stop a turn: it is marked stopped, its fal request cancelled, and an answer that
        arrives anyway is never stored or posted. Works on a turn running in another process
        or left over from before a restart too (through the stored state: then the request
        is cancelled here, within ``STOP_CANCEL_SECONDS``)."""
        try:
            turn = await self._turns.get_turn(turn_id)
        except StorageError:
            return StopResult.UNKNOWN
        if not await self._turns.stop_turn(turn_id, by):
            return StopResult.ALREADY_FINISHED
        log.info("turn %s stopped on request", turn_id)
        active = self._active.get(turn_id)
        if active is not None:
            # Running here: the turn's own task cancels its fal request, whichever step it
            # is at (its request id may be on its way to the store right now).
            active.stopped_by = by
            if active.leave_line is not None:
                active.leave_line()  # waiting for a slot: it gives up its place at once
            if active.waiter is not None:
                active.waiter.cancel()
        elif turn.handle is not None:
            # Bounded: the person pressing Stop is waiting for the answer to that.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_CANCEL_SECONDS):
                    await self.cancel_quietly(turn.handle)
        return StopResult.STOPPED

    async def cancel_quietly(self, handle: RequestHandle) -> ModelReply | None:
        """Cancel at fal; the answer of a request that had already completed, if any."""
        try:
            return await self._model.cancel(handle)
        except ModelError as exc:
            log.warning("cancelling request %s failed: %s", handle.request_id, exc)
            return None
