"""The "waiting for the database" notice of one flow (a turn, a Retry, a resumed turn)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from bot.domain.errors import DeliveryError
from bot.domain.models import Progress
from bot.domain.outage import Outage
from bot.domain.ports import Delivery


@dataclass(eq=False)
class WaitNotice:
    """Shows "waiting for the database" on a flow's status message when one of its store
    calls starts waiting on an outage (once per outage). The store calls ``on_wait`` in the
    middle of its call, maybe under the delivery's own locks: the notice goes in a task."""

    outage: Outage
    tasks: set[asyncio.Task[None]]
    delivery: Delivery | None = None
    shown_for: int = 0

    def on_wait(self) -> None:
        if self.delivery is None or self.shown_for == self.outage.outages:
            return
        self.shown_for = self.outage.outages
        task = asyncio.create_task(self._show(self.delivery), name="database-wait-notice")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _show(delivery: Delivery) -> None:
        with contextlib.suppress(DeliveryError):
            await delivery.progress(Progress(state="database"))
