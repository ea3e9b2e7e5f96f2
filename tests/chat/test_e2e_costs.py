"""End to end: what turns cost (fal's units, priced; the estimate without them), dollar
budgets refusing at the door and at the submit with the right text and reset time, a
reloaded budget, and /usage for a user, a server's manager and the bot's owner."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.app import apply_config
from bot.domain.conversation import estimate_tokens
from bot.domain.costs import SpendFilter, estimate_units, format_usd, period_bounds
from bot.domain.models import Cost, Payer, Reservation, Settlement, Turn, TurnState
from bot.storage.costs import StoredCost
from tests.chat.conftest import Harness, HarnessFactory, status_with_stop
from tests.fakes.discord import Perm
from tests.fakes.discord.models import FakeChannel, FakeMessage, FakeUser
from tests.fakes.fal import Failure, FakeRequest, Fault, billable_units

RELATIVE_TIME = re.compile(r"<t:(\d+):R>")
# Old spending put in place by a test: a turn id no real turn has.
EARLIER_TURN = 10**12


async def turn_of(h: Harness, message: FakeMessage) -> Turn:
    turn = await h.app.store.turns.turn_for_source(str(message.id))
    assert turn is not None
    return turn


async def cost_of(h: Harness, message: FakeMessage) -> StoredCost:
    cost = await h.app.store.costs.turn_cost((await turn_of(h, message)).id)
    assert cost is not None
    return cost


async def answered_thread(h: Harness, user: FakeUser, text: str) -> tuple[FakeMessage, FakeChannel]:
    since = h.fake.mark()
    message, thread = await h.start_thread(user, text)
    await h.answer_in(thread, since=since, contains=f"echo: {text}")
    return message, thread


def units_of(request: FakeRequest) -> int:
    assert request.result_body is not None
    return billable_units(request.input, request.result_body)


async def spend_earlier(
    h: Harness, usd: float, *, guild: bool = True, by: FakeUser | None = None
) -> None:
    """Spending of today that the budgets count (another turn, earlier; bob's by default)."""
    world = h.world
    payer = Payer(str((by or world.bob).id), str(world.guild.id) if guild else None)
    now = datetime.now(UTC)
    costs = h.app.store.costs
    await costs.reserve(Reservation(EARLIER_TURN, payer, 0, 0, usd, now), [], now=now)
    await costs.settle(EARLIER_TURN, Settlement(reported=Cost(int(usd * 1e7), usd, False)))


def next_midnight() -> int:
    return int(period_bounds("daily", datetime.now(UTC))[1].timestamp())


def next_month() -> int:
    return int(period_bounds("monthly", datetime.now(UTC))[1].timestamp())


# -- the cost of a turn ---------------------------------------------------------------------


async def test_a_turn_stores_the_units_fal_reported_priced(make_harness: HarnessFactory) -> None:
    h = await make_harness(SEED_BOT_COSTS__USD_PER_UNIT="0.000002")
    message, _ = await answered_thread(h, h.world.alice, "what does this cost?")
    [request] = h.fal.requests.values()
    cost = await cost_of(h, message)
    units = units_of(request)
    assert (cost.units, cost.estimated, cost.settled) == (units, False, True)
    assert cost.usd == pytest.approx(units * 0.000002)


async def test_without_the_header_the_cost_is_estimated(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    h.fal.report_units = False
    message, _ = await answered_thread(h, h.world.alice, "no header please")
    [request] = h.fal.requests.values()
    assert request.result_body is not None
    output = estimate_tokens(request.result_body["output"]) + estimate_tokens(
        request.result_body.get("reasoning_content") or ""
    )
    cost = await cost_of(h, message)
    assert cost.estimated and cost.settled
    assert cost.input_tokens > 0
    assert cost.units == estimate_units(cost.input_tokens, output)
    assert cost.usd == pytest.approx(cost.units * 1e-7)


async def test_a_rejected_request_reported_as_zero_units_costs_nothing(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness()
    h.fal.hold()
    since = h.fake.mark()
    message = await h.mention(h.world.alice, "this will be refused")
    [request_id] = await h.fal.wait_for_submissions(1)
    problem = {"loc": ["body", "prompt"], "msg": "Prompt refused", "type": "value_error"}
    h.fal.complete_now(request_id, Failure.validation([problem]))
    await h.fake.wait_for_message(None, contains="Prompt refused", since=since, timeout=10)
    await h.app.bot.idle()
    cost = await cost_of(h, message)
    assert (cost.units, cost.usd, cost.estimated, cost.settled) == (0, 0.0, False, True)


# -- budgets --------------------------------------------------------------------------------


async def test_a_used_up_server_budget_refuses_at_the_door(make_harness: HarnessFactory) -> None:
    h = await make_harness(SEED_BOT_BUDGETS__GUILD_DAILY_USD="5")
    await spend_earlier(h, 5.0)
    since = h.fake.mark()
    message = await h.mention(h.world.alice, "one more?")
    refusal = await h.fake.wait_for_message(
        h.world.channel, contains="budget", since=since, timeout=10
    )
    assert refusal.content == (
        f"⚠️ This server has used its $5.00 daily budget; it resets <t:{next_midnight()}:R>."
    )
    await h.app.bot.idle()
    assert h.fal.requests == {}
    assert await h.app.store.turns.turn_for_source(str(message.id)) is None


@pytest.mark.parametrize(
    ("key", "alice_spent", "in_server", "text"),
    [
        ("USER_DAILY_USD", True, False, "You have used your $2.50 daily budget"),
        ("USER_MONTHLY_USD", True, False, "You have used your $2.50 monthly budget"),
        ("GUILD_DAILY_USD", False, True, "This server has used its $2.50 daily budget"),
        ("GUILD_MONTHLY_USD", False, True, "This server has used its $2.50 monthly budget"),
        ("TOTAL_MONTHLY_USD", False, False, "The bot has used its $2.50 monthly budget"),
    ],
)
async def test_each_budget_refuses_once_used_up_and_says_when_it_resets(
    make_harness: HarnessFactory, key: str, alice_spent: bool, in_server: bool, text: str
) -> None:
    h = await make_harness(**{f"SEED_BOT_BUDGETS__{key}": "2.5"})
    # spending that this budget counts and no other would: alice's own in a DM, another
    # member's in this server, anyone's anywhere for the whole bot
    await spend_earlier(h, 2.5, guild=in_server, by=h.world.alice if alice_spent else None)
    since = h.fake.mark()
    await h.mention(h.world.alice, "may I?")
    refusal = await h.fake.wait_for_message(
        h.world.channel, contains="budget", since=since, timeout=10
    )
    resets = next_midnight() if "daily" in text else next_month()
    assert refusal.content == f"⚠️ {text}; it resets <t:{resets}:R>."
    await h.app.bot.idle()
    assert h.fal.requests == {}


async def test_spending_under_every_budget_is_answered(make_harness: HarnessFactory) -> None:
    budgets = ("USER_DAILY", "USER_MONTHLY", "GUILD_DAILY", "GUILD_MONTHLY", "TOTAL_MONTHLY")
    h = await make_harness(**{f"SEED_BOT_BUDGETS__{b}_USD": "2.5" for b in budgets})
    await spend_earlier(h, 2.49, by=h.world.alice)
    await answered_thread(h, h.world.alice, "just under")


async def test_a_turn_whose_worst_case_does_not_fit_is_refused_before_fal(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(SEED_BOT_BUDGETS__GUILD_DAILY_USD="5")
    # $0.0005 left: less than any turn's worst case (4,096 output tokens are $0.0016)
    await spend_earlier(h, 4.9995)
    since = h.fake.mark()
    message, thread = await h.start_thread(h.world.alice, "the last cents")
    refusal = await h.fake.wait_for_message(thread, contains="budget", since=since, timeout=10)
    assert "This server has used its $5.00 daily budget; it resets" in refusal.content
    assert f"<t:{next_midnight()}:R>" in refusal.content
    await h.app.bot.idle()
    assert h.fal.requests == {}
    turn = await turn_of(h, message)
    assert turn.state is TurnState.STOPPED  # not a failure of the model
    assert await h.app.store.costs.turn_cost(turn.id) is None


async def test_the_user_budget_holds_across_turns(make_harness: HarnessFactory) -> None:
    # each turn's worst case is its input plus 4 x 10 output units at $0.001 a unit
    h = await make_harness(
        SEED_BOT_COSTS__USD_PER_UNIT="0.001",
        SEED_BOT_MODEL__MAX_COMPLETION_TOKENS="10",
        SEED_BOT_BUDGETS__USER_DAILY_USD="0.09",
    )
    message, thread = await answered_thread(h, h.world.alice, "hi")
    first = await cost_of(h, message)
    # the first turn's worst case fitted; the second's (its input has the first exchange
    # too: over 20 tokens) does not fit what is left
    assert (first.input_tokens + 40) * 0.001 <= 0.09 < first.usd + (20 + 40) * 0.001
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "and again")
    refusal = await h.fake.wait_for_message(thread, contains="budget", since=since, timeout=10)
    assert "You have used your $0.09 daily budget; it resets" in refusal.content
    assert len(h.fal.requests) == 1
    # bob's budget is his own
    await answered_thread(h, h.world.bob, "me too")


async def test_a_budget_lowered_by_a_reload_applies_from_the_next_turn(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness()
    _, thread = await answered_thread(h, h.world.alice, "before")
    lowered = h.config(SEED_BOT_BUDGETS__USER_DAILY_USD="0.0001")
    assert apply_config(h.app, lowered) == []
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "after")
    refusal = await h.fake.wait_for_message(thread, contains="budget", since=since, timeout=10)
    assert "You have used your $0.0001 daily budget" in refusal.content
    assert len(h.fal.requests) == 1


# -- /usage ---------------------------------------------------------------------------------


async def usage(h: Harness, user: Any, channel: FakeChannel) -> str:
    interaction = await h.fake.invoke_command(user, channel, "usage")
    response = await interaction.wait_response()
    assert response.ephemeral, response
    assert response.message is not None
    assert response.message.allowed_mentions is not None
    assert response.message.allowed_mentions.get("parse") == []
    return response.message.content


def line(label: str, turns: int, units: int, usd: float) -> str:
    return f"{label}: {turns} turn{'' if turns == 1 else 's'} · {units:,} units · {format_usd(usd)}"


async def test_usage_matches_the_stored_turns_for_a_user_a_server_and_the_owner(
    make_harness: HarnessFactory,
) -> None:
    price = 0.0001
    h = await make_harness(
        SEED_BOT_COSTS__USD_PER_UNIT=str(price),
        SEED_BOT_MODEL__MAX_COMPLETION_TOKENS="50",
        SEED_BOT_BUDGETS__USER_DAILY_USD="5",
    )
    world = h.world
    _, thread = await answered_thread(h, world.alice, "first")
    since = h.fake.mark()
    await h.fake.send_message(world.alice, thread, "second")
    await h.answer_in(thread, since=since, contains="echo: second")
    await answered_thread(h, world.bob, "bob here")
    alice_units = sum(units_of(r) for r in list(h.fal.requests.values())[:2])
    bob_units = units_of(list(h.fal.requests.values())[2])

    mine = await usage(h, world.alice, thread)
    assert line("Today", 2, alice_units, alice_units * price) in mine
    assert line("This month", 2, alice_units, alice_units * price) in mine
    left = format_usd(5 - alice_units * price)
    assert f"Your daily budget $5.00: {left} left (resets <t:{next_midnight()}:R>)" in mine
    assert "**This thread**" in mine
    assert line("In all", 2, alice_units, alice_units * price) in mine
    assert "This server" not in mine and "whole bot" not in mine

    role = h.fake.create_role(world.guild, "admins", permissions=Perm.MANAGE_GUILD)
    h.fake.set_member_roles(world.guild, world.bob, [role])
    managed = await usage(h, world.bob, world.channel)
    total = alice_units + bob_units
    server = managed.split("**This server**")[1]
    assert line("Today", 3, total, total * price) in server
    assert f"1. <@{world.alice.id}>: {format_usd(alice_units * price)} (2 turns)" in server
    assert f"2. <@{world.bob.id}>: {format_usd(bob_units * price)} (1 turn)" in server
    assert "This thread" not in managed

    owner: Any = h.fake.owner
    h.fake.add_member(world.guild, owner)
    everything = await usage(h, owner, world.channel)
    whole = everything.split("**The whole bot**")[1]
    assert line("This month", 3, total, total * price) in whole
    assert line("Today", 0, 0, 0.0) in everything  # the owner's own spending
    assert RELATIVE_TIME.search(mine)


# -- who pays, and what a stopped turn costs ------------------------------------------------


def button(message: FakeMessage, action: str) -> str:
    """The custom id of the ``action`` button (stop, retry) on a message of the bot's."""
    [custom_id] = [
        str(c["custom_id"])
        for row in message.components
        for c in row.get("components", [])
        if c["custom_id"].startswith(f"seed:{action}:")
    ]
    return custom_id


async def test_a_turn_stopped_after_fal_answered_costs_the_units_fal_reported(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness()
    h.fal.hold()
    since = h.fake.mark()
    message, thread = await h.start_thread(h.world.alice, "stop me late")
    [request_id] = await h.fal.wait_for_submissions(1)
    turn = await turn_of(h, message)
    # Stop wins while fal is finishing (pressed in another process: nothing cancels the
    # wait here); fal answers anyway, and bills the request.
    assert await h.app.store.turns.stop_turn(turn.id, "Bob")
    h.fal.complete_now(request_id)
    await h.fake.wait_for_message(thread, contains="Stopped", since=since, timeout=10)
    await h.app.bot.idle()
    assert "echo: stop me late" not in [m.content for m in h.fake.bot_messages(thread)]
    request = h.fal.requests[request_id]
    cost = await cost_of(h, message)
    assert (cost.units, cost.estimated, cost.settled) == (units_of(request), False, True)
    assert cost.usd == pytest.approx(units_of(request) * 1e-7)


async def test_a_stop_pressed_while_the_finished_answer_is_fetched_costs_its_units(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness()
    h.fal.hold()
    since = h.fake.mark()
    message, thread = await h.start_thread(h.world.alice, "stop me as it ends")
    [request_id] = await h.fal.wait_for_submissions(1)
    status = await status_with_stop(h, thread, since)
    # fal finishes; the bot's fetch of the answer is slow, and Stop is pressed meanwhile
    h.fal.add_fault(Fault.slow(30, "result"))
    h.fal.complete_now(request_id)
    await h.fal.wait_for_calls("result", 1)
    pressed = await h.fake.press_button(h.world.alice, status, button(status, "stop"))
    await pressed.wait_response()
    await h.fake.wait_for_edit(status, lambda m: "Stopped by" in m.content, since=since)
    await h.app.bot.idle()
    # fal said the request had completed when asked to cancel it: it billed it
    request = h.fal.requests[request_id]
    cost = await cost_of(h, message)
    assert (cost.units, cost.estimated, cost.settled) == (units_of(request), False, True)
    assert "echo: stop me as it ends" not in [m.content for m in h.fake.bot_messages(thread)]


async def test_a_moderators_retry_is_paid_by_the_moderator(make_harness: HarnessFactory) -> None:
    h = await make_harness(SEED_BOT_BUDGETS__USER_DAILY_USD="1")
    world = h.world
    _, thread = await answered_thread(h, world.alice, "answer again, please")
    answer = h.fake.bot_messages(thread)[-1]
    # alice has nothing left today; bob, who may manage threads, has his whole budget
    await spend_earlier(h, 1.0, by=world.alice)
    mods = h.fake.create_role(world.guild, "thread mods", permissions=Perm.MANAGE_THREADS)
    h.fake.set_member_roles(world.guild, world.bob, [mods])
    since = h.fake.mark()
    pressed = await h.fake.press_button(world.bob, answer, button(answer, "retry"))
    await pressed.wait_response()
    await h.fake.wait_for_message(
        thread, contains="echo: answer again, please", since=since, timeout=10
    )
    await h.app.bot.idle()
    assert len(h.fal.requests) == 2
    first_attempt = h.fake.bot_messages(thread)[0]
    assert first_attempt.id == answer.id
    costs = h.app.store.costs
    paid = await costs.spending(SpendFilter(user_id=str(world.bob.id)), since=None, until=None)
    assert paid.turns == 1
    assert paid.units == units_of(list(h.fal.requests.values())[-1])
    # alice paid for her own turn and the earlier spending, not for bob's retry
    hers = await costs.spending(SpendFilter(user_id=str(world.alice.id)), since=None, until=None)
    assert hers.turns == 2
