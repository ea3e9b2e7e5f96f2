"""Store workloads for the storage bench: ``record_submission`` latency while many turns
are in flight, and the store transactions one fast turn of the real service costs."""

from __future__ import annotations

import asyncio
import collections
import random
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import replace
from datetime import datetime

from bot.domain.access import AccessPolicy, Requester
from bot.domain.admission import admit
from bot.domain.costs import NO_COSTS, BudgetRules, Budgets, Pricing
from bot.domain.models import (
    Attachment,
    ChatMessage,
    Destination,
    Incoming,
    ModelReply,
    ModelRequest,
    NewConversation,
    NewTurn,
    Payer,
    Progress,
    RequestHandle,
    Turn,
)
from bot.domain.ports import OpenBody, ProgressCallback
from bot.domain.quotas import Quota, QuotaRules, Quotas
from bot.domain.service import ConversationService, ServiceConfig
from bot.storage import Repositories

HISTORY_TURNS = 10


def _exchange(n: int) -> list[ChatMessage]:
    return [
        ChatMessage(role="user", content=[{"type": "text", "text": f"question {n} " * 20}]),
        ChatMessage(role="assistant", content=f"answer {n} " * 150),
    ]


def _reply(n: int) -> ModelReply:
    return ModelReply(output=f"answer {n}", reasoning=None, messages=(), request_id=f"r{n}")


async def in_flight_submissions(
    store: Repositories,
    *,
    in_flight: int,
    turns_each: int,
    model_seconds: tuple[float, float],
    seed: int = 7,
) -> list[float]:
    """``in_flight`` conversations (each with some history) run ``turns_each`` turns each,
    all at once: begin_turn, record_submission, a "model" pause drawn uniformly from
    ``model_seconds``, complete_turn, record_delivery. Returns each record_submission's
    call -> commit time in ms."""
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:8]
    times: list[float] = []

    async def conversation(c: int) -> None:
        scope = f"{tag}-{c}"
        bind = NewConversation(scope_id=scope, owner_id="1")
        pauses = [rng.uniform(*model_seconds) for _ in range(turns_each)]
        for n in range(HISTORY_TURNS + turns_each):
            new = NewTurn(
                scope_id=scope,
                source_id=f"{scope}-{n}",
                author_id="1",
                author_name="bench",
                reply_channel_id=scope,
                prompt=f"question {n}",
            )
            start = await store.conversations.begin_turn(new, conversation=bind)
            turn_id = start.turn.id
            timed = n >= HISTORY_TURNS
            began = time.perf_counter()
            await store.turns.record_submission(turn_id, RequestHandle(request_id=f"{scope}-r{n}"))
            if timed:
                times.append((time.perf_counter() - began) * 1000)
                await asyncio.sleep(pauses[n - HISTORY_TURNS])
            await store.turns.complete_turn(turn_id, _reply(n), _exchange(n))
            await store.turns.record_delivery(turn_id, [str(900_000 + n)])

    await asyncio.gather(*(conversation(c) for c in range(in_flight)))
    return times


class _InstantModel:
    """fal answering at once (the service's ModelClient port)."""

    def __init__(self) -> None:
        self._count = 0

    async def submit(self, request: ModelRequest) -> RequestHandle:
        self._count += 1
        return RequestHandle(request_id=f"bench-{uuid.uuid4().hex}")

    async def wait(
        self,
        handle: RequestHandle,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
        sent: int | None = None,
    ) -> ModelReply:
        messages = (
            ChatMessage("user", "question"),
            ChatMessage("assistant", "answer"),
        )
        return ModelReply("answer", None, messages, handle.request_id)

    async def cancel(self, handle: RequestHandle) -> None:
        return None

    async def upload(self, data: bytes, *, content_type: str, file_name: str) -> str:
        raise AssertionError("no attachments in this bench")

    async def upload_stream(
        self, open_body: OpenBody, *, size: int, content_type: str, file_name: str
    ) -> str:
        raise AssertionError("no attachments in this bench")

    def handle_for(self, request_id: str) -> RequestHandle:
        return RequestHandle(request_id=request_id)


class _NoMedia:
    async def fetch(self, attachment: Attachment, max_bytes: int) -> bytes:
        raise AssertionError("no attachments in this bench")

    def stream(self, attachment: Attachment, max_bytes: int) -> AsyncGenerator[bytes, None]:
        raise AssertionError("no attachments in this bench")


class _Posted:
    """A delivery that posts nowhere (the service's Delivery and Deliveries ports); it
    records its posting through the store as the Discord delivery does."""

    def __init__(self, store: Repositories) -> None:
        self._store = store

    def open(self, destination: Destination) -> _Posted:
        return self

    async def start(self) -> None: ...

    def deadline(self) -> datetime | None:
        return None

    async def attach(self, turn: Turn) -> None: ...

    async def waiting(self, place: Callable[[], int | None]) -> None: ...

    async def running(self) -> None: ...

    async def progress(self, progress: Progress) -> None: ...

    async def stopped(self, turn: Turn, by: str) -> None: ...

    async def supersede(self, old: Turn) -> None: ...

    async def close(self) -> None: ...

    async def deliver(self, turn: Turn, reply: ModelReply, warnings: Sequence[str]) -> list[str]:
        await self._store.turns.record_delivery(turn.id, [str(turn.id)])
        return [str(turn.id)]

    async def fail(self, turn: Turn | None, error: Exception) -> list[str]:
        raise AssertionError(f"bench turn failed: {error}")


async def transactions_per_turn(store: Repositories) -> dict[str, int]:
    """Store transactions of one message answered by the real service: the first of a
    thread, a follow-up, and a follow-up with the default quotas on; then the same without
    and with cost tracking (no budget set, as shipped: the reservation is stored with the
    submission and settled with the answer, in their transactions)."""
    calls: collections.Counter[str] = collections.Counter()
    store.db.observers.append(lambda what, _write: calls.update([what]))
    config = ServiceConfig(batch_window=0)
    gate = Quotas(store.usage, QuotaRules(user=Quota(30, 3600), guild=Quota(500, 3600)))
    result: dict[str, int] = {}
    for costs_label, costs in (
        ("no costs", NO_COSTS),
        ("costs on", Budgets(store.costs, BudgetRules(), Pricing())),
    ):
        service = ConversationService(
            store.conversations,
            store.turns,
            store.settings,
            _InstantModel(),
            _NoMedia(),
            _Posted(store),
            config,
            costs=costs,
        )
        scope = f"tx-{uuid.uuid4().hex[:8]}"
        message = Incoming(
            source_id=f"{scope}-1", scope_id=scope, author_id="1", author_name="a", text="hi"
        )
        for label, source, quotas in (
            ("first in a thread", "1", False),
            ("follow-up", "2", False),
            ("follow-up, quotas on", "3", True),
        ):
            calls.clear()
            incoming = replace(message, source_id=f"{scope}-{source}", guild_id="g")
            admission = await admit(
                AccessPolicy(),
                Requester(incoming.author_id),
                Payer(incoming.author_id, incoming.guild_id),
                budgets=None,
                quotas=gate if quotas else None,
            )
            await service.respond(incoming, admission, batchable=False)
            result[f"{label} ({costs_label})"] = sum(calls.values())
    store.db.observers.clear()
    return result
