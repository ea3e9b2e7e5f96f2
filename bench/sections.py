"""The measurements. Each starts its own fakes, database and bot process (``rig``) and
returns table rows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.harness import (
    Answer,
    BotProcess,
    Rig,
    calls_per_request,
    median,
    new_batch_prefix,
    pct,
    requests_by_token,
    rig,
)
from bench.official import run_official
from bot.chat.inbound import SEEN_LIMIT
from bot.domain.service import BOUND_CACHE_SIZE, DEFAULT_MAX_IN_FLIGHT
from bot.storage.conversations import PLACES_CACHED
from tests.fakes.discord.events import HttpRequest
from tests.fakes.discord.models import FakeChannel, GeneratedBytes, UserFile

MS = 1000.0
SEED_AGENT = "seed-bot"
OFFICIAL_AGENT = "fal-client/"


@dataclass(frozen=True, slots=True)
class Row:
    section: str
    case: str
    metric: str
    value: str
    target: str = ""
    verdict: str = ""


OVERHEAD_SPREAD = 5  # threads per history length in the overhead section
CPU_TARGETS = {10: 0.004, 1000: 0.012}  # issue 13: bot CPU per turn by turns of history


def _cpu_target(history: int, cpu: float) -> tuple[str, str]:
    limit = CPU_TARGETS.get(history)
    if limit is None:
        return ("", "")
    return (f"<= {limit * MS:g} ms", _check(cpu, limit))


def _check(value: float, limit: float) -> str:
    return "ok" if value <= limit else "MISSED"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def _ms(seconds: float) -> str:
    return f"{seconds * MS:.1f} ms"


# --- 1. fal calls and delivery delay ---------------------------------------------------------


def _bot_env(batch_window: float | None) -> dict[str, str]:
    if batch_window is None:
        return {}
    return {"SEED_BOT_DISCORD__BATCH_WINDOW_SECONDS": f"{batch_window:g}"}


async def delivery(
    latencies: Sequence[float],
    turns: Sequence[int],
    stagger: float,
    batch_window: float | None = None,
) -> list[Row]:
    rows: list[Row] = []
    async with rig() as r:
        await r.start_bot(env=_bot_env(batch_window))
        for latency, count in zip(latencies, turns, strict=True):
            rows += await _delivery_batch(r, latency, count, stagger)
    return rows


async def _delivery_batch(r: Rig, latency: float, count: int, stagger: float) -> list[Row]:
    r.fal.model_latency = latency
    threads = await r.bound_threads(count)
    await r.fake.sync_gateway(timeout=30)
    ours, theirs = new_batch_prefix(), new_batch_prefix()
    official = asyncio.create_task(
        run_official(r.fal, str(r.ca_pem), theirs, count, stagger, timeout=latency + 120)
    )
    sent = []
    for i, thread in enumerate(threads):
        message, _ = await r.say(thread, f"hello {ours}{i}")
        sent.append(message.id)
        await asyncio.sleep(stagger)
    await r.fake.wait_answers(sent, timeout=latency + 60)
    their_results = await official
    by_token = requests_by_token(r.fal)

    delays: list[float] = []
    reaction: list[float] = []  # COMPLETED -> our result GET reaches fal
    failed = 0
    our_ids: list[str] = []
    result_calls = {
        c.path.split("/")[-1]: c.time
        for c in r.fal.calls
        if c.route == "result" and c.headers.get("User-Agent", "").startswith(SEED_AGENT)
    }
    for i, message_id in enumerate(sent):
        request = by_token.get(f"{ours}{i}")
        answer: Answer | None = r.fake.answers.get(message_id)
        if request is None or answer is None or not answer.ok or request.completed_at is None:
            failed += 1
            continue
        our_ids.append(request.id)
        delays.append(answer.stamp - request.completed_at)
        if request.id in result_calls:
            reaction.append(result_calls[request.id] - request.completed_at)
    their_delays: list[float] = []
    their_ids: list[str] = []
    for item in their_results:
        request = by_token.get(str(item["token"]))
        if request is None or request.completed_at is None or not item["ok"]:
            continue
        their_ids.append(request.id)
        their_delays.append(float(item["done"]) - request.completed_at)
    our_calls = calls_per_request(r.fal, our_ids, SEED_AGENT)
    their_calls = calls_per_request(r.fal, their_ids, OFFICIAL_AGENT)

    case = f"{latency:g} s model, {count} turns"
    ours_med, ours_p99 = median(delays), pct(delays, 99)
    theirs_med = median(their_delays)
    calls_max = max(our_calls, default=0)
    return [
        Row(
            "1 delivery",
            case,
            "bot: fal calls/turn (mean, max)",
            f"{sum(our_calls) / max(1, len(our_calls)):.2f}, {calls_max}",
            "<= 4",
            _check(calls_max, 4),
        ),
        Row(
            "1 delivery",
            case,
            "official: fal calls/request (mean, max)",
            f"{sum(their_calls) / max(1, len(their_calls)):.2f}, {max(their_calls, default=0)}",
        ),
        Row(
            "1 delivery",
            case,
            "bot: COMPLETED -> answer in Discord, median",
            _ms(ours_med),
            "<= 20 ms",
            _check(ours_med, 0.020),
        ),
        Row(
            "1 delivery",
            case,
            "bot: COMPLETED -> answer in Discord, p99",
            _ms(ours_p99),
            "<= 100 ms",
            _check(ours_p99, 0.100),
        ),
        Row(
            "1 delivery",
            case,
            "bot: COMPLETED -> result GET at fal, median / p99",
            f"{_ms(median(reaction))} / {_ms(pct(reaction, 99))}",
        ),
        Row(
            "1 delivery",
            case,
            "official: COMPLETED -> result in hand, median / p99",
            f"{_ms(theirs_med)} / {_ms(pct(their_delays, 99))}",
        ),
        Row(
            "1 delivery",
            case,
            "ratio official/bot (median delay; calls)",
            f"{theirs_med / ours_med:.1f}x; {_mean(their_calls) / _mean(our_calls):.1f}x",
        ),
        Row(
            "1 delivery",
            case,
            "failed turns (bot / official)",
            f"{failed} / {count - len(their_delays)}",
            "0",
            _check(failed, 0),
        ),
    ]


# --- 2. overhead and CPU per turn against history length -------------------------------------


async def overhead(
    backend: str, postgres: str | None, histories: Sequence[int], turns: int
) -> list[Row]:
    rows: list[Row] = []
    costs: dict[int, float] = {}
    async with rig(backend, postgres) as r:
        # The bot's own work, not its deliberate waits: no batching window (in versions
        # that have one; an unknown setting in the environment is ignored).
        bot = await r.start_bot(env={"SEED_BOT_DISCORD__BATCH_WINDOW_SECONDS": "0"})
        for history in histories:
            # Each timed turn adds a turn to its thread's history: spread the turns over a
            # few threads so the history stays near ``history`` (one thread taking all 60
            # turns would measure "10 turns of history" at 10 to 73).
            threads = await r.bound_threads(OVERHEAD_SPREAD, history)
            await r.fake.sync_gateway(timeout=30)
            prefix = new_batch_prefix()
            # warm-up: pools, caches, first-use imports; each thread once (its scope is then
            # in the service's bound-scope cache, as a busy thread's is)
            for i in range(max(3, len(threads))):
                await _one_turn(r, threads[i % len(threads)], f"warm {prefix}w{i}")
            before = await bot.command("stats")
            driver_before = time.process_time()
            wall_before = time.perf_counter()
            sent_at: dict[str, float] = {}
            answers: dict[str, Answer] = {}
            for i in range(turns):
                token = f"{prefix}{i}"
                thread = threads[i % len(threads)]
                sent_at[token], answers[token] = await _one_turn(r, thread, f"hello {token}")
            wall = time.perf_counter() - wall_before
            driver_cpu = time.process_time() - driver_before
            after = await bot.command("stats")
            bot_cpu = (after["cpu"] - before["cpu"]) / turns
            costs[history] = bot_cpu
            pre, post = _overhead_split(r, sent_at, answers)
            store_calls = _per_turn(before["store_calls"], after["store_calls"], turns)
            case = f"{backend}, {history} turns of history"
            rows += [
                Row(
                    "2 overhead",
                    case,
                    "bot CPU per turn (child process)",
                    _ms(bot_cpu),
                    *_cpu_target(history, bot_cpu),
                ),
                Row(
                    "2 overhead",
                    case,
                    "fakes+driver CPU per turn (parent, not counted)",
                    _ms(driver_cpu / turns),
                ),
                Row(
                    "2 overhead",
                    case,
                    "message sent -> fal submit, median / p99",
                    f"{_ms(median(pre))} / {_ms(pct(pre, 99))}",
                ),
                Row(
                    "2 overhead",
                    case,
                    "result GET -> reply in Discord, median / p99",
                    f"{_ms(median(post))} / {_ms(pct(post, 99))}",
                ),
                Row("2 overhead", case, "wall per sequential turn (0 s model)", _ms(wall / turns)),
                Row(
                    "2 overhead",
                    case,
                    "store transactions per turn (costs on, as shipped)",
                    f"{sum(store_calls.values()):.1f} ("
                    + ", ".join(f"{k} {v:g}" for k, v in sorted(store_calls.items()))
                    + ")",
                    "<= 4",
                    _check(sum(store_calls.values()), 4),
                ),
            ]
            if after["errors"] != before["errors"]:
                rows.append(
                    Row(
                        "2 overhead",
                        case,
                        "bot errors logged",
                        str(after["errors"] - before["errors"]),
                        "0",
                        "MISSED",
                    )
                )
    if histories and min(histories) in costs and max(histories) in costs:
        small, large = min(histories), max(histories)
        ratio = costs[large] / costs[small]
        rows.append(
            Row(
                "2 overhead",
                f"{backend}",
                f"CPU/turn {large} vs {small} turns of history",
                f"{ratio:.2f}x",
            )
        )
    return rows


async def _one_turn(r: Rig, thread: FakeChannel, text: str) -> tuple[float, Answer]:
    """Send ``text`` in ``thread`` and wait for the answer; (sent time, answer)."""
    message, sent = await r.say(thread, text)
    await r.fake.wait_answers([message.id], timeout=30)
    answer = r.fake.answers.get(message.id)
    if answer is None or not answer.ok:
        raise RuntimeError(f"turn {text!r} got no answer: {answer}")
    return sent, answer


def _per_turn(before: dict[str, int], after: dict[str, int], turns: int) -> dict[str, float]:
    return {k: (v - before.get(k, 0)) / turns for k, v in after.items() if v != before.get(k, 0)}


def _overhead_split(
    r: Rig, sent_at: dict[str, float], answers: dict[str, Answer]
) -> tuple[list[float], list[float]]:
    by_token = requests_by_token(r.fal)
    submit_at: dict[str, float] = {}
    result_at: dict[str, float] = {}
    for call in r.fal.calls:
        if not call.headers.get("User-Agent", "").startswith(SEED_AGENT):
            continue
        if call.route == "submit" and isinstance(call.json, dict):
            prompt = str(call.json.get("prompt", ""))
            for token in sent_at:
                if prompt.endswith(token):
                    submit_at.setdefault(token, call.time)
        elif call.route == "result":
            result_at.setdefault(call.path.split("/")[-1], call.time)
    pre: list[float] = []
    post: list[float] = []
    for token, sent in sent_at.items():
        request = by_token.get(token)
        answer = answers.get(token)
        if token in submit_at:
            pre.append(submit_at[token] - sent)
        if request is not None and answer is not None and request.id in result_at:
            post.append(answer.stamp - result_at[request.id])
    return pre, post


# --- 3. concurrency -------------------------------------------------------------------------


RAISED_CAP = 2000
CAP_KEY = "SEED_BOT_LIMITS__MAX_IN_FLIGHT"


async def concurrency(
    counts: Sequence[int],
    latency: float,
    batch_window: float | None = None,
    cap: int | None = RAISED_CAP,
) -> list[Row]:
    """``cap`` None: the shipped ``limits.max_in_flight``."""
    rows: list[Row] = []
    label = f"cap {cap} (raised)" if cap is not None else f"cap {DEFAULT_MAX_IN_FLIGHT} (shipped)"
    shown_cap = cap if cap is not None else DEFAULT_MAX_IN_FLIGHT
    env: dict[str, str | None] = {**_bot_env(batch_window), CAP_KEY: None}
    if cap is not None:
        env[CAP_KEY] = str(cap)
    async with rig() as r:
        bot = await r.start_bot(env=env)
        r.fal.model_latency = latency
        for count in counts:
            threads = await r.bound_threads(count)
            await r.fake.sync_gateway(timeout=60)
            before = await bot.command("reset_peak")
            prefix = new_batch_prefix()
            start = time.monotonic()
            ids = []
            for i, thread in enumerate(threads):
                message, _ = await r.say(thread, f"hello {prefix}{i}")
                ids.append(message.id)
            sent = time.monotonic() - start
            await r.fake.wait_answers(ids, timeout=latency + 120)
            answers = [r.fake.answers.get(i) for i in ids]
            stamps = [a.stamp for a in answers if a is not None]
            wall = max(stamps) - start if stamps else float("nan")
            bad = sum(1 for a in answers if a is None or not a.ok)
            after = await bot.command("stats")
            errors = bad + after["errors"] - before["errors"]
            case = f"{count} threads at once, {latency:g} s model, {label}"
            raised = cap is not None and count >= 500
            # What the cap alone allows: ceil(count / cap) waves of one model call each.
            floor = -(-count // shown_cap) * latency
            rows += [
                Row(
                    "3 concurrency",
                    case,
                    "wall until all answered",
                    f"{wall:.2f} s",
                    "<= 4 s" if raised else "",
                    _check(wall, 4.0) if raised else "",
                ),
                Row(
                    "3 concurrency",
                    case,
                    "floor set by the cap (ceil(threads/cap) x model time)",
                    f"{floor:.1f} s",
                ),
                Row(
                    "3 concurrency",
                    case,
                    "errors (missing/failed answers + ERROR logs)",
                    str(errors),
                    "0",
                    _check(errors, 0),
                ),
                Row(
                    "3 concurrency",
                    case,
                    "peak RSS of the bot during the burst",
                    f"{after['maxrss'] / 2**20:.1f} MiB (RSS before {before['rss'] / 2**20:.1f})",
                ),
                Row(
                    "3 concurrency",
                    case,
                    "bot CPU for the burst (per turn)",
                    f"{after['cpu'] - before['cpu']:.2f} s "
                    f"({(after['cpu'] - before['cpu']) / count * MS:.2f} ms)",
                ),
                Row("3 concurrency", case, "time to send all messages (driver)", _ms(sent)),
            ]
            if after["first_error"] and not before["first_error"]:
                rows.append(Row("3 concurrency", case, "first error", after["first_error"][:90]))
    return rows


# --- 5. what a user sees with the shipped config ----------------------------------------------

SHIPPED_ENV: dict[str, str | None] = {
    # Nothing but the shipped defaults: batch window, status delay, in-flight cap. (Quotas
    # stay off: the driver is one user sending more than the default 30 an hour.)
    "SEED_BOT_DISCORD__BATCH_WINDOW_SECONDS": None,
    CAP_KEY: None,
}


async def submit_latency(samples: int, model: float = 0.05, read_pause: float = 0.5) -> list[Row]:
    """A lone message -> its fal submit, shipped defaults: one person in a bound thread (10
    turns of history) sending a message, waiting for the answer, reading it for
    ``read_pause`` s, sending the next (so no message is part of a burst)."""
    async with rig() as r:
        await r.start_bot(env=SHIPPED_ENV)
        r.fal.model_latency = model
        (thread,) = await r.bound_threads(1, 10)
        await r.fake.sync_gateway(timeout=30)
        prefix = new_batch_prefix()
        for i in range(3):  # warm-up
            await _one_turn(r, thread, f"warm {prefix}w{i}")
            await asyncio.sleep(read_pause)
        sent_at: dict[str, float] = {}
        answers: dict[str, Answer] = {}
        for i in range(samples):
            token = f"{prefix}{i}"
            sent_at[token], answers[token] = await _one_turn(r, thread, f"hello {token}")
            await asyncio.sleep(read_pause)
        pre, _ = _overhead_split(r, sent_at, answers)
    case = f"lone message, shipped defaults (batch window 1.5 s), {samples} turns"
    med = median(pre)
    return [
        Row(
            "6 shipped",
            case,
            "message -> fal submit, median",
            _ms(med),
            "<= 20 ms",
            _check(med, 0.020),
        ),
        Row("6 shipped", case, "message -> fal submit, p99", _ms(pct(pre, 99))),
        Row("6 shipped", case, "submits seen", f"{len(pre)} of {samples}"),
    ]


REST_KINDS = (
    # (label, model seconds, prompt length in characters)
    ("fast one-part answer (0.05 s model)", 0.05, 0),
    ("slow answer, status shown (3.5 s model)", 3.5, 0),
    ("multi-part answer (0.05 s model, ~3,500-char echo)", 0.05, 3500),
)


async def rest_calls(turns: int, settle: float = 1.0) -> list[Row]:
    """Discord REST calls per turn, from the fake Discord's event log, shipped defaults:
    each turn in a thread of its own (bound, 10 turns of history), one at a time; a turn's
    calls are the requests naming its thread, counted once nothing new has come for
    ``settle`` s after the answer (later parts, the typing indicator's end)."""
    rows: list[Row] = []
    async with rig() as r:
        await r.start_bot(env=SHIPPED_ENV)
        threads = await r.bound_threads(turns * len(REST_KINDS), 10)
        await r.fake.sync_gateway(timeout=30)
        await _one_turn(r, threads[0], "warm-up")  # first-use costs; its thread is not counted
        await _quiet(r, settle)
        spare = iter(threads[1:])
        for label, model, length in REST_KINDS:
            r.fal.model_latency = model
            per_turn: list[int] = []
            routes: dict[str, int] = {}
            other = 0
            for n in range(turns):
                thread = next(spare, None) or (await r.bound_threads(1, 10))[0]
                mark = r.fake.mark()
                text = f"hello {new_batch_prefix()}{n}"
                if length:
                    text += " " + "lorem ipsum " * (length // 12)
                await _one_turn(r, thread, text)
                await _quiet(r, settle)
                mine = 0
                for event in r.fake.events_of(HttpRequest, since=mark):
                    if f"/channels/{thread.id}" in event.path:
                        mine += 1
                        key = event.route or f"{event.method} {event.path}"
                        routes[key] = routes.get(key, 0) + 1
                    else:
                        other += 1
                per_turn.append(mine)
            fast = label.startswith("fast")
            rows.append(
                Row(
                    "7 discord",
                    label,
                    f"REST calls per turn (mean, max; {turns} turns)",
                    f"{_mean(per_turn):.2f}, {max(per_turn)}",
                    "<= 1" if fast else "",
                    _check(max(per_turn), 1) if fast else "",
                )
            )
            rows.append(
                Row(
                    "7 discord",
                    label,
                    "  by route (per turn)",
                    "; ".join(f"{k} {v / turns:g}" for k, v in sorted(routes.items()))
                    + (f"; not naming the thread: {other / turns:g}" if other else ""),
                )
            )
    return rows


# Issue 23: Discord allows a bot token about 50 REST requests a second, over all its shards
# and processes; that, not CPU, is what limits one token's turns per second.
TOKEN_REQUESTS_PER_SECOND = 50
WAIT_CAP, WAITING_TURNS = 2, 10  # issue 23's case: ten turns waiting for two slots
BURST_MODEL = 3.0


def _thread_of(event: HttpRequest) -> str | None:
    """The channel a REST request names (``/channels/{id}/...``), if any."""
    _, found, rest = event.path.partition("/channels/")
    return rest.split("/", 1)[0] if found else None


def _kind(event: HttpRequest) -> str:
    route = event.route or f"{event.method} {event.path}"
    if route.endswith("/typing"):
        return "typing"
    if route == "POST /channels/{channel_id}/messages":
        return "message posted"
    if route == "PATCH /channels/{channel_id}/messages/{message_id}":
        return "message edited"
    return route


async def waiting_turns(window: float = 15.0) -> list[Row]:
    """Issue 23's case: in-flight cap 2, two turns running (fal holds them), ten more sent
    to threads of their own; the requests naming those ten threads over ``window`` s, while
    nothing can run for them. Then everything is let go and answered."""
    async with rig() as r:
        await r.start_bot(env={**SHIPPED_ENV, CAP_KEY: str(WAIT_CAP)})
        threads = await r.bound_threads(WAIT_CAP + WAITING_TURNS, 10)
        await r.fake.sync_gateway(timeout=30)
        r.fal.hold()
        prefix = new_batch_prefix()
        ids = [(await r.say(t, f"run {prefix}{i}"))[0].id for i, t in enumerate(threads[:WAIT_CAP])]
        await r.fal.wait_for(lambda: len(r.fal.requests) >= WAIT_CAP, timeout=30)
        mark = r.fake.mark()
        waiting = threads[WAIT_CAP:]
        for i, thread in enumerate(waiting):
            ids.append((await r.say(thread, f"wait {prefix}{i}"))[0].id)
        await asyncio.sleep(window)  # the measuring window itself
        ours = {str(t.id) for t in waiting}
        kinds: dict[str, int] = {}
        posted: dict[str, int] = {}
        for event in r.fake.events_of(HttpRequest, since=mark):
            if (thread_id := _thread_of(event)) in ours:
                kind = _kind(event)
                kinds[kind] = kinds.get(kind, 0) + 1
                if kind == "message posted":
                    posted[str(thread_id)] = posted.get(str(thread_id), 0) + 1
        still_waiting = len(r.fal.requests) == WAIT_CAP
        r.fal.unhold()
        await r.fake.wait_answers(ids, timeout=120)
        answered = sum(1 for i in ids if (a := r.fake.answers.get(i)) is not None and a.ok)
    case = f"{WAITING_TURNS} turns waiting for {WAIT_CAP} slots (fal holds the running two)"
    typing = kinds.get("typing", 0)
    most = max(posted.values(), default=0)
    return [
        Row(
            "7 discord",
            case,
            f"typing requests of the waiting turns in {window:g} s",
            str(typing),
            "0",
            _check(typing, 0),
        ),
        Row(
            "7 discord",
            case,
            "status messages per waiting turn (total; most in one thread)",
            f"{sum(posted.values())}; {most}",
            "<= 1 per turn",
            _check(most, 1),
        ),
        Row(
            "7 discord",
            case,
            "  all their requests in the window, by kind",
            "; ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "none",
        ),
        Row(
            "7 discord",
            case,
            "still waiting when counted / answered after",
            f"{'yes' if still_waiting else 'NO'} / {answered} of {len(ids)}",
        ),
    ]


async def burst_budget(count: int, model: float = BURST_MODEL) -> list[Row]:
    """A burst larger than the shipped cap: ``count`` bound threads get one message each at
    once, ``model`` s model, shipped defaults. Every request naming those threads, once the
    log is quiet, per turn; and the turns per second one token's request budget sustains at
    that rate."""
    async with rig() as r:
        await r.start_bot(env=SHIPPED_ENV)
        r.fal.model_latency = model
        threads = await r.bound_threads(count + 1, 10)
        await r.fake.sync_gateway(timeout=60)
        await _one_turn(r, threads[0], "warm-up")
        await _quiet(r, 1.0)
        mark = r.fake.mark()
        prefix = new_batch_prefix()
        start = time.monotonic()
        ids = [(await r.say(t, f"hello {prefix}{i}"))[0].id for i, t in enumerate(threads[1:])]
        await r.fake.wait_answers(ids, timeout=count * model + 120)
        stamps = [a.stamp for i in ids if (a := r.fake.answers.get(i)) is not None]
        wall = max(stamps) - start if stamps else float("nan")
        await _quiet(r, 1.0)
        ours = {str(t.id) for t in threads[1:]}
        kinds: dict[str, int] = {}
        for event in r.fake.events_of(HttpRequest, since=mark):
            if _thread_of(event) in ours:
                kind = _kind(event)
                kinds[kind] = kinds.get(kind, 0) + 1
    per_turn = sum(kinds.values()) / count
    case = (
        f"burst of {count} threads at once, {model:g} s model, shipped cap {DEFAULT_MAX_IN_FLIGHT}"
    )
    return [
        Row(
            "7 discord", case, "REST calls per turn (all of the burst's / turns)", f"{per_turn:.2f}"
        ),
        Row(
            "7 discord",
            case,
            "  by kind (per turn)",
            "; ".join(f"{k} {v / count:.2f}" for k, v in sorted(kinds.items())),
        ),
        Row(
            "7 discord",
            case,
            f"turns/s one token sustains within {TOKEN_REQUESTS_PER_SECOND} requests/s",
            f"{TOKEN_REQUESTS_PER_SECOND / per_turn:.1f}",
        ),
        Row(
            "7 discord",
            case,
            "wall until all answered (floor set by the cap)",
            f"{wall:.1f} s ({-(-count // DEFAULT_MAX_IN_FLIGHT) * model:g} s)",
        ),
    ]


async def _quiet(r: Rig, settle: float) -> None:
    """Until the fake Discord has logged nothing new for ``settle`` seconds (at most 30 s)."""
    for _ in range(max(1, int(30 / settle))):
        mark = r.fake.mark()
        await asyncio.sleep(settle)
        if r.fake.mark() == mark:
            return


# --- 4. memory per idle conversation ---------------------------------------------------------


# The stages of a memory checkpoint, in order; each is measured after the previous.
STAGES = (
    "2 s after the last wave (gc)",
    "idle connections closed",
    "heap trimmed (malloc_trim)",
    "idle buckets and threads swept",
)
# What each stage takes away (the difference with the one before it).
CAUSES = (
    "idle TLS connections to fal (until aiohttp's 15 s keep-alive closes them)",
    "heap freed but held by glibc after the waves",
    "discord.py's rate-limit buckets and thread cache (the bot's sweeps)",
)
CONNECTIONS_WAIT = 45.0  # aiohttp closes an idle connection within 2 x 15 s
MEMORY_TARGET = 1.5 * 1024  # issue 23: RSS per idle conversation, bytes


async def _checkpoint(bot: BotProcess) -> list[dict[str, Any]]:
    """The bot's stats at each of ``STAGES``: as the conversations went idle, once aiohttp
    has closed its idle connections, after a heap trim, after the sweeps the bot's
    housekeeping makes after a minute (buckets) and an hour (threads) of quiet (the clock
    moved on; versions without them sweep nothing)."""
    await asyncio.sleep(2.0)  # let every turn's tasks finish: the conversations go idle
    stages = [await bot.command("gc")]
    for _ in range(int(CONNECTIONS_WAIT)):
        if await bot.command("connections") == 0:
            break
        await asyncio.sleep(1.0)
    stages.append(await bot.command("gc"))
    await bot.command("trim")
    stages.append(await bot.command("gc"))
    swept = await bot.command("sweep")
    await bot.command("gc")
    await bot.command("trim")
    stages.append({**await bot.command("gc"), "swept": swept})
    return stages


async def memory(conversations: int, wave: int, trace: bool) -> list[Row]:
    """RSS per idle conversation: the slope between two checkpoints (after half of the
    conversations and after all), at each of ``STAGES``, so one-time growth (SQLite page
    caches, pools, arenas) and what is not the conversations' (idle connections, heap held
    after a burst) are told apart from what each idle conversation keeps."""
    rows: list[Row] = []
    async with rig() as r:
        bot = await r.start_bot()
        r.fal.model_latency = 0.0
        await _start_conversations(r, 20, wave)  # warm-up: first-use allocations, pools
        base = (await _checkpoint(bot))[-1]
        if trace:
            await bot.command("trace_start")
        half = conversations // 2
        await _start_conversations(r, half, wave)
        first = await _checkpoint(bot)
        await _start_conversations(r, conversations - half, wave)
        second = await _checkpoint(bot)
        after = second[-1]
        count = conversations - half
        case = (
            f"{conversations} conversations (started by mention: thread + 1 turn), slope "
            f"{half} -> {conversations}"
        )
        # The clean figure: both checkpoints fully settled. What each stage took away at the
        # second checkpoint, per conversation of its half, is what a reading taken before
        # it would have put on each conversation.
        slope = (after["rss"] - first[-1]["rss"]) / count
        rows += [
            Row("4 memory", case, "RSS fresh bot (warm-up, settled)", _mib(base["rss"])),
            Row("4 memory", case, "RSS after, idle, settled", _mib(after["rss"])),
            Row(
                "4 memory",
                case,
                "RSS per idle conversation: slope between the checkpoints, settled (idle "
                "connections closed, heap trimmed, swept)",
                f"{slope / 1024:.2f} KiB",
                "<= 1.5 KiB",
                _check(slope, MEMORY_TARGET),
            ),
        ]
        for cause, before, then in zip(CAUSES, second, second[1:], strict=False):
            drop = (before["rss"] - then["rss"]) / count
            rows.append(
                Row("4 memory", case, f"  + read before: {cause}", f"{drop / 1024:.2f} KiB")
            )
        naive = (second[0]["rss"] - first[-1]["rss"]) / count
        rows.append(
            Row(
                "4 memory",
                case,
                "  = read 2 s after the last wave (gc only)",
                f"{naive / 1024:.2f} KiB",
            )
        )
        for label, key in (
            ("rate-limit buckets", "ratelimit_buckets"),
            ("threads", "cached_threads"),
        ):
            rows.append(
                Row(
                    "4 memory",
                    case,
                    f"discord.py {label} held at the end: before the sweep / after",
                    f"{second[-2][key]} / {after[key]}",
                )
            )
        rows += [
            Row(
                "4 memory",
                case,
                "bot-owned: service per-conversation entries (locks, inboxes, active) / tasks",
                f"{after['held']} / {after['tasks']}",
                "0 when idle",
                _check(after["held"] + after["tasks"], 0),
            ),
            Row(
                "4 memory",
                case,
                "bot-owned bounded caches: bound scopes / store places / seen message ids",
                f"{after['bound_scopes']} (cap {BOUND_CACHE_SIZE}) / {after['places_cached']} "
                f"(cap {PLACES_CACHED}) / {after['seen_ids']} (cap {SEEN_LIMIT})",
                "bounded",
                "ok"
                if after["bound_scopes"] <= BOUND_CACHE_SIZE
                and after["places_cached"] <= PLACES_CACHED
                and after["seen_ids"] <= SEEN_LIMIT
                else "MISSED",
            ),
            Row(
                "4 memory",
                case,
                "discord.py cached messages",
                f"{after['cached_messages']}",
            ),
            Row(
                "4 memory",
                case,
                "gc-tracked objects per conversation (slope)",
                f"{(after['gc_objects'] - first[-1]['gc_objects']) / count:.1f}",
            ),
        ]
        if trace and after["traced"] is not None:
            traced = after["traced"] / conversations
            rows.append(
                Row(
                    "4 memory",
                    case,
                    "tracemalloc: live bytes per conversation",
                    f"{traced / 1024:.2f} KiB",
                )
            )
            for where, size, blocks in await bot.command("trace_top", 8):
                rows.append(
                    Row(
                        "4 memory",
                        case,
                        f"  top: {where[-60:]}",
                        f"{size / conversations:.0f} B/conv ({blocks} blocks)",
                    )
                )
    return rows


async def _start_conversations(r: Rig, count: int, wave: int) -> None:
    prefix = new_batch_prefix()
    done = 0
    while done < count:
        size = min(wave, count - done)
        ids = []
        for i in range(done, done + size):
            message, _ = await r.mention(f"hi {prefix}{i}")
            ids.append(message.id)  # the thread made from a message has the message's id
        await r.fake.wait_answers(ids, timeout=120)
        missing = [i for i in ids if i not in r.fake.answers or not r.fake.answers[i].ok]
        if missing:
            raise RuntimeError(f"{len(missing)} conversations got no answer")
        done += size


# --- 5. media: many large videos at once -------------------------------------------------------

VIDEO_BYTES = 50 * 1024 * 1024  # the shipped largest video
VIDEOS_PER_MESSAGE = 3
MEDIA_PEAK_TARGET = 256 * 2**20  # issue 23: peak RSS over idle


async def media(messages: int) -> list[Row]:
    """``messages`` mentions, each with three 50 MB videos, sent at once: the bot's peak RSS
    over its idle RSS, and the time from the first message sent to the last request
    submitted. The fake CDN makes the videos up as it serves them and the fake fal storage
    counts their bytes without keeping them, so the fakes hold none of it."""
    rows: list[Row] = []
    case = f"{messages} messages x {VIDEOS_PER_MESSAGE} x 50 MB videos at once"
    async with rig() as r:
        r.fal.keep_uploads = False
        bot = await r.start_bot()
        prefix = new_batch_prefix()
        warm, _ = await r.mention(f"warm-up {prefix}w")  # first-use allocations, pools
        await r.fake.wait_answers([warm.id], timeout=60)
        idle = await bot.command("gc")
        await bot.command("reset_peak")
        before = len(r.fal.requests)
        files = [
            UserFile(f"clip{n}.mp4", GeneratedBytes(VIDEO_BYTES)) for n in range(VIDEOS_PER_MESSAGE)
        ]
        first_sent = time.monotonic()
        ids = []
        for i in range(messages):
            message = await r.fake.send_message(
                r.alice,
                r.world.channel,
                f"<@{r.fake.bot_user.id}> what happens in these? {prefix}{i}",
                files=files,
            )
            ids.append(message.id)
        await r.fake.wait_answers(ids, timeout=1800)
        after = await bot.command("stats")
        requests = list(r.fal.requests.values())[before:]
        answered = [i for i in ids if i in r.fake.answers and r.fake.answers[i].ok]
        with_videos = [q for q in requests if len(q.input.get("video_urls") or ()) == 3]
        last_submit = max((q.submitted_at for q in requests), default=float("nan"))
        peak = after["maxrss"] - idle["rss"]
        rows += [
            Row("5 media", case, "RSS idle (after warm-up, gc)", f"{idle['rss'] / 2**20:.1f} MiB"),
            Row(
                "5 media",
                case,
                "peak RSS over idle",
                f"{peak / 2**20:.1f} MiB",
                "<= 256 MiB",
                _check(peak, MEDIA_PEAK_TARGET),
            ),
            Row(
                "5 media",
                case,
                "first message sent -> last request submitted",
                f"{last_submit - first_sent:.1f} s",
            ),
            Row(
                "5 media",
                case,
                "answered / with all 3 videos / bytes stored at fal",
                f"{len(answered)}/{messages} / {len(with_videos)} / "
                f"{r.fal.uploaded_bytes / 2**30:.2f} GiB",
            ),
        ]
    return rows
