"""A request's progress as fal reports it: the turn told only of changes (each new queue
position, then ``running`` once), fal's last sign of life, and the queue wait observed."""

from __future__ import annotations

import logging
import time

from bot.domain.models import Progress
from bot.domain.observer import CallObserver
from bot.domain.ports import ProgressCallback
from bot.fal import wire

log = logging.getLogger(__name__)


class ProgressReporter:
    """Calls back only on change: each new queue position, then ``running`` once."""

    def __init__(
        self, callback: ProgressCallback | None, request_id: str, observer: CallObserver
    ) -> None:
        self._callback = callback
        self._request_id = request_id
        self._observer = observer
        self._last: Progress | None = None
        self.started_at = time.monotonic()
        self.running_at: float | None = None  # when fal first said the request runs
        self.heard_at = self.started_at  # fal's last sign of life for this request

    def heard(self) -> None:
        """fal answered something about the request (a status, a stream keep-alive)."""
        self.heard_at = time.monotonic()

    @property
    def running(self) -> bool:
        """Whether fal has said the request is running."""
        return self._last is not None and self._last.state == "running"

    async def update(self, status: wire.QueueStatus) -> bool:
        """Report ``status`` if it changed anything; return whether it did."""
        self.heard()
        if status.state == "IN_QUEUE":
            progress = Progress("queued", status.queue_position)
        elif status.state == "IN_PROGRESS":
            progress = Progress("running")
        else:
            return False
        if progress == self._last:
            return False
        self._last = progress
        log.debug("fal %s: %s", self._request_id, progress)
        if progress.state == "running" and self.running_at is None:
            self.running_at = time.monotonic()
            self._observer.queue_waited(self.running_at - self.started_at)
        if self._callback is not None:
            await self._callback(progress)
        return True
