"""Request quotas end to end, and under concurrency across engines and OS processes on one
PostgreSQL database."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.domain.errors import QuotaExceeded
from bot.domain.quotas import Quota, QuotaRules, Quotas
from bot.storage import Repositories, create_engine, sql_repositories
from tests.chat.conftest import Harness, HarnessFactory
from tests.fakes.discord.models import FakeChannel, FakeMessage, FakeUser
from tests.reliability.racing import needs_postgres, race

ROOT = Path(__file__).resolve().parents[2]
RELATIVE_TIME = re.compile(r"<t:(\d+):R>")


def usage_counts(h: Harness) -> dict[str, int]:
    """Counted requests per quota (``user:<id>``, ``guild:<id>``; a key may carry its window
    as a suffix), read straight from the SQLite file."""
    with sqlite3.connect(h.tmp_path / "bot.db") as db:
        rows = db.execute("SELECT key, count(*) FROM usage_events GROUP BY key").fetchall()
    counts: dict[str, int] = {}
    for key, count in rows:
        quota = ":".join(key.split(":")[:2])
        counts[quota] = counts.get(quota, 0) + count
    return counts


async def answered_in(h: Harness, author: FakeUser, thread: FakeChannel, text: str) -> None:
    since = h.fake.mark()
    await h.fake.send_message(author, thread, text)
    await h.fake.wait_for_message(
        thread, lambda m: "echo:" in m.content, contains=text, since=since, timeout=10
    )


async def refusal_in(
    h: Harness, author: FakeUser, channel: FakeChannel, text: str
) -> tuple[FakeMessage, FakeMessage]:
    since = h.fake.mark()
    message = await h.fake.send_message(author, channel, text)
    refusal = await h.fake.wait_for_message(channel, since=since, contains="limit", timeout=10)
    return message, refusal


def check_retry_time(refusal: FakeMessage, window_seconds: int) -> None:
    match = RELATIVE_TIME.search(refusal.content)
    assert match, refusal.content
    retry_at = int(match.group(1))
    now = datetime.now(UTC).timestamp()
    # the first counted request leaves the window within ``window_seconds`` from now
    assert now < retry_at <= now + window_seconds + 1, (retry_at, now)


async def test_user_quota_refuses_the_third_message_and_counts_no_refusal(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(SEED_BOT_LIMITS__USER_REQUESTS="2")
    alice, bob = h.world.alice, h.world.bob
    thread, _ = await h.converse(alice, "one")
    await answered_in(h, alice, thread, "two")
    message, refusal = await refusal_in(h, alice, thread, "three")
    assert refusal.content.startswith("⚠️ You have reached the bot's request limit")
    assert refusal.referenced_message_id == message.id
    check_retry_time(refusal, 3600)
    # refused again: still refused, nothing more counted, and not told twice
    await h.fake.send_message(alice, thread, "four")
    # barrier: bob, with his own quota, is answered in the same thread afterwards
    await answered_in(h, bob, thread, "bob's turn")
    assert [m for m in h.fake.bot_messages(thread) if "limit" in m.content] == [refusal]
    assert [r.input["prompt"] for r in h.fal.requests.values()] == [
        "one",
        "two",
        "[Bob]: bob's turn",
    ]
    counts = usage_counts(h)
    assert counts[f"user:{alice.id}"] == 2
    assert counts[f"user:{bob.id}"] == 1
    # the refused messages are not in the conversation's history
    last = list(h.fal.requests.values())[-1]
    assert [m["content"] for m in last.input["messages"]] == [
        "one",
        "echo: one",
        "two",
        "echo: two",
    ]


async def test_guild_quota_refuses_once_the_server_is_used_up(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(SEED_BOT_LIMITS__GUILD_REQUESTS="2")
    alice, bob = h.world.alice, h.world.bob
    await h.converse(alice, "from alice")
    await h.converse(bob, "from bob")
    since = h.fake.mark()
    message = await h.mention(alice, "one more")
    refusal = await h.fake.wait_for_message(h.world.channel, since=since, timeout=10)
    assert refusal.content.startswith("⚠️ This server has reached the bot's request limit")
    assert refusal.referenced_message_id == message.id
    check_retry_time(refusal, 3600)
    assert len(h.fal.requests) == 2
    assert len(h.fake.threads(h.world.channel)) == 2
    counts = usage_counts(h)
    assert counts[f"guild:{h.world.guild.id}"] == 2


async def test_server_quota_refusal_costs_the_user_nothing(make_harness: HarnessFactory) -> None:
    h = await make_harness(SEED_BOT_LIMITS__GUILD_REQUESTS="1")
    await h.converse(h.world.bob, "bob uses the server's only request")
    since = h.fake.mark()
    for text in ("alice tries", "alice tries again"):
        await h.mention(h.world.alice, text)
    await h.fake.wait_for_message(h.world.channel, since=since, contains="limit", timeout=10)
    await h.fake.sync_gateway()
    await h.app.bot.idle()
    # told once (the second refusal is silent); neither counted
    assert len([m for m in h.fake.bot_messages(h.world.channel) if "limit" in m.content]) == 1
    assert len(h.fal.requests) == 1
    assert usage_counts(h).get(f"user:{h.world.alice.id}", 0) == 0


async def test_slash_ask_over_quota_is_refused_ephemerally(make_harness: HarnessFactory) -> None:
    h = await make_harness(SEED_BOT_LIMITS__USER_REQUESTS="1")
    await h.converse(h.world.alice, "the only one")
    interaction = await h.fake.invoke_command(
        h.world.alice, h.world.channel, "ask", {"prompt": "and another"}
    )
    response = await interaction.wait_response()
    assert response.ephemeral and response.message is not None
    assert RELATIVE_TIME.search(response.message.content), response.message.content
    assert len(h.fal.requests) == 1
    assert usage_counts(h)[f"user:{h.world.alice.id}"] == 1


# -- several processes on one PostgreSQL -------------------------------------------------------


def quota_service(store: Repositories, limit: int) -> Quotas:
    return Quotas(store.usage, QuotaRules(user=Quota(limit, 3600), guild=Quota(0, 3600)))


async def admit_many(service: Quotas, user: str, attempts: int) -> int:
    async def one() -> bool:
        try:
            await service.admit(user, None)
        except QuotaExceeded:
            return False
        return True

    results = await asyncio.gather(*(one() for _ in range(attempts)))
    return sum(results)


@needs_postgres
async def test_two_engines_admit_exactly_the_limit(postgres_url: str) -> None:
    limit = 9
    engines = [create_engine(postgres_url) for _ in range(2)]
    try:
        services = [quota_service(sql_repositories(e), limit) for e in engines]
        admitted = await asyncio.gather(*(admit_many(s, "42", 25) for s in services))
        assert sum(admitted) == limit, admitted
    finally:
        for e in engines:
            await e.dispose()


WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from bot.domain.errors import QuotaExceeded
    from bot.domain.quotas import Quota, QuotaRules, Quotas
    from bot.storage import create_engine, sql_repositories

    async def main(url: str, limit: int, attempts: int) -> None:
        engine = create_engine(url)
        rules = QuotaRules(user=Quota(limit, 3600), guild=Quota(0, 3600))
        service = Quotas(sql_repositories(engine).usage, rules)
        await service.admit("warm-up-" + str(id(engine)), None)  # connect before the start
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        async def one() -> bool:
            try:
                await service.admit("42", None)
            except QuotaExceeded:
                return False
            return True

        results = await asyncio.gather(*(one() for _ in range(attempts)))
        await engine.dispose()
        print(json.dumps({"admitted": sum(results)}), flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
    """
)


@needs_postgres
@pytest.mark.timeout(60)
async def test_two_processes_admit_exactly_the_limit(postgres_url: str) -> None:
    limit, attempts = 11, 30
    results = await race(WORKER, [[postgres_url, str(limit), str(attempts)]] * 2)
    admitted = [r["admitted"] for r in results]
    assert sum(admitted) == limit, admitted
