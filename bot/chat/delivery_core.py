"""What delivering one turn is on every surface, written once: the status text (fal's
progress, or the turn's place while it waits for a slot), the status timer, the throttled
status edit, the posting loop over the answer's parts (skipping those an interrupted run
posted, recording each as it goes, the answer's button on the last) and the refusal turned
into ``DeliveryError``. A surface (a channel or thread: bot/chat/delivery.py; an
interaction: bot/chat/interaction_delivery.py) supplies only what differs: how a status
is shown, how one part is posted, what a refusal means and whom to tell.

A third surface is one new module with a subclass of :class:`DeliveryCore`, a branch in
the router (``Deliveries.open`` in bot/chat/interaction_delivery.py), where the router is
built (bot/app.py) and, if it has buttons of its own, their views (bot/chat/bot.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import discord

from bot.chat import texts
from bot.domain.errors import DeliveryError, SeedBotError
from bot.domain.models import Progress, Turn
from bot.domain.ports import DeliveryRecorder

log = logging.getLogger(__name__)

# Progress edits of a throttled status: at most one per this many seconds (the latest text
# wins), so a request moving through the queue does not flood Discord or flicker.
STATUS_EDIT_INTERVAL = 1.5
STATUS_DELAY = 2.0

ViewFor = Callable[[int], discord.ui.View]
Part = discord.Message | discord.PartialMessage


async def record(hook: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
    """Store what was posted, best effort: the post stands even if the database does not
    take it now (a restart then leans on what was recorded before, and on nonces)."""
    try:
        await hook(*args)
    except SeedBotError as exc:
        log.warning("could not record a posted message: %s", exc)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One part of an answer (or notice) to post: ``kwargs`` hold its mentions and view,
    ``files`` go with the first part only."""

    turn: Turn | None
    index: int
    content: str
    kwargs: dict[str, Any]
    files: Sequence[tuple[str, bytes]]
    answer: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    """Discord refused a part: why, in words, and how far the answer got."""

    exc: discord.HTTPException
    why: str
    turn: Turn | None
    posted: int
    total: int


