"""The transaction helper: transactions per turn (counted through its observer hook), the
priority lane for storing fal's request id, and the bounded cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.cache import Lru
from bot.domain.costs import NO_COSTS, TurnCosts
from bot.domain.models import (
    Attachment,
    Conversation,
    Destination,
    Incoming,
    ModelReply,
    Progress,
    RequestHandle,
    Turn,
    TurnState,
)
from bot.domain.ports import ModelClient
from bot.domain.service import ConversationService, ServiceConfig
from bot.storage import Repositories
from bot.storage.conversations import SqlConversations
from bot.storage.database import _Gate
from tests.tickets import ticket

from .conftest import begin, new_turn


async def one_pass() -> None:
    """One pass of the event loop: tasks created before this run to their first suspension
    (a deterministic yield, not a timed wait)."""
    await asyncio.sleep(0)


class RecordingDelivery:
    """A delivery that records what it was given (the service's Delivery port), and records
    its posting through the store as the Discord delivery does."""

    def __init__(self, store: Repositories) -> None:
        self.store = store
        self.delivered: list[tuple[int, str]] = []
        self.failures: list[Exception] = []

    def open(self, destination: Destination) -> RecordingDelivery:
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
        self.delivered.append((turn.id, reply.output))
        await self.store.turns.record_delivery(turn.id, [f"9{turn.id}"])
        return [f"9{turn.id}"]

    async def fail(self, turn: Turn | None, error: Exception) -> list[str]:
        self.failures.append(error)
        return []


class NoMedia:
    async def fetch(self, attachment: Attachment, max_bytes: int) -> bytes:
        raise AssertionError("no attachments here")

    def stream(self, attachment: Attachment, max_bytes: int) -> AsyncGenerator[bytes, None]:
        raise AssertionError("no attachments here")


def instant_service(
    store: Repositories,
    model: ModelClient,
    delivery: RecordingDelivery | None = None,
    *,
    costs: TurnCosts = NO_COSTS,
) -> ConversationService:
    """The service on the store's ports: no attachments, no batching wait."""
    return ConversationService(
        store.conversations,
        store.turns,
        store.settings,
        model,
        NoMedia(),
        delivery or RecordingDelivery(store),
        ServiceConfig(batch_window=0),
        costs=costs,
    )


async def test_a_fast_turn_costs_four_transactions(
    store: Repositories, fal_model_client: ModelClient
) -> None:
    names: list[str] = []
    store.db.observers.append(lambda what, _write: names.append(what))
    delivery = RecordingDelivery(store)
    service = instant_service(store, fal_model_client, delivery)

    for n, text_ in enumerate(["first, opening the thread", "a follow-up"]):
        names.clear()
        incoming = Incoming(
            source_id=f"130000000000000000{n}",
            scope_id="1200000000000000777",
            author_id="1100000000000000001",
            author_name="Ada",
            text=text_,
            guild_id="1000000000000000001",
            parent_channel_id="1000000000000000002",
        )
        await service.respond(incoming, await ticket(), batchable=False)
        assert names == ["begin_turn", "record_submission", "complete_turn", "record_delivery"]
    assert not delivery.failures
    assert len(delivery.delivered) == 2
    conversation = await store.conversations.conversation_for_scope("1200000000000000777")
    assert conversation is not None
    latest = await store.turns.latest_turn(conversation.scope_id)
    assert latest is not None and latest.state is TurnState.DELIVERED
    assert len(await store.conversations.history(conversation.id, 0)) == 4


async def test_the_gate_serves_priority_first_and_keeps_a_reserve() -> None:
    gate = _Gate(2, reserved=1)
    order: list[str] = []
    await gate.acquire(False)  # the one ordinary place

    async def holder(name: str, priority: bool) -> None:
        await gate.acquire(priority)
        order.append(name)

    ordinary = [asyncio.create_task(holder(f"o{i}", False)) for i in range(2)]
    await one_pass()  # they queue
    assert order == []
    # The reserved place goes to a priority holder at once, although ordinary ones wait.
    await holder("p1", True)
    assert order == ["p1"]
    # A second priority holder waits, and is served before the ordinary ones queued earlier.
    second = asyncio.create_task(holder("p2", True))
    await one_pass()
    gate.release()
    await second
    assert order == ["p1", "p2"]
    # p2 leaves: the reserved place stays free of ordinary holders.
    gate.release()
    await one_pass()
    assert order == ["p1", "p2"]
    # The first ordinary holder leaves: the queued ones follow in their order, one at a time.
    gate.release()
    await ordinary[0]
    assert order == ["p1", "p2", "o0"]
    gate.release()
    await ordinary[1]
    assert order == ["p1", "p2", "o0", "o1"]


async def test_a_cancelled_waiter_gives_its_place_on() -> None:
    gate = _Gate(1)
    await gate.acquire(False)
    waiting = asyncio.create_task(gate.acquire(False))
    after = asyncio.create_task(gate.acquire(True))
    await one_pass()
    waiting.cancel()
    gate.release()
    await after  # not stuck behind the cancelled one
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_record_submission_overtakes_queued_writes_on_sqlite(
    backend: str, store: Repositories, conversation: Conversation
) -> None:
    if backend != "sqlite":
        pytest.skip("the writer lock is SQLite's; PostgreSQL reserves a connection instead")
    turn = await begin(store, new_turn(conversation, "1"))
    order: list[str] = []
    release = asyncio.Event()
    holding = asyncio.Event()

    async def hold(conn: AsyncConnection) -> None:
        holding.set()
        await release.wait()

    holder = asyncio.create_task(store.db.run("hold", hold, write=True))
    await holding.wait()

    async def ordinary(n: int) -> None:
        await store.turns.record_status_message(turn.id, str(n))
        order.append(f"status {n}")

    async def submission() -> None:
        await store.turns.record_submission(turn.id, RequestHandle("r"))
        order.append("submission")

    queued = [asyncio.create_task(ordinary(n)) for n in range(3)]
    await one_pass()
    submitted = asyncio.create_task(submission())
    await one_pass()
    release.set()
    await asyncio.gather(holder, submitted, *queued)
    assert order[0] == "submission"
    assert sorted(order[1:]) == ["status 0", "status 1", "status 2"]


def test_the_cache_is_bounded() -> None:
    cache: Lru[int, str] = Lru(2)
    cache.put(1, "a")
    cache.put(2, "b")
    assert cache.get(1) == "a"  # 1 is now the most recent
    cache.put(3, "c")
    assert (cache.get(2), cache.get(1), cache.get(3)) == (None, "a", "c")
    assert len(cache) == 2
    with pytest.raises(ValueError, match="at least 1"):
        Lru(0)


async def test_a_restarted_store_reads_where_a_conversation_lives(
    store: Repositories, conversation: Conversation
) -> None:
    turn = await begin(store, new_turn(conversation, "1"))
    warm = await store.conversations.turn_context(turn)
    cold = SqlConversations(store.db, places_cached=1)  # knows no conversation yet
    assert await cold.turn_context(turn) == warm
