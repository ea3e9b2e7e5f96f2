"""Storage benchmark: per-turn append and history load against history length, the
latency of storing fal's request id while many turns are in flight, and the store
transactions one fast turn costs.

    python -m bench.storage_bench [--postgres URL] [--sizes 10,100,1000] [--repeat 50]
                                  [--in-flight 50] [--turns-each 10]

Runs on a temporary SQLite file, and on PostgreSQL when ``--postgres`` or
``SEED_BOT_TEST_POSTGRES_URL`` gives a server: a scratch database is created next to the
given one and dropped afterwards. "append" is ``complete_turn`` storing two new messages
(the user's and the assistant's); it should cost the same whatever the history's length.
"load" is ``history()`` of the whole epoch (what ``begin_turn`` reads with the turn).
"record_submission under load": ``--in-flight`` conversations each run ``--turns-each``
turns at once with the normal mix (begin_turn with its history and settings, then
record_submission, complete_turn, record_delivery), and each record_submission is timed
from call to commit; twice: with a 0.5-1.5 s "model" pause before the answer (turns in
flight as in production), and with 0-10 ms (a stress test: every turn hits the database
back to back).
"transactions per turn": counted through the transaction helper's observer hook while the
real ``ConversationService`` answers one message with an instant stub model (quotas off,
then on).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bench.store_mix import in_flight_submissions, transactions_per_turn
from bot.domain.models import (
    ChatMessage,
    Conversation,
    ModelReply,
    NewConversation,
    NewTurn,
)
from bot.storage import Repositories, create_engine, sql_repositories
from bot.storage.migrate import upgrade

POSTGRES_ENV = "SEED_BOT_TEST_POSTGRES_URL"


@dataclass(frozen=True, slots=True)
class Row:
    backend: str
    turns: int
    append_median_ms: float
    append_p95_ms: float
    load_median_ms: float
    load_p95_ms: float
    messages: int


def _messages(n: int) -> list[ChatMessage]:
    # Sizes of a typical exchange: a short question, a few paragraphs of answer.
    return [
        ChatMessage(role="user", content=[{"type": "text", "text": f"question {n} " * 20}]),
        ChatMessage(role="assistant", content=f"answer {n} " * 150),
    ]


def _reply(n: int) -> ModelReply:
    return ModelReply(
        output=f"answer {n} " * 150, reasoning="thinking " * 50, messages=(), request_id=f"r{n}"
    )


class _Turns:
    def __init__(self, store: Repositories, conversation: Conversation) -> None:
        self.store = store
        self.conversation = conversation
        self.count = 0

    async def begin(self) -> int:
        self.count += 1
        start = await self.store.conversations.begin_turn(
            NewTurn(
                scope_id=self.conversation.scope_id,
                source_id=f"{self.conversation.id}-{self.count}",
                author_id="1100000000000000001",
                author_name="bench",
                reply_channel_id=self.conversation.scope_id,
                prompt=f"question {self.count}",
            )
        )
        return start.turn.id

    async def append(self, turn_id: int) -> None:
        await self.store.turns.complete_turn(turn_id, _reply(self.count), _messages(self.count))


async def _timed(
    repeat: int,
    prepare: Callable[[], Awaitable[int]] | None,
    run: Callable[[int], Awaitable[object]],
) -> list[float]:
    times = []
    for _ in range(repeat):
        arg = await prepare() if prepare is not None else 0
        start = time.perf_counter()
        await run(arg)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _p95(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


async def bench_size(store: Repositories, backend: str, size: int, repeat: int) -> Row:
    conversation = await store.conversations.create_conversation(
        NewConversation(scope_id=f"{size}{uuid.uuid4().int % 10**12}", owner_id="1")
    )
    turns = _Turns(store, conversation)
    for _ in range(size):
        await turns.append(await turns.begin())

    async def load(_: int) -> object:
        return await store.conversations.history(conversation.id, 0)

    await load(0)  # warm the pool and caches before timing
    loads = await _timed(repeat, None, load)
    messages = len(await store.conversations.history(conversation.id, 0))
    appends = await _timed(repeat, turns.begin, turns.append)
    return Row(
        backend=backend,
        turns=size,
        append_median_ms=statistics.median(appends),
        append_p95_ms=_p95(appends),
        load_median_ms=statistics.median(loads),
        load_p95_ms=_p95(loads),
        messages=messages,
    )


MODEL_PAUSES = {"model 0.5-1.5 s": (0.5, 1.5), "model 0-10 ms (stress)": (0.0, 0.010)}


@dataclass(frozen=True, slots=True)
class Submissions:
    backend: str
    mix: str
    in_flight: int
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float


async def bench_backend(
    backend: str, url: str, sizes: Sequence[int], repeat: int, in_flight: int, turns_each: int
) -> tuple[list[Row], list[Submissions], dict[str, int]]:
    await upgrade(url)
    engine = create_engine(url)
    try:
        store = sql_repositories(engine)
        rows = [await bench_size(store, backend, size, repeat) for size in sizes]
        submissions = []
        for mix, pause in MODEL_PAUSES.items():
            times = await in_flight_submissions(
                store, in_flight=in_flight, turns_each=turns_each, model_seconds=pause
            )
            cuts = statistics.quantiles(times, n=100)
            submissions.append(
                Submissions(
                    backend,
                    mix,
                    in_flight,
                    len(times),
                    statistics.median(times),
                    cuts[98],
                    max(times),
                )
            )
        counts = await transactions_per_turn(store)
        return rows, submissions, counts
    finally:
        await engine.dispose()


@asynccontextmanager
async def scratch_postgres(base_url: str) -> AsyncIterator[str]:
    name = f"seed_bot_bench_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(base_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@asynccontextmanager
async def _database(backend: str, base: str | None) -> AsyncIterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        return
    assert base is not None
    async with scratch_postgres(base) as url:
        yield url


def render(rows: Sequence[Row]) -> str:
    header = (
        f"{'backend':<11}{'history':>9}{'append med':>12}{'append p95':>12}"
        f"{'load med':>11}{'load p95':>11}{'messages':>10}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.backend:<11}{r.turns:>6} t.{r.append_median_ms:>9.2f}ms{r.append_p95_ms:>10.2f}ms"
            f"{r.load_median_ms:>9.2f}ms{r.load_p95_ms:>9.2f}ms{r.messages:>10}"
        )
    return "\n".join(lines)


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--postgres", default=os.environ.get(POSTGRES_ENV), metavar="URL")
    parser.add_argument("--sizes", default="10,100,1000", help="history lengths, in turns")
    parser.add_argument("--repeat", type=int, default=50, help="timed calls per measure")
    parser.add_argument("--in-flight", type=int, default=50, help="turns in flight at once")
    parser.add_argument("--turns-each", type=int, default=10, help="turns per in-flight task")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    rows: list[Row] = []
    submissions: list[Submissions] = []
    counts: dict[str, dict[str, int]] = {}
    runs = [("sqlite", None)] + ([("postgresql", args.postgres)] if args.postgres else [])
    for backend, base in runs:
        async with _database(backend, base) as url:
            found, subs, per_turn = await bench_backend(
                backend, url, sizes, args.repeat, args.in_flight, args.turns_each
            )
        rows += found
        submissions += subs
        counts[backend] = per_turn
    print(render(rows))
    print(
        f"\nappend = complete_turn storing 2 messages ({args.repeat} timed calls, the history"
        " growing by one turn each); load = history() of the whole epoch."
    )
    print("\nrecord_submission, call -> committed, with turns in flight doing the normal mix:")
    for sub in submissions:
        print(
            f"  {sub.backend:<11} {sub.mix:<23} {sub.in_flight} in flight, {sub.count} calls: p50"
            f" {sub.p50_ms:.2f} ms, p99 {sub.p99_ms:.2f} ms, max {sub.max_ms:.2f} ms"
        )
    print("\nstore transactions per fast turn (the real service, an instant stub model):")
    for backend, per_turn in counts.items():
        print(f"  {backend:<11} " + ", ".join(f"{k}: {v}" for k, v in per_turn.items()))
    if not args.postgres:
        print(f"(PostgreSQL skipped: pass --postgres URL or set {POSTGRES_ENV})")


if __name__ == "__main__":
    asyncio.run(main())
