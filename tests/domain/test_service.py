"""The turn orchestration on its own: the real service over a real SQLite store, the real fal
client against the fake fal, a media source serving bytes, and a delivery that records what
it was asked to do (the one edge here that is not real: Discord)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bot.domain.attachments import AttachmentPolicy
from bot.domain.errors import AttachmentError, DeliveryError
from bot.domain.flows import Redo
from bot.domain.models import (
    Attachment,
    Destination,
    Incoming,
    ModelReply,
    Progress,
    Turn,
    TurnState,
)
from bot.domain.service import (
    ConversationService,
    ServiceConfig,
)
from bot.domain.stopping import MESSAGE_DELETED, StopResult
from bot.fal import FalClient
from bot.storage import Repositories, create_engine, sql_repositories
from bot.storage.migrate import upgrade
from tests.fakes.fal import Failure, FakeFal, echo_responder
from tests.tickets import ticket

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@dataclass
class RecordingDelivery:
    """Records the service's calls, in order; records the answer through the store as the
    Discord delivery does."""

    destination: Destination
    store: Repositories
    calls: list[tuple[str, Any]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self.calls.append(("start", None))

    def deadline(self) -> datetime | None:
        return None

    async def attach(self, turn: Turn) -> None:
        self.calls.append(("attach", turn.id))

    async def waiting(self, place: Callable[[], int | None]) -> None:
        self.calls.append(("waiting", place()))

    async def running(self) -> None:
        self.calls.append(("running", None))

    async def progress(self, progress: Progress) -> None:
        self.calls.append(("progress", progress.state))

    async def stopped(self, turn: Turn, by: str) -> None:
        self.calls.append(("stopped", by))

    async def supersede(self, old: Turn) -> None:
        self.calls.append(("supersede", old.id))

    async def close(self) -> None:
        self.calls.append(("close", None))
        self.done.set()

    async def deliver(self, turn: Turn, reply: ModelReply, warnings: Sequence[str]) -> list[str]:
        self.calls.append(("deliver", (reply.output, tuple(warnings))))
        await self.store.turns.record_delivery(turn.id, [f"m{turn.id}"])
        return [f"m{turn.id}"]

    async def fail(self, turn: Turn | None, error: Exception) -> list[str]:
        self.calls.append(("fail", type(error).__name__))
        return []

    def named(self, name: str) -> list[Any]:
        return [value for call, value in self.calls if call == name]


@dataclass
class RecordingDeliveries:
    store: Repositories
    opened: list[RecordingDelivery] = field(default_factory=list)

    def open(self, destination: Destination) -> RecordingDelivery:
        delivery = RecordingDelivery(destination, self.store)
        self.opened.append(delivery)
        return delivery


class Files:
    """A media source serving fixed bytes by attachment id (Discord's CDN, here)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    async def fetch(self, attachment: Attachment, max_bytes: int) -> bytes:
        if attachment.id not in self.files:
            raise AttachmentError(attachment.filename, "Discord no longer serves it")
        return self.files[attachment.id]

    async def stream(self, attachment: Attachment, max_bytes: int) -> AsyncGenerator[bytes, None]:
        yield await self.fetch(attachment, max_bytes)


@dataclass
class World:
    service: ConversationService
    store: Repositories
    deliveries: RecordingDeliveries
    fal: FakeFal


@pytest.fixture
async def world(
    tmp_path: Path, fake_fal: FakeFal, fal_model_client: FalClient
) -> AsyncIterator[World]:
    url = f"sqlite+aiosqlite:///{tmp_path}/bot.db"
    await upgrade(url)
    engine = create_engine(url)
    store = sql_repositories(engine)
    deliveries = RecordingDeliveries(store)
    files = Files({"a1": PNG, "a2": PNG, "a3": PNG})
    config = ServiceConfig(attachments=AttachmentPolicy(), batch_window=0.0, turn_timeout=10)
    service = ConversationService(
        store.conversations,
        store.turns,
        store.settings,
        fal_model_client,
        files,
        deliveries,
        config,
    )
    try:
        yield World(service, store, deliveries, fake_fal)
    finally:
        await service.settle()
        await engine.dispose()


def message(
    n: int, text: str, *, author: str = "1", name: str = "Alice", files: Sequence[str] = ()
) -> Incoming:
    return Incoming(
        source_id=str(1000 + n),
        scope_id="42",
        author_id=author,
        author_name=name,
        text=text,
        attachments=tuple(
            Attachment(f, f"{f}.png", "image/png", len(PNG), f"https://cdn/{f}") for f in files
        ),
        guild_id="7",
        parent_channel_id="8",
        reply_to=str(1000 + n),
    )


async def states(world: World) -> list[TurnState]:
    turn = await world.store.turns.latest_turn("42")
    assert turn is not None
    return [turn.state]


async def test_a_message_is_answered_and_each_step_stored(world: World) -> None:
    await world.service.respond(message(1, "hello"), await ticket(), batchable=False)
    [delivery] = world.deliveries.opened
    assert delivery.destination == Destination("42", "1001")
    assert [c for c, _ in delivery.calls][:2] == ["start", "attach"]
    assert delivery.named("deliver") == [("echo: hello", ())]
    assert delivery.calls[-1][0] == "close"
    assert await states(world) == [TurnState.DELIVERED]


async def test_a_duplicate_message_is_answered_once(world: World) -> None:
    await world.service.respond(message(1, "hello"), await ticket(), batchable=False)
    await world.service.respond(message(1, "hello"), await ticket(), batchable=False)
    assert len(world.fal.requests) == 1
    assert [d.named("deliver") for d in world.deliveries.opened] == [[("echo: hello", ())], []]


async def test_a_burst_of_one_persons_messages_is_one_turn(world: World) -> None:
    world.service.reconfigure(ServiceConfig(batch_window=0.2, turn_timeout=10))
    await asyncio.gather(
        world.service.respond(message(1, "one"), await ticket()),
        world.service.respond(message(2, "two"), await ticket()),
        world.service.respond(message(3, "three"), await ticket()),
    )
    [request] = world.fal.requests.values()
    assert request.input["prompt"] == "one\ntwo\nthree"
    [delivery] = world.deliveries.opened
    assert delivery.destination.reply_to == "1001"  # the burst's first message


async def test_a_follow_up_stops_the_queued_request_and_the_burst_starts_over(
    world: World,
) -> None:
    world.service.reconfigure(ServiceConfig(batch_window=5.0, turn_timeout=10))
    world.fal.hold()
    first = asyncio.create_task(world.service.respond(message(1, "one"), await ticket()))
    [queued] = await world.fal.wait_for_submissions(1)
    await world.fal.wait_for_calls("stream", 1)  # its request id is stored
    second = asyncio.create_task(world.service.respond(message(2, "two"), await ticket()))
    await world.fal.wait_for(lambda: world.fal.requests[queued].cancel_requested)
    world.fal.unhold()
    await asyncio.gather(first, second)
    prompts = [r.input["prompt"] for r in world.fal.requests.values()]
    assert prompts == ["one", "one\ntwo"]
    [delivery] = world.deliveries.opened
    assert delivery.named("deliver") == [("echo: one\ntwo", ())]
    assert delivery.named("stopped") == []  # nobody is told about the replaced attempt
    latest = await world.store.turns.latest_turn("42")
    assert latest is not None and latest.source_id == "1002"
    assert latest.state is TurnState.DELIVERED


class SlowWindDown:
    """No costs, but a stopped turn's settling waits for ``release``: the time an attempt
    a follow-up replaced takes to wind down (a database round trip, longer on PostgreSQL)."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def reserve(self, turn_id: int, payer: Any, **_: int) -> None:
        return None

    def settlement(self, outcome: object) -> None:
        return None

    def settled(self, turn_id: int, cost: object) -> None:
        return None

    async def settle(self, turn_id: int, outcome: object) -> None:
        if outcome is None:
            self.entered.set()
            await self.release.wait()


async def test_a_follow_up_while_the_replaced_attempt_winds_down_joins_the_burst(
    world: World,
) -> None:
    """A third message that comes while the attempt the second one stopped is still winding
    down joins the restart; it is not left over as a turn of its own."""
    world.service.reconfigure(ServiceConfig(batch_window=5.0, turn_timeout=10))
    wind_down = SlowWindDown()
    world.service.runner.costs = wind_down
    world.fal.hold()
    first = asyncio.create_task(world.service.respond(message(1, "one"), await ticket()))
    await world.fal.wait_for_submissions(1)
    await world.fal.wait_for_calls("stream", 1)
    second = asyncio.create_task(world.service.respond(message(2, "two"), await ticket()))
    await wind_down.entered.wait()
    # It starts (and joins) before the replaced attempt is let go: tasks run in order.
    third = asyncio.create_task(world.service.respond(message(3, "three"), await ticket()))
    wind_down.release.set()
    world.fal.unhold()
    await asyncio.gather(first, second, third)
    prompts = [r.input["prompt"] for r in world.fal.requests.values()]
    assert prompts == ["one", "one\ntwo\nthree"]
    [delivery] = world.deliveries.opened
    assert delivery.named("deliver") == [("echo: one\ntwo\nthree", ())]


async def test_a_follow_up_after_the_answer_is_stored_is_the_next_turn(world: World) -> None:
    world.service.reconfigure(ServiceConfig(batch_window=5.0, turn_timeout=10))
    await world.service.respond(message(1, "one"), await ticket())
    await world.service.respond(message(2, "two"), await ticket())
    assert [r.input["prompt"] for r in world.fal.requests.values()] == ["one", "two"]


async def test_without_a_window_nothing_is_merged(world: World) -> None:
    world.fal.hold()
    first = asyncio.create_task(world.service.respond(message(1, "one"), await ticket()))
    await world.fal.wait_for_submissions(1)
    second = asyncio.create_task(world.service.respond(message(2, "two"), await ticket()))
    third = asyncio.create_task(world.service.respond(message(3, "three"), await ticket()))
    world.fal.unhold()
    await asyncio.gather(first, second, third)
    assert [r.input["prompt"] for r in world.fal.requests.values()] == ["one", "two", "three"]


async def test_retry_supersedes_the_old_answer(world: World) -> None:
    await world.service.respond(message(1, "hello"), await ticket(), batchable=False)
    old = await world.store.turns.latest_turn("42")
    assert old is not None
    await world.service.redo(Redo("42", turn_id=old.id), await ticket())
    again = world.deliveries.opened[-1]
    assert again.named("supersede") == [old.id]
    assert again.named("deliver") == [("echo: hello", ())]
    latest = await world.store.turns.latest_turn("42")
    assert latest is not None and latest.attempt == 1 and latest.id != old.id
    assert (await world.store.turns.get_turn(old.id)).state is TurnState.SUPERSEDED


async def test_redo_of_a_turn_that_is_no_longer_the_latest_does_nothing(world: World) -> None:
    await world.service.respond(message(1, "first"), await ticket(), batchable=False)
    first = await world.store.turns.latest_turn("42")
    await world.service.respond(message(2, "second"), await ticket(), batchable=False)
    assert first is not None
    await world.service.redo(Redo("42", turn_id=first.id), await ticket())
    assert len(world.deliveries.opened) == 2
    assert len(world.fal.requests) == 2


async def test_a_refused_attachment_is_left_out_and_the_turn_goes_on(world: World) -> None:
    def responder(args: dict[str, Any]) -> Any:
        urls = args.get("image_urls", [])
        if len(urls) == 3:
            return Failure.validation(
                [{"loc": ["body", "image_urls", 1], "msg": "Corrupt image.", "type": "x"}]
            )
        return echo_responder(args)

    world.fal.responder = responder
    await world.service.respond(
        message(1, "pictures", files=["a1", "a2", "a3"]), await ticket(), batchable=False
    )
    [delivery] = world.deliveries.opened
    [(output, warnings)] = delivery.named("deliver")
    assert output == "echo: pictures"
    assert warnings == ("`a2.png` could not be used: Corrupt image",)
    first, second = world.fal.requests.values()
    assert len(first.input["image_urls"]) == 3 and len(second.input["image_urls"]) == 2
    latest = await world.store.turns.latest_turn("42")
    assert latest is not None and latest.image_names == ("a1.png", "a3.png")


async def test_an_attachment_that_cannot_be_had_is_named_and_the_rest_goes(world: World) -> None:
    await world.service.respond(
        message(1, "look", files=["a1", "gone"]), await ticket(), batchable=False
    )
    [(_, warnings)] = world.deliveries.opened[0].named("deliver")
    assert warnings == ("`gone.png` could not be used: Discord no longer serves it",)
    [request] = world.fal.requests.values()
    assert len(request.input["image_urls"]) == 1


async def test_stop_while_waiting_stops_and_posts_nothing(world: World) -> None:
    world.fal.hold()
    task = asyncio.create_task(
        world.service.respond(message(1, "slow"), await ticket(), batchable=False)
    )
    await world.fal.wait_for_submissions(1)
    turn = await world.store.turns.latest_turn("42")
    assert turn is not None
    # the wait on the status stream begins once the request id is stored
    await world.fal.wait_for_calls("stream", 1)
    assert (await world.store.turns.get_turn(turn.id)).handle is not None
    assert await world.service.stop(turn.id, "Alice") is StopResult.STOPPED
    await task
    [delivery] = world.deliveries.opened
    assert delivery.named("stopped") == ["Alice"]
    assert delivery.named("deliver") == []
    assert (await world.store.turns.get_turn(turn.id)).state is TurnState.STOPPED


async def test_an_unfinished_turn_is_resumed_by_its_request_id(world: World) -> None:
    world.fal.hold()
    task = asyncio.create_task(
        world.service.respond(message(1, "survive"), await ticket(), batchable=False)
    )
    [request_id] = await world.fal.wait_for_submissions(1)
    turn = await world.store.turns.latest_turn("42")
    assert turn is not None
    await world.fal.wait_for_calls("stream", 1)  # the request id is stored by now
    task.cancel()  # a shutdown: the turn stays submitted
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await world.store.turns.get_turn(turn.id)).state is TurnState.SUBMITTED
    world.fal.unhold()
    spawned: list[asyncio.Task[None]] = []
    count = await world.service.resume_unfinished(
        lambda coro: spawned.append(asyncio.create_task(coro))
    )
    assert count == 1
    await asyncio.gather(*spawned)
    assert list(world.fal.requests) == [request_id]  # waited for, not submitted again
    assert world.deliveries.opened[-1].named("deliver") == [("echo: survive", ())]
    assert (await world.store.turns.get_turn(turn.id)).state is TurnState.DELIVERED


async def test_a_restart_resumes_only_the_conversations_this_process_owns(world: World) -> None:
    """Several processes on one database: each resumes its own shards' turns only."""
    world.fal.hold()
    tasks = [
        asyncio.create_task(
            world.service.respond(
                replace(message(n, f"in {scope}"), scope_id=scope, guild_id=guild),
                await ticket(),
                batchable=False,
            )
        )
        for n, (scope, guild) in enumerate((("41", "g-mine"), ("43", "g-theirs")), start=1)
    ]
    await world.fal.wait_for_calls("stream", 2)  # both request ids are stored
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    world.fal.unhold()
    spawned: list[asyncio.Task[None]] = []
    count = await world.service.resume_unfinished(
        lambda coro: spawned.append(asyncio.create_task(coro)),
        owns=lambda conversation: conversation.guild_id == "g-mine",
    )
    assert count == 1
    await asyncio.gather(*spawned)
    delivered = [d.named("deliver") for d in world.deliveries.opened[2:]]
    assert delivered == [[("echo: in 41", ())]]
    left = await world.store.turns.latest_turn("43")
    assert left is not None and left.state is TurnState.SUBMITTED  # left to its owner


class HeldFiles(Files):
    """Files whose download waits until released: a turn held while it is prepared."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(files)
        self.fetching = asyncio.Event()
        self.release = asyncio.Event()

    async def fetch(self, attachment: Attachment, max_bytes: int) -> bytes:
        self.fetching.set()
        await self.release.wait()
        return await super().fetch(attachment, max_bytes)


async def test_a_message_deleted_while_its_turn_is_prepared_is_not_sent(
    world: World, fal_model_client: FalClient
) -> None:
    files = HeldFiles({"a1": PNG})
    service = ConversationService(
        world.store.conversations,
        world.store.turns,
        world.store.settings,
        fal_model_client,
        files,
        world.deliveries,
        ServiceConfig(batch_window=5.0, turn_timeout=10),
    )
    answering = asyncio.create_task(
        service.respond(message(1, "deleted soon", files=["a1"]), await ticket())
    )
    await files.fetching.wait()
    # withdraw waits for the turn's flow to end, which waits on the download
    withdrawing = asyncio.create_task(service.withdraw({"1001"}))
    files.release.set()
    assert await withdrawing == {"1001"}
    await answering
    assert world.fal.requests == {}
    [delivery] = world.deliveries.opened
    assert delivery.named("stopped") == [MESSAGE_DELETED]
    turn = await world.store.turns.latest_turn("42")
    assert turn is not None and turn.state is TurnState.STOPPED


async def test_a_follow_up_after_a_retry_without_refused_attachments_supersedes_that_retry(
    world: World,
) -> None:
    """A burst's attempt fal refused an attachment of is replaced by a try without it (the
    runner's next attempt); a follow-up that then joins the burst stops that try, and the
    restart supersedes it, as it supersedes any attempt it replaces: not the first one,
    superseded already, leaving the try it stopped behind as a stopped turn."""

    def responder(args: dict[str, Any]) -> Any:
        if len(args.get("image_urls", [])) == 3:
            return Failure.validation(
                [{"loc": ["body", "image_urls", 1], "msg": "Corrupt image.", "type": "x"}]
            )
        return echo_responder(args)

    world.fal.responder = responder
    world.service.reconfigure(ServiceConfig(batch_window=5.0, turn_timeout=10))
    world.fal.hold()
    first = asyncio.create_task(
        world.service.respond(message(1, "pictures", files=["a1", "a2", "a3"]), await ticket())
    )
    [refused] = await world.fal.wait_for_submissions(1)
    await world.fal.release(refused)  # fal refuses a2: the runner tries again without it
    [_, retried] = await world.fal.wait_for_submissions(2)
    await world.fal.wait_for_calls("stream", 2)  # the retry's request id is stored
    [retry] = [t for t in await world.store.turns.unfinished_turns() if t.attempt == 1]
    assert len(retry.image_urls) == 2
    second = asyncio.create_task(world.service.respond(message(2, "two"), await ticket()))
    await world.fal.wait_for(lambda: world.fal.requests[retried].cancel_requested)
    world.fal.unhold()
    await asyncio.gather(first, second)
    [delivery] = world.deliveries.opened
    assert [output for output, _ in delivery.named("deliver")] == ["echo: pictures\ntwo"]
    assert (await world.store.turns.get_turn(retry.id)).state is TurnState.SUPERSEDED


async def test_a_burst_whose_delivery_cannot_start_takes_no_follow_up_with_it(
    world: World,
) -> None:
    """A burst that ends before its turn is stored (its delivery cannot even start) is over:
    a follow-up of the same person is the next turn, not a message waiting on it forever."""
    world.service.reconfigure(ServiceConfig(batch_window=5.0, turn_timeout=10))
    opened = world.deliveries.open

    def failing_first(destination: Destination) -> RecordingDelivery:
        delivery = opened(destination)
        if len(world.deliveries.opened) == 1:

            async def start() -> None:
                raise DeliveryError("the interaction expired")

            delivery.start = start  # type: ignore[method-assign]
        return delivery

    world.deliveries.open = failing_first  # type: ignore[method-assign]
    with pytest.raises(DeliveryError):
        await world.service.respond(message(1, "one"), await ticket())
    async with asyncio.timeout(5):
        await world.service.respond(message(2, "two"), await ticket())
    assert [r.input["prompt"] for r in world.fal.requests.values()] == ["two"]
