"""Turn costs on SQLite and PostgreSQL: reservations hold budgets, settling replaces them,
lapsed reservations count nothing, reports group by server, user and day."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from bot.domain.costs import (
    RESERVATION_TTL,
    Budget,
    BudgetRules,
    Budgets,
    Pricing,
    SpendFilter,
    Spending,
    budgets_for,
)
from bot.domain.errors import BudgetExceeded
from bot.domain.flows import Redo
from bot.domain.models import (
    Cost,
    Incoming,
    ModelReply,
    NewConversation,
    NewTurn,
    Payer,
    RequestHandle,
    Reservation,
    Settlement,
    Turn,
    TurnState,
)
from bot.domain.ports import ModelClient, SubmittedWith
from bot.domain.service import ConversationService
from bot.storage import Repositories
from bot.storage.costs import StoredCost
from tests.fakes.fal import FakeFal, Fault, billable_units
from tests.storage.test_transactions import instant_service
from tests.tickets import ticket

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ALICE, BOB, GUILD = "1100000000000000001", "1100000000000000002", "1000000000000000001"


def held(turn_id: int, usd: float, *, user: str = ALICE, at: datetime = NOW) -> Reservation:
    return Reservation(turn_id, Payer(user, GUILD, "1200000000000000001"), 100, 1000, usd, at)


def fixed(usd: float, _input_tokens: int) -> Cost:
    return Cost(int(usd * 1000), usd, False)


def server_daily(limit: float) -> list[Budget]:
    return budgets_for(BudgetRules(guild_daily_usd=limit), Payer(ALICE, GUILD), NOW)


async def test_a_reservation_that_does_not_fit_is_refused_and_stores_nothing(
    store: Repositories,
) -> None:
    budgets = server_daily(1.0)
    assert await store.costs.reserve(held(1, 0.6), budgets, now=NOW) is None
    refused = await store.costs.reserve(held(2, 0.6, user=BOB), budgets, now=NOW)
    assert refused == budgets[0]
    assert await store.costs.turn_cost(2) is None
    assert await store.costs.spent(budgets, now=NOW) == [0.6]


async def test_settling_replaces_the_worst_case_with_the_cost(store: Repositories) -> None:
    budgets = server_daily(1.0)
    await store.costs.reserve(held(1, 0.6), budgets, now=NOW)
    cost = await store.costs.settle(
        1, Settlement(estimate=lambda input_tokens: Cost(input_tokens, 0.1, False))
    )
    assert cost == Cost(100, 0.1, False)
    assert await store.costs.settle(1, Settlement(reported=Cost(1, 1.0, True))) is None  # once only
    stored = await store.costs.turn_cost(1)
    assert stored is not None and stored.settled and stored.units == 100
    # the freed 0.5 is there for the next turn
    assert await store.costs.reserve(held(2, 0.9, user=BOB), budgets, now=NOW) is None


async def test_a_lapsed_reservation_counts_nothing(store: Repositories) -> None:
    budgets = server_daily(1.0)
    early = NOW - RESERVATION_TTL - timedelta(minutes=1)
    await store.costs.reserve(held(1, 0.9, at=early), [], now=early)
    assert await store.costs.spent(budgets, now=NOW) == [0.0]


async def test_reserving_a_turn_again_holds_it_once(store: Repositories) -> None:
    budgets = server_daily(1.0)
    await store.costs.reserve(held(1, 0.6), budgets, now=NOW)
    assert await store.costs.reserve(held(1, 0.6), budgets, now=NOW) is None
    assert await store.costs.spent(budgets, now=NOW) == [0.6]


async def test_concurrent_reservations_never_exceed_the_budget(
    store: Repositories, other_store: Repositories
) -> None:
    budgets = server_daily(1.0)
    stores = [store, other_store]
    results = await asyncio.gather(
        *(
            stores[n % 2].costs.reserve(held(n, 0.15, user=f"11{n:018d}"), budgets, now=NOW)
            for n in range(20)
        )
    )
    assert sum(r is None for r in results) == 6
    [spent] = await store.costs.spent(budgets, now=NOW)
    assert spent <= 1.0


async def test_reports_group_settled_costs_by_server_user_and_day(store: Repositories) -> None:
    costs = store.costs
    yesterday = NOW - timedelta(days=1)
    for turn_id, user, at, usd in [
        (1, ALICE, yesterday, 0.25),
        (2, ALICE, NOW, 0.5),
        (3, BOB, NOW, 0.125),
    ]:
        await costs.reserve(held(turn_id, 1.0, user=user, at=at), [], now=at)
        await costs.settle(turn_id, Settlement(estimate=partial(fixed, usd)))
    await costs.reserve(held(4, 1.0, user=BOB), [], now=NOW)  # still running: not reported

    by_user = await costs.report(since=None, until=None, by="user")
    assert by_user == [(ALICE, Spending(2, 750, 0.75)), (BOB, Spending(1, 125, 0.125))]
    by_day = await costs.report(since=None, until=None, by="day")
    assert by_day == [
        ("2026-11-30", Spending(1, 250, 0.25)),
        ("2026-12-01", Spending(2, 625, 0.625)),
    ]
    by_guild = await costs.report(since=NOW, until=None, by="guild")
    assert by_guild == [(GUILD, Spending(2, 625, 0.625))]
    assert await costs.spending(SpendFilter(user_id=ALICE), since=NOW, until=None) == Spending(
        1, 500, 0.5
    )
    assert await costs.top_users(GUILD, since=yesterday, until=NOW + timedelta(1), limit=1) == [
        (ALICE, Spending(2, 750, 0.75))
    ]


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        # As shipped (no budget): held with the submission, settled with the answer.
        (BudgetRules(), ["begin_turn", "record_submission", "complete_turn", "record_delivery"]),
        # A budget is checked and held before the submit, in a transaction of its own.
        (
            BudgetRules(user_daily_usd=1.0),
            ["begin_turn", "reserve_cost", "record_submission", "complete_turn", "record_delivery"],
        ),
    ],
    ids=["no budget", "a budget"],
)
async def test_a_fast_turn_with_its_cost_tracked_costs_four_transactions_five_with_a_budget(
    store: Repositories, fal_model_client: ModelClient, rules: BudgetRules, expected: list[str]
) -> None:
    names: list[str] = []
    store.db.observers.append(lambda what, _write: names.append(what))
    budgets = Budgets(store.costs, rules, Pricing())
    service = instant_service(store, fal_model_client, costs=budgets)
    incoming = Incoming(
        source_id="1300000000000000001",
        scope_id="1200000000000000777",
        author_id=ALICE,
        author_name="Ada",
        text="what does it cost?",
        guild_id=GUILD,
    )
    await service.respond(incoming, await ticket(), batchable=False)
    assert names == expected
    turn = await store.turns.turn_for_source(incoming.source_id)
    assert turn is not None and turn.state is TurnState.DELIVERED
    cost = await store.costs.turn_cost(turn.id)
    assert cost is not None and cost.settled and not cost.estimated


async def test_a_reservation_stored_with_the_submission_replaces_an_earlier_one(
    store: Repositories,
) -> None:
    """Without a budget the reservation goes with fal's request id; a turn submitted again
    (a restart before its request id was stored) holds one reservation, the newest."""
    turn_id = await a_turn(store, "1300000000000000001")
    first, second = held(turn_id, 0.5), held(turn_id, 0.25)
    await store.turns.record_submission(
        turn_id, RequestHandle("req-1"), SubmittedWith(reservation=first)
    )
    await store.turns.record_submission(
        turn_id, RequestHandle("req-2"), SubmittedWith(reservation=second)
    )
    assert await store.costs.turn_cost(turn_id) == StoredCost(1000, 0.25, True, False, 100)
    budgets = server_daily(1.0)
    assert await store.costs.spent(budgets, now=NOW) == [0.25]


async def a_turn(store: Repositories, source_id: str) -> int:
    scope = "1200000000000000001"
    await store.conversations.create_conversation(
        NewConversation(scope_id=scope, owner_id=ALICE, guild_id=GUILD)
    )
    new = NewTurn(
        scope_id=scope,
        source_id=source_id,
        author_id=ALICE,
        author_name="Ada",
        reply_channel_id=scope,
        prompt="hi",
    )
    return (await store.conversations.begin_turn(new)).turn.id


async def test_a_turn_that_reached_fal_without_a_reservation_is_settled_by_a_row(
    store: Repositories,
) -> None:
    """Its request id restored from the journal (a kill between fal's answer and the commit
    that would have held the reservation): the answer's settlement makes its row; a turn
    that never reached fal gets none."""
    turn_id = await a_turn(store, "1300000000000000001")
    await store.turns.record_submission(turn_id, RequestHandle("req-1"))  # as the journal restores
    cost = await store.turns.complete_turn(
        turn_id, ModelReply("ok", None, (), "req-1"), [], settlement=Settlement(Cost(9, 0.9, False))
    )
    assert cost == Cost(9, 0.9, False)
    assert await store.costs.turn_cost(turn_id) == StoredCost(9, 0.9, False, True, 0)
    assert await store.costs.spent(server_daily(5.0), now=datetime.now(UTC)) == [0.9]
    # settled once only
    assert await store.costs.settle(turn_id, Settlement(Cost(1, 0.1, False))) is None
    never = await a_turn(store, "1300000000000000002")
    assert await store.costs.settle(never, Settlement(Cost(0, 0.0, True))) is None
    assert await store.costs.turn_cost(never) is None


def costed_service(
    store: Repositories, model: ModelClient, rules: BudgetRules
) -> ConversationService:
    return instant_service(store, model, costs=Budgets(store.costs, rules, Pricing()))


def asked(source_id: str, text: str) -> Incoming:
    return Incoming(
        source_id=source_id,
        scope_id="1200000000000000777",
        author_id=ALICE,
        author_name="Ada",
        text=text,
        guild_id=GUILD,
    )


async def running(
    service: ConversationService, store: Repositories, fake_fal: FakeFal, text: str
) -> tuple[asyncio.Future[None], str, Turn]:
    """A turn of ``text`` under way, its request held at fal: the task answering it, fal's
    request id and the stored turn."""
    fake_fal.hold()
    incoming = asked("1300000000000000001", text)
    answering = asyncio.ensure_future(service.respond(incoming, await ticket(), batchable=False))
    [request_id] = await fake_fal.wait_for_submissions(1)
    turn = await store.turns.turn_for_source(incoming.source_id)
    assert turn is not None
    return answering, request_id, turn


async def test_a_turn_stopped_after_fal_answered_settles_with_the_units_fal_reported(
    store: Repositories, other_store: Repositories, fake_fal: FakeFal, fal_model_client: ModelClient
) -> None:
    service = costed_service(store, fal_model_client, BudgetRules())
    answering, request_id, turn = await running(service, store, fake_fal, "stop me late")
    # another process stops it; fal answers anyway (and bills the request)
    assert await other_store.turns.stop_turn(turn.id, "Bob")
    fake_fal.complete_now(request_id)
    await answering
    request = fake_fal.requests[request_id]
    assert request.result_body is not None
    units = billable_units(request.input, request.result_body)
    assert units > 0
    cost = await store.costs.turn_cost(turn.id)
    assert cost is not None
    assert cost == StoredCost(units, Pricing().usd(units), False, True, cost.input_tokens)
    stopped = await store.turns.get_turn(turn.id)
    assert stopped.state is TurnState.STOPPED and stopped.output is None


async def test_a_turn_stopped_before_fal_answered_costs_nothing(
    store: Repositories, fake_fal: FakeFal, fal_model_client: ModelClient
) -> None:
    service = costed_service(store, fal_model_client, BudgetRules())
    answering, request_id, turn = await running(service, store, fake_fal, "stop me early")
    await fake_fal.wait_for_state(request_id, "IN_PROGRESS")
    await service.stop(turn.id, "Ada")
    await answering
    cost = await store.costs.turn_cost(turn.id)
    assert cost is not None and (cost.units, cost.usd, cost.settled) == (0, 0.0, True)


async def test_a_redo_is_paid_by_who_asked_for_it(
    store: Repositories, fal_model_client: ModelClient
) -> None:
    # alice has nothing left today; bob (a moderator pressing Retry) has his budget
    rules = BudgetRules(user_daily_usd=1.0)
    service = costed_service(store, fal_model_client, rules)
    incoming = asked("1300000000000000001", "answer again")
    await service.respond(incoming, await ticket(), batchable=False)
    first = await store.turns.turn_for_source(incoming.source_id)
    assert first is not None
    now = datetime.now(UTC)
    await store.costs.reserve(held(10**12, 1.0, at=now), [], now=now)
    await store.costs.settle(10**12, Settlement(reported=Cost(10**7, 1.0, False)))
    await service.redo(Redo(incoming.scope_id, turn_id=first.id), await ticket(BOB))
    again = await store.turns.turn_for_source(incoming.source_id)
    assert again is not None and again.id != first.id
    assert again.state is TurnState.DELIVERED
    paid = await store.costs.spending(SpendFilter(user_id=BOB), since=None, until=None)
    assert paid.turns == 1 and paid.units > 0
    cost = await store.costs.turn_cost(again.id)
    assert cost is not None and cost.settled and paid.units == cost.units


async def test_a_budget_too_short_for_a_turn_refuses_at_the_door_until_spending_drops(
    store: Repositories,
) -> None:
    now = datetime.now(UTC)
    rules = BudgetRules(guild_daily_usd=1.0)
    budgets = Budgets(store.costs, rules, Pricing(usd_per_unit=1e-4), now=lambda: now)
    payer = Payer(ALICE, GUILD, "1200000000000000001")
    await budgets.check(payer)
    # a live reservation of $0.995: a turn's worst case (here $0.0101) no longer fits
    await store.costs.reserve(held(1, 0.995, at=now), [], now=now)
    await budgets.check(payer)  # not used up: the door does not know yet
    with pytest.raises(BudgetExceeded):
        await budgets.reserve(2, payer, input_tokens=1, max_output_tokens=25)
    with pytest.raises(BudgetExceeded) as refused:
        await budgets.check(payer)
    assert (refused.value.scope, refused.value.period) == ("server", "daily")
    with pytest.raises(BudgetExceeded):
        await budgets.check(Payer(BOB, GUILD))  # the server's budget: bob's turn too
    await budgets.check(Payer(BOB, None))  # elsewhere, bob has no budget
    # the reservation settles lower: room for a turn again
    await store.costs.settle(1, Settlement(reported=Cost(5000, 0.5, False)))
    await budgets.check(payer)
    assert await budgets.reserve(2, payer, input_tokens=1, max_output_tokens=25) is None


async def test_new_budget_rules_forget_a_budget_too_short(store: Repositories) -> None:
    now = datetime.now(UTC)
    budgets = Budgets(store.costs, BudgetRules(guild_daily_usd=1.0), Pricing(1e-4), now=lambda: now)
    payer = Payer(ALICE, GUILD, "1200000000000000001")
    await store.costs.reserve(held(1, 0.995, at=now), [], now=now)
    with pytest.raises(BudgetExceeded):
        await budgets.reserve(2, payer, input_tokens=1, max_output_tokens=25)
    budgets.rules = BudgetRules(guild_daily_usd=1.0)
    await budgets.check(payer)


async def test_a_turn_stopped_as_fal_finished_settles_with_the_units_fal_billed(
    store: Repositories, fake_fal: FakeFal, fal_model_client: ModelClient
) -> None:
    service = costed_service(store, fal_model_client, BudgetRules())
    answering, request_id, turn = await running(service, store, fake_fal, "stop me as it ends")
    # fal finishes; fetching the answer is slow and the stop comes meanwhile: fal says the
    # request had completed, and billed it
    fake_fal.add_fault(Fault.slow(30, "result"))
    fake_fal.complete_now(request_id)
    await fake_fal.wait_for_calls("result", 1)
    await service.stop(turn.id, "Ada")
    await answering
    request = fake_fal.requests[request_id]
    assert request.result_body is not None
    units = billable_units(request.input, request.result_body)
    cost = await store.costs.turn_cost(turn.id)
    assert cost is not None and (cost.units, cost.estimated, cost.settled) == (units, False, True)
    assert (await store.turns.get_turn(turn.id)).state is TurnState.STOPPED
