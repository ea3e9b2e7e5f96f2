"""The store alone in a long conversation: CPU per turn of ``begin_turn`` (the turn's context:
its history within the context budget, settings, speakers) plus ``complete_turn`` and
``record_delivery``, after ``--turns`` stored turns of the bench's typical exchange.

    python -m bench.context_read [--turns 1000] [--postgres URL]

CPU is the process's (``time.process_time``: aiosqlite's thread included; on PostgreSQL
the server's work is not in it), per turn over ``--rounds`` rounds of 20 turns: the minimum
and median are printed. PostgreSQL: a scratch database is created on the server ``URL``
names and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.storage_bench import scratch_postgres
from bot.domain.models import ChatMessage, ModelReply, NewConversation, NewTurn
from bot.storage import create_engine, sql_repositories
from bot.storage.migrate import upgrade

BUDGET_TOKENS = 200_000  # the shipped context budget
TURNS_PER_ROUND = 20
EXCHANGE = (
    ChatMessage("user", [{"type": "text", "text": "q" * 260}]),
    ChatMessage("assistant", "a" * 1500),
)


async def measure(url: str, turns: int, rounds: int) -> tuple[float, float, int]:
    """Min and median CPU ms per turn, and how many messages the last context held."""
    await upgrade(url)
    engine = create_engine(url)
    try:
        store = sql_repositories(engine, history_tokens=BUDGET_TOKENS)
        scope = "1200000000000000001"
        await store.conversations.create_conversation(NewConversation(scope_id=scope, owner_id="1"))
        made = 0

        async def turn() -> int:
            nonlocal made
            made += 1
            start = await store.conversations.begin_turn(
                NewTurn(
                    scope_id=scope,
                    source_id=str(10**15 + made),
                    author_id="1100000000000000001",
                    author_name="Ada",
                    reply_channel_id=scope,
                    prompt="p",
                )
            )
            await store.turns.complete_turn(start.turn.id, ModelReply("a", None, (), "r"), EXCHANGE)
            await store.turns.record_delivery(start.turn.id, ["1"])
            return len(start.context.history)

        for _ in range(turns):
            await turn()
        per_turn = []
        held = 0
        for _ in range(rounds):
            started = time.process_time()
            for _ in range(TURNS_PER_ROUND):
                held = await turn()
            per_turn.append((time.process_time() - started) / TURNS_PER_ROUND * 1000)
        return min(per_turn), statistics.median(per_turn), held
    finally:
        await engine.dispose()


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=1000, help="stored turns before timing")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of 20 timed turns")
    parser.add_argument("--postgres", default=None, help="a PostgreSQL server's URL")
    args = parser.parse_args(argv)
    backend = "postgresql" if args.postgres else "sqlite"
    if args.postgres:
        async with scratch_postgres(args.postgres) as url:
            low, median, held = await measure(url, args.turns, args.rounds)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            url = f"sqlite+aiosqlite:///{Path(scratch) / 'context.db'}"
            low, median, held = await measure(url, args.turns, args.rounds)
    print(
        f"{backend}, {args.turns} turns: CPU per turn min {low:.2f} ms, median {median:.2f} ms"
        f" (context: {held} messages)"
    )


if __name__ == "__main__":
    asyncio.run(main())
