"""What the service and the fal client tell an observer (the metrics) as turns and calls
happen. Passed by constructor; ``NO_OBSERVER`` does nothing. No label carries message
content, a user name or a secret: only outcomes, kinds, statuses and durations."""

from __future__ import annotations

from typing import Literal, Protocol

RefusalReason = Literal["quota", "budget", "access"]


class TurnObserver(Protocol):
    def turn_started(self, conversation_id: int) -> None:
        """A stored turn begins to run (it is in flight until ``turn_ended``)."""
        ...

    def turn_answered(self, *, seconds: float, delivery_seconds: float) -> None:
        """The answer is posted: ``seconds`` since the message was taken up, of which
        ``delivery_seconds`` were spent posting it on Discord."""
        ...

    def turn_failed(self, error: Exception) -> None: ...

    def turn_stopped(self) -> None: ...

    def turn_refused(self, reason: RefusalReason) -> None: ...

    def turn_ended(self) -> None:
        """The turn is no longer in flight, whatever became of it."""
        ...


class CallObserver(Protocol):
    def fal_call(self, kind: str, status: str) -> None:
        """One HTTP call to fal finished: ``kind`` is the operation (submit, status,
        result, cancel, upload…), ``status`` the HTTP status or ``error``."""
        ...

    def retry(self, kind: str) -> None:
        """A call (``kind``: fal's operation, or ``database``) is being tried again."""
        ...

    def queue_waited(self, seconds: float) -> None:
        """A request waited this long in fal's queue before it ran."""
        ...

    def ran(self, seconds: float) -> None:
        """A request waited for ran this long at fal (from when fal said it runs, or from
        the start of the wait if it never did) until its answer came."""
        ...


class _NoObserver:
    def turn_started(self, conversation_id: int) -> None:
        pass

    def turn_answered(self, *, seconds: float, delivery_seconds: float) -> None:
        pass

    def turn_failed(self, error: Exception) -> None:
        pass

    def turn_stopped(self) -> None:
        pass

    def turn_refused(self, reason: RefusalReason) -> None:
        pass

    def turn_ended(self) -> None:
        pass

    def fal_call(self, kind: str, status: str) -> None:
        pass

    def retry(self, kind: str) -> None:
        pass

    def queue_waited(self, seconds: float) -> None:
        pass

    def ran(self, seconds: float) -> None:
        pass


NO_OBSERVER = _NoObserver()
