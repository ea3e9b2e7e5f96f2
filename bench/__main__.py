"""seed-bot benchmarks: the real bot against the loopback fakes.

    .venv/bin/python -m bench [--quick] [--only delivery,overhead,concurrency,memory,storage]
                              [--postgres URL] [...sizes, see --help]

Sections:
  delivery     fal HTTP calls per turn and COMPLETED -> answer-in-Discord delay (1 s and
               10 s model), next to fal's official client (``AsyncClient.subscribe``)
  overhead     bot CPU per turn and its latency around the model, with 10/100/1000 turns
               of history, on SQLite and (with --postgres) PostgreSQL
  concurrency  100 and 500 threads each sending one message at once, 2 s model, with the
               in-flight cap raised (2000) and with the shipped cap
  memory       RSS per idle conversation after 10,000 conversations
  storage      the storage bench (bench/storage_bench.py): append/load against history
  shipped      a lone message -> its fal submit with the shipped config (batch window,
               status delay, in-flight cap all default)
  discord      Discord REST calls per turn (fast, slow, multi-part answer), shipped config
  media        N messages with three 50 MB videos each at once: peak RSS over idle and the
               time to the last submit (--media-messages)

The bot runs in a child process (multiprocessing, spawn) built by ``bot.app.build_app``,
logging at INFO to a file; the fakes and the driver run in this process, so the CPU time
and memory reported for the bot are its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import sys
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bench import sections, storage_bench
from bench.harness import cpu_count
from bench.sections import Row
from bot.domain.service import DEFAULT_MAX_IN_FLIGHT

POSTGRES_ENV = "SEED_BOT_TEST_POSTGRES_URL"
SECTIONS = (
    "delivery",
    "overhead",
    "concurrency",
    "memory",
    "storage",
    "shipped",
    "discord",
    "media",
)


def _ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


def _floats(value: str) -> list[float]:
    return [float(v) for v in value.split(",") if v.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="fewer turns and conversations")
    p.add_argument(
        "--media-messages",
        type=int,
        default=None,
        metavar="N",
        help="media: messages with three 50 MB videos each, sent at once (default 20, quick 5)",
    )
    p.add_argument("--only", default=",".join(SECTIONS), help="sections to run, comma-separated")
    p.add_argument(
        "--postgres",
        default=os.environ.get(POSTGRES_ENV),
        metavar="URL",
        help=f"PostgreSQL server (default ${POSTGRES_ENV}); a scratch database is "
        "created for the run and dropped after",
    )
    p.add_argument(
        "--latencies",
        type=_floats,
        default=[1.0, 10.0],
        help="delivery: model latencies in seconds (default 1,10)",
    )
    p.add_argument(
        "--delivery-turns",
        type=_ints,
        default=None,
        help="delivery: turns per latency (default 40,20; quick 10,6)",
    )
    p.add_argument(
        "--stagger",
        type=float,
        default=0.25,
        help="delivery: seconds between turn starts, so completions do not collide",
    )
    p.add_argument(
        "--histories",
        type=_ints,
        default=[10, 100, 1000],
        help="overhead: history lengths in turns (default 10,100,1000)",
    )
    p.add_argument(
        "--overhead-turns",
        type=int,
        default=None,
        help="overhead: timed turns per history length (default 60; quick 20)",
    )
    p.add_argument(
        "--threads",
        type=_ints,
        default=[100, 500],
        help="concurrency: threads sending at once (default 100,500)",
    )
    p.add_argument(
        "--shipped-cap-threads",
        type=_ints,
        default=None,
        help="concurrency: threads at once with the shipped in-flight cap (default: as "
        "--threads; empty to skip)",
    )
    p.add_argument(
        "--submit-turns",
        type=int,
        default=None,
        help="shipped: lone messages timed (default 40; quick 20)",
    )
    p.add_argument(
        "--rest-turns",
        type=int,
        default=None,
        help="discord: turns per kind of answer (default 5; quick 3)",
    )
    p.add_argument(
        "--burst",
        type=int,
        default=3 * DEFAULT_MAX_IN_FLIGHT,
        help="discord: threads in the burst larger than the in-flight cap (default 3 x the "
        "shipped cap)",
    )
    p.add_argument(
        "--conversations",
        type=int,
        default=None,
        help="memory: conversations to create (default 10000; quick 1000)",
    )
    p.add_argument(
        "--batch-window",
        type=float,
        default=None,
        help="delivery, concurrency: the bot's discord.batch_window_seconds (default: the "
        "bot's own default; overhead always runs with 0)",
    )
    p.add_argument(
        "--tracemalloc",
        action="store_true",
        help="memory: also attribute the growth with tracemalloc (slower; RSS then "
        "includes tracemalloc's own overhead)",
    )
    return p


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
    except OSError:
        return ""
    return names[0] if names else ""


async def machine(postgres: str | None) -> list[str]:
    model = cpu_model()
    lines = [
        f"machine: {cpu_count()} usable cores ({os.cpu_count()} online) {model}",
        f"python {platform.python_version()} ({sys.implementation.name}), "
        f"{platform.system()} {platform.release()}",
        f"sqlite {sqlite3.sqlite_version}",
        f"load average at start: {load_average()} (other work on the machine skews the numbers)",
    ]
    if postgres:
        engine = create_async_engine(postgres, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                version = await conn.scalar(text("SHOW server_version"))
            lines.append(f"postgresql {version}")
        finally:
            await engine.dispose()
    else:
        lines.append(f"postgresql: not used (pass --postgres URL or set {POSTGRES_ENV})")
    return lines


def render(rows: Sequence[Row]) -> str:
    headers = ("section", "case", "metric", "value", "target", "")
    table = [headers] + [(r.section, r.case, r.metric, r.value, r.target, r.verdict) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    out = []
    for n, row in enumerate(table):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


async def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        print(f"unknown sections: {', '.join(sorted(unknown))} (known: {', '.join(SECTIONS)})")
        return 2
    quick = args.quick
    delivery_turns = args.delivery_turns or ([10, 6] if quick else [40, 20])
    overhead_turns = args.overhead_turns or (20 if quick else 60)
    conversations = args.conversations or (1000 if quick else 10_000)
    submit_turns = args.submit_turns or (20 if quick else 40)
    rest_turns = args.rest_turns or (3 if quick else 5)
    shipped_cap_threads = (
        args.threads if args.shipped_cap_threads is None else args.shipped_cap_threads
    )

    print("\n".join(await machine(args.postgres)), flush=True)
    rows: list[Row] = []
    for section in only:
        print(f"... {section}", file=sys.stderr, flush=True)
        if section == "delivery":
            turns = (delivery_turns * len(args.latencies))[: len(args.latencies)]
            rows += await sections.delivery(args.latencies, turns, args.stagger, args.batch_window)
        elif section == "overhead":
            rows += await sections.overhead("sqlite", None, args.histories, overhead_turns)
            if args.postgres:
                rows += await sections.overhead(
                    "postgresql", args.postgres, args.histories, overhead_turns
                )
        elif section == "concurrency":
            rows += await sections.concurrency(args.threads, 2.0, args.batch_window)
            if shipped_cap_threads:
                rows += await sections.concurrency(
                    shipped_cap_threads, 2.0, args.batch_window, cap=None
                )
        elif section == "shipped":
            rows += await sections.submit_latency(submit_turns)
        elif section == "discord":
            rows += await sections.rest_calls(rest_turns)
            rows += await sections.waiting_turns()
            rows += await sections.burst_budget(args.burst)
        elif section == "memory":
            rows += await sections.memory(conversations, wave=100, trace=args.tracemalloc)
        elif section == "media":
            rows += await sections.media(args.media_messages or (5 if quick else 20))
        elif section == "storage":
            storage_args = ["--sizes", ",".join(map(str, args.histories))]
            if args.postgres:
                storage_args += ["--postgres", args.postgres]
            if quick:
                storage_args += ["--repeat", "20"]
            print()
            await storage_bench.main(storage_args)
    print()
    print(render(rows))
    print(f"\nload average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
