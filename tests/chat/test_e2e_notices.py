"""End to end: a refused person is told once per reason and window, then refused in
silence. A flood of refused messages (access lists, quota, budget, DMs off) costs one reply,
no model call and no database write; interactions are still answered every time (Discord
requires an answer), privately."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import func, select

from bot.domain.costs import SpendFilter
from bot.domain.models import Cost, Payer, Reservation, Settlement
from bot.storage.tables import usage_events
from tests.chat.conftest import Harness, HarnessFactory
from tests.fakes.discord import StandardWorld
from tests.fakes.discord.events import HttpRequest
from tests.fakes.discord.models import FakeChannel, FakeMessage, FakeUser

FLOOD = 8
# An earlier turn's spending put in place by a test: a turn id no real turn has.
EARLIER_TURN = 10**12


@contextmanager
def database_work(h: Harness) -> Iterator[list[tuple[str, bool]]]:
    """Every transaction the bot runs meanwhile: (what, whether it writes)."""
    seen: list[tuple[str, bool]] = []
    observers = h.app.store.db.observers
    observers.append(lambda what, write: seen.append((what, write)))
    try:
        yield seen
    finally:
        observers.remove(observers[-1])


async def flood(h: Harness, author: FakeUser, channel: FakeChannel, count: int = FLOOD) -> int:
    """``author`` sends ``count`` messages to ``channel``; returns the mark from before, once
    the bot has read every one of them and finished whatever they caused."""
    since = h.fake.mark()
    for n in range(count):
        await h.fake.send_message(author, channel, f"<@{h.bot_user.id}> let me in {n}")
    await h.fake.sync_gateway()
    await h.app.bot.idle()
    return since


async def spend(h: Harness, user: FakeUser, usd: float) -> None:
    """Spending of today that the budgets count: an earlier turn of ``user``'s here."""
    now = datetime.now(UTC)
    costs = h.app.store.costs
    payer = Payer(str(user.id), str(h.world.guild.id))
    await costs.reserve(Reservation(EARLIER_TURN, payer, 0, 0, usd, now), [], now=now)
    await costs.settle(EARLIER_TURN, Settlement(reported=Cost(int(usd * 1e7), usd, False)))


def rest_calls(h: Harness, since: int, until: int | None = None) -> list[HttpRequest]:
    return [e for e in h.fake.events[since:until] if isinstance(e, HttpRequest)]


