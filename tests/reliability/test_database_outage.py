"""A database outage loses nothing (issue 18): the database is cut for real while turns are
in flight and messages keep arriving, and everything is answered once when it returns.

PostgreSQL is cut by a loopback proxy in front of the test server (connections reset, new
ones refused); SQLite by another connection holding the write lock past the busy timeout.
The figures (turns answered, time from the database's return to the last answer) are
printed (``-s``); ``SEED_BOT_TEST_OUTAGE_SECONDS`` sets the cut's length (default 10)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
import pytest_asyncio

from bot.chat import texts
from tests.chat.conftest import Harness, HarnessFactory
from tests.fakes.dbproxy import DatabaseProxy, SqliteLock
from tests.fakes.discord.models import FakeChannel
from tests.fakes.fal import ModelOutput
from tests.reliability.botproc import wait_until
from tests.storage.conftest import POSTGRES_ENV, fresh_postgres_database, postgres_base_url

IN_FLIGHT = 10
ARRIVING = 5
OUTAGE_SECONDS = float(os.environ.get("SEED_BOT_TEST_OUTAGE_SECONDS", "10"))
GAVE_UP = "stayed unreachable"


class Cut(Protocol):
    async def cut(self) -> None: ...
    async def restore(self) -> None: ...


@dataclass
class Backend:
    name: str
    env: dict[str, str]
    cut: Cut


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        lock = SqliteLock(tmp_path / "bot.db")
        try:
            yield Backend("sqlite", {}, lock)
        finally:
            lock.close()
        return
    base = postgres_base_url()
    if base is None:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV}")
    async with fresh_postgres_database(base) as url:
        proxy = DatabaseProxy.for_url(url)
        await proxy.start()
        try:
            env = {
                "SEED_BOT_DATABASE__URL": proxy.url(url),
                "SEED_BOT_DATABASE__AUTO_MIGRATE": "true",
            }
            yield Backend("postgresql", env, proxy)
        finally:
            await proxy.close()


async def start(make_harness: HarnessFactory, backend: Backend, tolerance: float) -> Harness:
    h = await make_harness(
        **backend.env,
        SEED_BOT_DATABASE__OUTAGE_TOLERANCE_SECONDS=str(tolerance),
        SEED_BOT_LIMITS__USER_REQUESTS="0",
        SEED_BOT_LIMITS__GUILD_REQUESTS="0",
    )
    h.fal.concurrency = 100
    h.fal.responder = lambda args: ModelOutput(f"echo: {args['prompt']}", None)
    return h


async def turns_in_flight(h: Harness, count: int) -> list[FakeChannel]:
    """``count`` threads whose turns run at fal (held there), each request id stored (the
    bot asked fal about each request, which it does only after storing its id)."""
    h.fal.hold()
    threads = []
    for i in range(count):
        author = h.world.alice if i % 2 else h.world.bob
        _, thread = await h.start_thread(author, f"in flight {i}")
        threads.append(thread)
    ids = await h.fal.wait_for_submissions(count, timeout=15)

    def all_followed() -> bool:
        paths = [c.path for c in h.fal.calls if c.route in ("status", "stream")]
        return all(any(rid in p for p in paths) for rid in ids)

    await h.fal.wait_for(all_followed, timeout=15)
    return threads


def answers(h: Harness, thread: FakeChannel, text: str) -> int:
    """How many times the bot answered ``text`` in ``thread``."""
    return sum(
        1
        for m in h.fake.bot_messages(thread)
        if m.content.startswith("echo: ") and m.content.endswith(text)
    )


@pytest.mark.timeout(120)
async def test_turns_in_flight_and_arriving_during_an_outage_are_answered_once_after_it(
    make_harness: HarnessFactory, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    h = await start(make_harness, backend, tolerance=OUTAGE_SECONDS + 60)
    threads = await turns_in_flight(h, IN_FLIGHT)

    cut_at = time.monotonic()
    await backend.cut.cut()
    # Messages arriving meanwhile: three in a thread with a turn in flight (held behind it,
    # in order), two starting conversations of their own (waiting to be stored).
    arriving = [(threads[0], f"meanwhile {i}") for i in range(3)]
    for i, (thread, text) in enumerate(arriving):
        await h.fake.send_message(h.world.alice if i % 2 else h.world.bob, thread, text)
    for i in range(3, ARRIVING):
        _, thread = await h.start_thread(h.world.alice, f"meanwhile {i}")
        arriving.append((thread, f"meanwhile {i}"))
    # fal answers the turns in flight while the database is away: each waits, and says so.
    h.fal.unhold()

    def waiting_shown() -> bool:
        return all(
            any(texts.STATUS_DATABASE in m.content for m in h.fake.bot_messages(t))
            for t in [*threads, *(t for t, _ in arriving[3:])]
        )

    await wait_until(h.fake, waiting_shown, timeout=OUTAGE_SECONDS + 10)
    # The outage lasts its length (a scenario's duration, not a synchronisation).
    await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - cut_at)))
    back_at = time.monotonic()
    await backend.cut.restore()

    expected = [(t, f"in flight {i}") for i, t in enumerate(threads)]
    expected += [(t, text) for t, text in arriving]

    def all_answered() -> bool:
        return all(answers(h, t, text) >= 1 for t, text in expected)

    await wait_until(h.fake, all_answered, timeout=30)
    last_answer = time.monotonic() - back_at
    await h.app.bot.idle()

    counts = [answers(h, t, text) for t, text in expected]
    print(
        f"\n{backend.name}: {OUTAGE_SECONDS:.0f}s outage: {counts.count(1)} of "
        f"{len(expected)} turns answered once ({IN_FLIGHT} in flight, {ARRIVING} arriving); "
        f"last answer {last_answer:.2f}s after the database returned"
    )
    assert counts == [1] * len(expected)
    # Held in arrival order per conversation.
    contents = [m.content for m in h.fake.bot_messages(threads[0])]
    order = [next(i for i, c in enumerate(contents) if f"meanwhile {n}" in c) for n in range(3)]
    assert order == sorted(order)
    # One outage, one story.
    ours = [r for r in caplog.records if r.name.startswith("bot.")]
    warnings = [r for r in ours if r.levelno >= logging.WARNING]
    unreachable = [r for r in warnings if "database unreachable" in r.getMessage()]
    assert len(unreachable) == 1, [r.getMessage() for r in warnings]
    assert [r.getMessage() for r in warnings if r not in unreachable] == []
    back = [r for r in caplog.records if "database back after" in r.getMessage()]
    assert len(back) == 1 and back[0].levelno == logging.INFO
    # The turns in flight waited (and the new conversations, when they met the outage); the
    # messages held behind a turn in flight never reached the database meanwhile.
    waited = int(back[0].getMessage().split("; ")[1].split()[0])
    assert IN_FLIGHT <= waited <= IN_FLIGHT + ARRIVING - 3, back[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)
    assert not [m for t in threads for m in h.fake.bot_messages(t) if GAVE_UP in m.content]


@pytest.mark.timeout(120)
async def test_an_outage_past_the_tolerance_ends_turns_and_a_restart_resumes_them(
    make_harness: HarnessFactory, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    tolerance = 2.0
    h = await start(make_harness, backend, tolerance=tolerance)
    threads = await turns_in_flight(h, 3)
    await backend.cut.cut()
    h.fal.unhold()

    def all_told() -> bool:
        return all(any(GAVE_UP in m.content for m in h.fake.bot_messages(t)) for t in threads)

    await wait_until(h.fake, all_told, timeout=60)
    await h.app.bot.idle()
    assert not any(r.exc_info for r in caplog.records)
    await backend.cut.restore()
    await h.stop()

    # The next start resumes each turn by its stored request id: fal's answer is posted.
    h2 = await start(make_harness, backend, tolerance=tolerance)
    expected = [(t, f"in flight {i}") for i, t in enumerate(threads)]

    def all_answered() -> bool:
        return all(answers(h2, t, text) >= 1 for t, text in expected)

    await wait_until(h2.fake, all_answered, timeout=30)
    await h2.app.bot.idle()
    assert [answers(h2, t, text) for t, text in expected] == [1] * len(expected)
    assert len(h2.fal.requests) == 3  # resumed by id, not asked again
