"""The bot under measurement, in a process of its own.

The bench runs the real bot (``bot.app.build_app``, the same wiring as ``seed-bot run``) in a
child process so that its CPU time and memory are its own: the fakes and the driver live in
the parent. The parent talks to it over a ``multiprocessing`` pipe with a few commands
(``stats``, ``gc``, ``reset_peak``, ``trace_start``, ``trace_top``, ``connections``,
``trim``, ``sweep``, ``stop``).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import gc
import logging
import os
import time
import tracemalloc
from collections.abc import Mapping, Sized
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

from bot.app import App, build_app
from bot.config import load_config


class _Counter(logging.Handler):
    """Counts WARNING and ERROR records (the bot reports failed turns by logging them)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.warnings = 0
        self.errors = 0
        self.first_error: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.errors += 1
            if self.first_error is None:
                self.first_error = f"{record.name}: {record.getMessage()}"
        else:
            self.warnings += 1


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> None:
    # Linux: "5" resets VmHWM to the current RSS, so the next peak is a burst's own.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_bytes() -> int:
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over exec, so a spawned
    # child would report the parent's peak at fork time as its own.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def count_store_calls(app: App) -> collections.Counter[str]:
    """Count the store's transactions by name (through the transaction helper's observer
    hook): a diagnostic of how many database round trips a turn costs."""
    calls: collections.Counter[str] = collections.Counter()

    def counted(what: str, _write: bool) -> None:
        calls[what] += 1

    app.store.db.observers.append(counted)
    return calls


def held_by_service(service: object) -> int:
    """Entries of the service's per-conversation structures (locks, inboxes or the bursts'
    lines, active turns; whichever this version of the service has): what an idle
    conversation may still hold."""
    total = 0
    for name in ("_locks", "_inboxes", "_bursts", "_active"):
        holder = getattr(service, name, None)
        holder = getattr(holder, "_lines", getattr(holder, "_boxes", holder))
        if isinstance(holder, Sized):
            total += len(holder)
    return total


def stats(app: App, counter: _Counter, store_calls: Mapping[str, int]) -> dict[str, Any]:
    """Cheap counters only: the overhead section reads this around its timed turns, so any
    real measuring work here (walking the heap) would be billed to the bot's turns. The CPU
    clock is read first, before the rest of this function's own work."""
    cpu = time.process_time()
    bot = app.bot
    state = bot._connection
    cached_threads = sum(len(g._threads) for g in bot.guilds)
    messages = state._messages
    return {
        "cpu": cpu,
        "rss": _rss_bytes(),
        "maxrss": _peak_rss_bytes(),
        "warnings": counter.warnings,
        "errors": counter.errors,
        "first_error": counter.first_error,
        "held": held_by_service(app.service),
        "bound_scopes": len(getattr(app.service, "_bound", ())),
        "places_cached": len(getattr(app.store.conversations, "_places", ())),
        "seen_ids": len(getattr(bot.inbound, "_seen", ())),
        "ratelimit_buckets": len(bot.http._buckets),
        "tasks": len(bot._tasks),
        "cached_threads": cached_threads,
        "cached_messages": len(messages) if messages is not None else 0,
        "store_calls": dict(store_calls),
        "traced": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None,
    }


def _heap_stats(app: App, counter: _Counter, store_calls: Mapping[str, int]) -> dict[str, Any]:
    """``stats`` after a full collection, with the count of gc-tracked objects: heap walks
    happen only here (memory section), outside any timed window."""
    gc.collect()
    gc.collect()
    snapshot = stats(app, counter, store_calls)
    snapshot["gc_objects"] = len(gc.get_objects())
    return snapshot


def _idle_connections(app: App) -> int:
    """Connections aiohttp keeps open for reuse in the bot's HTTP session (fal's TLS
    connections: ~270 KiB each until its keep-alive closes them)."""
    conns = getattr(app.session.connector, "_conns", None)
    return sum(len(held) for held in conns.values()) if isinstance(conns, dict) else 0


def _trim() -> bool:
    """glibc's malloc_trim(0), whatever the bot's own code does (so the commit before the
    bot trimmed by itself is measured the same way)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def _sweep(app: App) -> dict[str, int]:
    """What the bot's once-a-minute housekeeping drops after a minute (rate-limit buckets)
    and an hour (threads) of quiet, with the clock moved on that far; nothing in versions
    without it."""
    try:
        from bot.chat.ratelimits import IDLE_BUCKET_SECONDS, sweep_idle_buckets
        from bot.chat.threadcache import IDLE_THREAD_SECONDS, evict_idle_threads
    except ImportError:
        return {"buckets": 0, "threads": 0}
    later = asyncio.get_running_loop().time() + IDLE_BUCKET_SECONDS + 1
    buckets = sweep_idle_buckets(app.bot.http, later)
    an_hour_on = datetime.now(UTC) + timedelta(seconds=IDLE_THREAD_SECONDS + 1)
    return {"buckets": buckets, "threads": evict_idle_threads(app.bot.guilds, an_hour_on)}


def _trace_top(limit: int) -> list[tuple[str, int, int]]:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    out: list[tuple[str, int, int]] = []
    for stat in snapshot.statistics("lineno")[:limit]:
        frame = stat.traceback[0]
        out.append((f"{frame.filename}:{frame.lineno}", stat.size, stat.count))
    return out


async def _serve(env: Mapping[str, str], conn: Connection, status_delay: float | None) -> None:
    counter = _Counter()
    logging.getLogger().addHandler(counter)
    config = load_config(None, env, required_secrets=("discord", "fal"))
    # status_delay None: the shipped default (ChatOptions.status_delay).
    overrides: dict[str, Any] = {} if status_delay is None else {"status_delay": status_delay}
    async with build_app(config, sync_commands=False, guild_ready_timeout=0.0, **overrides) as app:
        store_calls = count_store_calls(app)
        runner = asyncio.create_task(app.bot.start(config.discord.token.get()), name="discord")
        while not app.bot.is_ready():
            if runner.done():
                runner.result()
                raise RuntimeError("the bot stopped before becoming ready")
            await asyncio.sleep(0.01)
        await app.bot.resumed.wait()
        conn.send(("ready", os.getpid()))
        loop = asyncio.get_running_loop()
        while True:
            command, arg = await loop.run_in_executor(None, conn.recv)
            if command == "stop":
                break
            if command == "gc":
                conn.send(_heap_stats(app, counter, store_calls))
            elif command == "reset_peak":
                _reset_peak_rss()
                conn.send(stats(app, counter, store_calls))
            elif command == "stats":
                conn.send(stats(app, counter, store_calls))
            elif command == "trace_start":
                snapshot = _heap_stats(app, counter, store_calls)
                tracemalloc.start(1)
                conn.send(snapshot)
            elif command == "connections":
                conn.send(_idle_connections(app))
            elif command == "trim":
                conn.send(_trim())
            elif command == "sweep":
                conn.send(_sweep(app))
            elif command == "trace_top":
                gc.collect()
                conn.send(_trace_top(int(arg)))
            else:
                conn.send(("unknown", command))
        await app.bot.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    conn.send(("stopped", None))


def main(env: dict[str, str], conn: Connection, log_path: str, status_delay: float | None) -> None:
    """Child entry point: INFO logging to ``log_path`` in ``seed-bot run``'s format, then
    run the bot until the parent says ``stop``. (``SSL_CERT_FILE`` comes from the parent's
    environment: aiohttp reads it when imported, before this function runs.)"""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        filename=log_path,
        force=True,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    asyncio.run(_serve(env, conn, status_delay))