async def test_a_denied_flood_in_a_bound_thread_costs_one_reply(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness()
    thread, _ = await h.converse(h.world.bob, "bob opens", settle=True)
    (h.tmp_path / "config.toml").write_text(f'[access]\ndeny_users = ["{h.world.alice.id}"]\n')
    assert h.app.bot.reload_config is not None
    assert await h.app.bot.reload_config() == []
    with database_work(h) as work:
        since = await flood(h, h.world.alice, thread)
    calls = rest_calls(h, since)
    assert [c.route for c in calls] == ["POST /channels/{channel_id}/messages"], calls
    [notice] = h.fake.bot_messages(thread)[1:]
    assert notice.content == "⛔ Sorry, you are not allowed to use this bot."
    assert not [what for what, write in work if write], work
    assert len(h.fal.requests) == 1
    # bob is still answered; and his own refusal, later, would be told to him
    since = h.fake.mark()
    await h.fake.send_message(h.world.bob, thread, "still here")
    await h.answer_in(thread, since=since, contains="echo:")


async def test_a_denied_person_is_told_once_across_channels_then_silence(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    other = discord_world.fake.create_text_channel(discord_world.guild, "random")
    h = await make_harness(SEED_BOT_ACCESS__DENY_USERS=str(discord_world.alice.id))
    with database_work(h) as work:
        since = await flood(h, h.world.alice, h.world.channel, 3)
        since_other = await flood(h, h.world.alice, other, 3)
    assert len(rest_calls(h, since)) == 1
    assert rest_calls(h, since_other) == []
    assert work == []  # the access lists need no database at all
    assert len(h.fake.threads(h.world.channel)) == 0
    assert h.fal.requests == {}


async def test_an_over_quota_flood_costs_one_notice_and_no_database_write(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(SEED_BOT_LIMITS__USER_REQUESTS="1")
    thread, _ = await h.converse(h.world.alice, "the only one", settle=True)
    counted = await usage_rows(h)
    with database_work(h) as work:
        since = await flood(h, h.world.alice, thread)
    [call] = rest_calls(h, since)
    assert call.route == "POST /channels/{channel_id}/messages"
    [notice] = h.fake.bot_messages(thread)[1:]
    assert notice.content.startswith("⚠️ You have reached the bot's request limit")
    # one look at the counters (the first refusal; it writes nothing), none after it
    assert [what for what, _ in work if what == "try_consume"] == ["try_consume"]
    assert len(h.fal.requests) == 1
    assert await usage_rows(h) == counted


async def usage_rows(h: Harness) -> int:
    async with h.app.store.db.engine.connect() as conn:
        count = await conn.scalar(select(func.count()).select_from(usage_events))
    return int(count or 0)


async def test_an_over_budget_flood_costs_one_notice(make_harness: HarnessFactory) -> None:
    h = await make_harness(SEED_BOT_BUDGETS__USER_DAILY_USD="1")
    thread, _ = await h.converse(h.world.alice, "first", settle=True)
    await spend(h, h.world.alice, 1.0)
    with database_work(h) as work:
        since = await flood(h, h.world.alice, thread)
    [call] = rest_calls(h, since)
    assert call.route == "POST /channels/{channel_id}/messages"
    [notice] = h.fake.bot_messages(thread)[1:]
    assert "You have used your $1.00 daily budget" in notice.content
    assert not [what for what, write in work if write], work
    assert len(h.fal.requests) == 1


async def test_dms_while_off_are_told_once_a_day_per_person(harness: Harness) -> None:
    h = harness
    alice_dm, bob_dm = h.fake.dm_channel(h.world.alice), h.fake.dm_channel(h.world.bob)
    with database_work(h) as work:
        since = await flood(h, h.world.alice, alice_dm)
    [call] = rest_calls(h, since)
    assert call.route == "POST /channels/{channel_id}/messages"
    [notice] = h.fake.bot_messages(alice_dm)
    assert "Direct messages are turned off" in notice.content
    assert not [what for what, write in work if write], work
    await flood(h, h.world.bob, bob_dm, 2)
    assert len(h.fake.bot_messages(bob_dm)) == 1
    assert h.fal.requests == {}


async def test_refused_interactions_are_answered_every_time(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    h = await make_harness(SEED_BOT_ACCESS__DENY_USERS=str(discord_world.alice.id))
    await flood(h, h.world.alice, h.world.channel, 1)
    for _ in range(3):
        interaction = await h.fake.invoke_command(
            h.world.alice, h.world.channel, "ask", {"prompt": "sneak in"}
        )
        response = await interaction.wait_response()
        assert response.ephemeral and response.message is not None
        assert response.message.content == "⛔ Sorry, you are not allowed to use this bot."
    assert h.fal.requests == {}


async def test_a_budget_too_short_for_a_turn_is_told_once_then_refused_at_the_door(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(SEED_BOT_BUDGETS__GUILD_DAILY_USD="5")
    thread, _ = await h.converse(h.world.alice, "first", settle=True)
    # $0.0005 left: less than any turn's worst case, though not used up
    await spend(h, h.world.bob, 5.0 - 0.0005 - await spent_today(h))
    since = await flood(h, h.world.alice, thread)
    notices = [m for m in h.fake.bot_messages(thread) if "budget" in m.content]
    assert len(notices) == 1, notices
    assert "This server has used its $5.00 daily budget" in notices[0].content
    assert len(h.fal.requests) == 1
    # from now on the door refuses: no turn stored, nothing written, nothing posted
    with database_work(h) as work:
        since = await flood(h, h.world.alice, thread)
        since_bob = await flood(h, h.world.bob, thread)
    assert not [what for what, write in work if write], work
    assert rest_calls(h, since, until=since_bob) == []
    # bob is told once too, at the door
    [call] = rest_calls(h, since_bob)
    assert call.route == "POST /channels/{channel_id}/messages"
    assert len(h.fal.requests) == 1


async def spent_today(h: Harness) -> float:
    now = datetime.now(UTC)
    server = SpendFilter(guild_id=str(h.world.guild.id))
    return (await h.app.store.costs.spending(server, since=now.replace(hour=0), until=None)).usd


async def test_a_refused_edit_tells_nothing_and_leaves_the_notice_for_a_message(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(SEED_BOT_LIMITS__USER_REQUESTS="2")
    thread, _ = await h.converse(h.world.alice, "one", settle=True)
    since = h.fake.mark()
    second = await h.fake.send_message(h.world.alice, thread, "two")
    await h.answer_in(thread, since=since, contains="echo: two")
    await h.app.bot.idle()
    # answering the edit again would be a third request: refused, in silence
    since = await edit(h, second, "two, edited")
    assert rest_calls(h, since) == []
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "three")
    notice = await h.fake.wait_for_message(thread, contains="request limit", since=since)
    assert notice.content.startswith("⚠️ You have reached the bot's request limit")
    assert len(h.fal.requests) == 2


async def edit(h: Harness, message: FakeMessage, content: str) -> int:
    since = h.fake.mark()
    await h.fake.edit_message(message, content)
    await h.fake.sync_gateway()
    await h.app.bot.idle()
    return since