class DeliveryCore(ABC):
    """The shared half of a ``Delivery``: state and steps every surface has. Subclasses
    implement :meth:`_show_status` (post or edit the status to :meth:`_current_text`),
    :meth:`_send_part`, :meth:`_why_refused` and :meth:`_explain`."""

    #: Whether a part re-sent after a crash cannot show twice (a nonce Discord enforces):
    #: then the last part needs no record of its own, the delivery's record follows.
    parts_idempotent = False

    def __init__(
        self, *, recorder: DeliveryRecorder, answer_view: ViewFor, status_delay: float
    ) -> None:
        self._recorder = recorder
        self._answer_view = answer_view
        self._status_delay = status_delay
        self._turn: Turn | None = None
        self._status_text = texts.status_running()
        # Set while the turn waits for an in-flight slot: its place in line, when asked.
        self._place: Callable[[], int | None] | None = None
        self._lock = asyncio.Lock()  # one status post or edit at a time, none after the answer
        self._done = asyncio.Event()  # the answer (or its failure) is being posted
        self._tasks: list[asyncio.Task[None]] = []
        self._last_edit = -STATUS_EDIT_INTERVAL
        self._edit_pending: asyncio.Task[None] | None = None

    # -- status ------------------------------------------------------------------------------

    def _current_text(self) -> str:
        if self._place is not None:
            return texts.status_waiting(self._place())
        return self._status_text

    def _note_progress(self, progress: Progress) -> None:
        """The status text for fal's progress (shown by the surface when it shows one)."""
        if progress.state == "queued":
            self._status_text = texts.status_queued(progress.queue_position)
        elif progress.state == "database":
            self._status_text = texts.STATUS_DATABASE
        else:
            self._status_text = texts.status_running()

    def _start_status_timer(self) -> None:
        """Show the status once ``status_delay`` passes without an answer."""
        if not self._tasks:
            self._tasks.append(
                asyncio.create_task(self._unless_done(self._status_delay), name="status")
            )

    async def _unless_done(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._done.wait()
            return  # the answer is here: it replaces the status anyway
        await self._show_status()

    def _edit_soon(self) -> None:
        """Show the latest status text now, or once the interval since the last edit has
        passed (one edit pending at a time, carrying the newest text)."""
        if self._edit_pending is not None and not self._edit_pending.done():
            return
        loop = asyncio.get_running_loop()
        wait = self._last_edit + STATUS_EDIT_INTERVAL - loop.time()
        self._edit_pending = asyncio.create_task(self._unless_done(max(0.0, wait)))

    def _edited(self) -> None:
        """A status was just posted or edited: the throttle counts from now."""
        self._last_edit = asyncio.get_running_loop().time()

    @abstractmethod
    async def _show_status(self) -> None:
        """Post the status, or bring it up to :meth:`_current_text`."""

    async def close(self) -> None:
        self._done.set()
        if self._edit_pending is not None:
            self._tasks.append(self._edit_pending)
            self._edit_pending = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, discord.HTTPException):
                await task
        self._tasks.clear()

    # -- the answer --------------------------------------------------------------------------

    async def fail(self, turn: Turn | None, error: Exception) -> list[str]:
        self._check_usable()
        return await self._post(turn, [texts.turn_error_text(turn, error)], [], answer=False)

    async def stopped(self, turn: Turn, by: str) -> None:
        self._check_usable()
        await self._post(turn, [texts.stopped_by(by)], [], answer=False)

    def _check_usable(self) -> None:
        """Raise ``DeliveryError`` when nothing can be posted here any more."""
        return

    async def _post(
        self,
        turn: Turn | None,
        contents: Sequence[str],
        files: Sequence[tuple[str, bytes]],
        *,
        answer: bool,
        done: Sequence[str] = (),
    ) -> list[str]:
        """Post the parts in order: the files go with the first, the answer's button (for
        an ``answer`` of a stored turn) with the last, and the first drops the status's Stop
        button where it replaces the status. ``done`` holds the ids of parts already posted
        (by an earlier, interrupted run): those are skipped. Each part posted is recorded
        as it goes, and the whole answer once out. A refusal is explained, then raised as
        ``DeliveryError``. Returns the message ids."""
        async with self._lock:
            self._done.set()
            replaces_status = self._take_status()
        await self.close()
        ids = list(done[: len(contents)])
        try:
            for index in range(len(ids), len(contents)):
                first, last = index == 0, index == len(contents) - 1
                kwargs: dict[str, Any] = {"allowed_mentions": texts.NO_MENTIONS}
                if last and answer and turn is not None:
                    kwargs["view"] = self._answer_view(turn.id)
                elif first and replaces_status:
                    kwargs["view"] = None  # the Stop button goes with the status
                message = await self._send_part(
                    Outgoing(turn, index, contents[index], kwargs, files if first else (), answer)
                )
                ids.append(str(message.id))
                if answer and turn is not None and not (last and self.parts_idempotent):
                    # A restart from here on continues after what was seen.
                    await record(self._recorder.record_reply_parts, turn.id, list(ids))
        except discord.HTTPException as exc:
            why = self._why_refused(exc)
            await self._explain(Refusal(exc, why, turn, len(ids), len(contents)))
            raise DeliveryError(why) from exc
        finally:
            await self._posted()
        if answer and turn is not None and ids:
            await record(self._recorder.record_delivery, turn.id, ids)
        return ids

    @abstractmethod
    def _take_status(self) -> bool:
        """The answer is coming (called under the status lock): whether its first part
        replaces a status (which the surface then hands to :meth:`_send_part`)."""

    @abstractmethod
    async def _send_part(self, part: Outgoing) -> Part:
        """Post one part."""

    @abstractmethod
    def _why_refused(self, exc: discord.HTTPException) -> str:
        """What Discord's refusal means, in words an operator (and a user) can act on."""

    @abstractmethod
    async def _explain(self, refusal: Refusal) -> None:
        """Say why the answer stopped (the log; and whoever can still be told)."""

    async def _posted(self) -> None:
        """The posting is over, answered or refused."""
        return
