"""Submitting a turn's request to the model: the request id made durable at once, and one
rule for a submit whose fate is unknown, the same live and after a restart.

A submit has three possible fates as the bot sees it:

* fal answered with a request id: the id goes to the journal (one synchronous write, no
  await between fal's answer and it), then to the store. A crash in between loses nothing:
  the next start replays the journal into the store (``recover``) and waits on that id.
* the submit provably never reached fal (connection refused, an ingress 429/5xx): the
  client already retried it; a final failure fails the turn, nothing can have been billed.
* the connection failed after the body was sent (``ModelSubmitUnknown``), or a restart
  finds a turn whose submit had begun but got no answer: fal may have queued it, under an id
  the bot never learnt. The request is submitted once more, automatically (again if that
  one's fate is unknown too, up to ``MAX_RESUBMISSIONS``); each possible double charge is
  logged at WARNING and counted (``resubmissions``). Whichever request
  answers, the turn stores and delivers exactly one answer: the one whose id it stored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from bot.domain.errors import ModelError, ModelSubmitUnknown, StorageError
from bot.domain.models import ModelRequest, RequestHandle, TurnState
from bot.domain.ports import NOTHING_MORE, ModelClient, SubmittedWith, TurnStore

log = logging.getLogger(__name__)

# Unknown-fate resubmissions one turn may make: each is a possible double charge, and a
# connection failing that often after sending is better reported than paid for again.
MAX_RESUBMISSIONS = 3


class SubmissionJournal(Protocol):
    """A local, append-only record of submits under way, written synchronously (it must
    survive ``kill -9``, so each record is in the kernel before the method returns)."""

    def begin(self, turn_id: int) -> None:
        """The submit of ``turn_id`` is about to be sent."""
        ...

    def answered(self, turn_id: int, handle: RequestHandle) -> None:
        """fal answered the submit of ``turn_id`` with ``handle``."""
        ...

    def done(self, turn_id: int) -> None:
        """The submit of ``turn_id`` is settled: its id is stored, or it definitely failed."""
        ...

    def left_open(self) -> Mapping[int, RequestHandle | None]:
        """Submits a previous run began and did not settle: turn id → fal's handle when
        the answer had arrived, ``None`` when it had not."""
        ...

    def compact(self, keep: Mapping[int, RequestHandle | None]) -> None:
        """Forget the previous run's records except ``keep``."""
        ...


class Submitter:
    """Submits requests for stored turns and records fal's request ids (see the module)."""

    def __init__(
        self,
        model: ModelClient,
        turns: TurnStore,
        journal: SubmissionJournal | None = None,
    ) -> None:
        self._model = model
        self._turns = turns
        self._journal = journal
        # Turns whose submit a previous run began without getting fal's answer.
        self._unanswered: set[int] = set()
        self._recovered = False
        self.resubmissions = 0
        """Submits sent again because the fate of an earlier one was unknown: each a
        possible double charge (for the bench and metrics)."""

    async def recover(self) -> int:
        """At start-up, before unfinished turns are resumed: store the request ids the
        journal holds but the store may not, and note the submits left without an answer
        (they are sent again, as unknown-fate resubmissions). Only the first call does
        anything. Returns how many ids were restored."""
        if self._journal is None or self._recovered:
            return 0
        self._recovered = True
        restored = 0
        keep: dict[int, RequestHandle | None] = {}
        for turn_id, handle in self._journal.left_open().items():
            try:
                turn = await self._turns.get_turn(turn_id)
            except StorageError:
                continue  # not in this database (or gone): nothing to resume
            if turn.handle is not None:
                continue  # stored before the stop
            if handle is not None:
                await self._turns.record_submission(turn_id, handle)
                restored += 1
                log.info(
                    "turn %s: request %s restored from the submission journal",
                    turn_id,
                    handle.request_id,
                )
                if turn.state is not TurnState.PENDING:
                    # stopped or failed meanwhile: its answer would never be shown
                    await self._cancel_quietly(handle)
            elif turn.state is TurnState.PENDING:
                self._unanswered.add(turn_id)
                keep[turn_id] = None
        self._journal.compact(keep)
        return restored

    async def submit(
        self, turn_id: int, request: ModelRequest, also: SubmittedWith = NOTHING_MORE
    ) -> RequestHandle:
        """Queue ``request`` for turn ``turn_id`` and store fal's request id (with what
        ``also`` holds) in one write; returns it.

        Each unknown fate is answered by one more submit, at most ``MAX_RESUBMISSIONS`` for
        one turn (a turn whose previous run left its submit unanswered has used one)."""
        journal = self._journal
        causes: list[str] = []
        if turn_id in self._unanswered:
            self._unanswered.discard(turn_id)
            causes.append("its submit in the previous run got no answer before the bot stopped")
            self.resubmissions += 1
            log.warning("turn %s: %s; submitting it once more", turn_id, causes[-1])
        if journal is not None:
            journal.begin(turn_id)
        try:
            while True:
                try:
                    handle = await self._model.submit(request)
                    break
                except ModelSubmitUnknown as lost:
                    if len(causes) >= MAX_RESUBMISSIONS:
                        raise
                    causes.append(lost.message.rstrip("."))
                    self.resubmissions += 1
                    log.warning("turn %s: %s; submitting it once more", turn_id, causes[-1])
        except ModelError as exc:
            if journal is not None:
                journal.done(turn_id)
            if causes:
                log.warning("turn %s: its resubmission failed too: %s", turn_id, exc)
            raise
        if journal is not None:
            journal.answered(turn_id, handle)
        await self._turns.record_submission(turn_id, handle, also)
        if journal is not None:
            journal.done(turn_id)
        # Logged once the id is stored, never between fal's answer and the store.
        if causes:
            log.warning(
                "turn %s resubmitted as request %s after %d unknown submit fate(s) (%s): "
                "possible double charge, fal may also have queued the earlier submit(s), "
                "whose request id never arrived (unknown-fate resubmissions so far: %d)",
                turn_id,
                handle.request_id,
                len(causes),
                "; ".join(causes),
                self.resubmissions,
            )
        else:
            log.info("turn %s submitted as request %s", turn_id, handle.request_id)
        return handle

    async def _cancel_quietly(self, handle: RequestHandle) -> None:
        try:
            await self._model.cancel(handle)
        except ModelError as exc:
            log.warning("cancelling request %s failed: %s", handle.request_id, exc)
