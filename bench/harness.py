"""The driver's side of the bench: the fakes (in this process), the bot (in a child process),
and the bookkeeping that turns their records into per-turn timings."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import re
import ssl
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import trustme
from yarl import URL

from bench import botproc
from bench.storage_bench import scratch_postgres
from bot.chat import texts
from bot.domain.models import ChatMessage, ModelReply, NewConversation, NewTurn
from bot.storage import Repositories, create_engine, sql_repositories
from bot.storage.migrate import upgrade
from tests.fakes.discord.events import Event, MessageCreated, MessageEdited
from tests.fakes.discord.models import FakeChannel, FakeMessage, FakeUser
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.discord.standard import StandardWorld, build_standard_world
from tests.fakes.fal import DEFAULT_KEY, FakeFal, FakeRequest

ANSWER_MARK = "echo:"
REASONING_MARK = "**Reasoning**"
# How a status message starts (queued at fal, waiting for a slot): not an answer yet.
_STATUS = (
    texts.status_running(),
    texts.status_queued(None)[:15],
    texts.status_waiting(None)[:20],
)


@dataclass(frozen=True, slots=True)
class Answer:
    stamp: float  # time.monotonic() when the fake Discord received it
    ok: bool
    content: str


class TimedFakeDiscord(FakeDiscord):
    """The fake Discord, remembering when the first part of the bot's answer to each user
    message arrived (a new message, or a status message edited into the answer)."""

    def __init__(self) -> None:
        # Payload validation is a test aid; it would only slow the fake down here.
        super().__init__(validate_payloads=False)
        self.answers: dict[int, Answer] = {}
        self._answered = asyncio.Event()

    def record(self, event: Event) -> None:
        super().record(event)
        if isinstance(event, MessageCreated | MessageEdited) and event.by_bot:
            message = event.message if isinstance(event, MessageCreated) else event.after
            # Keyed by the user's message: a reply in a bound thread references it; a new
            # conversation's thread is made from it and so has its id.
            reference = message.message_reference or {}
            key = int(reference.get("message_id") or message.channel_id)
            if key in self.answers:
                return  # later parts of an answer
            content = message.content or ""
            # The first part of an answer is the model's reasoning (spoilered) or its output;
            # failures are short notices starting with a warning sign.
            ok = ANSWER_MARK in content or content.startswith(REASONING_MARK)
            if ok or not content.startswith(_STATUS):
                self.answers[key] = Answer(time.monotonic(), ok, content)
                self._answered.set()
                self._answered = asyncio.Event()

    async def wait_answers(self, messages: Sequence[int], timeout: float) -> float:
        """Wait until every user message (by id) has an answer (or ``timeout``); return the
        time waited."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + timeout
        pending = [m for m in messages if m not in self.answers]
        while pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            event = self._answered
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await event.wait()
            pending = [m for m in pending if m not in self.answers]
        return loop.time() - start


class BotProcess:
    """The real bot in a child process, with a command pipe."""

    def __init__(self, env: dict[str, str], log_path: Path, status_delay: float | None) -> None:
        self._env = env
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._child_conn: Connection = child
        self.process = ctx.Process(
            target=botproc.main,
            args=(env, child, str(log_path), status_delay),
            name="seed-bot-bench",
            daemon=True,
        )
        self.pid = 0

    async def _recv(self, timeout: float = 120.0) -> Any:
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, self._conn.poll, timeout)
        if not ready:
            raise TimeoutError("the bot process did not answer")
        return self._conn.recv()

    async def start(self) -> None:
        # aiohttp builds its default SSL context when imported, before the child could set
        # SSL_CERT_FILE itself: the child inherits it from this process at spawn time.
        previous = os.environ.get("SSL_CERT_FILE")
        os.environ["SSL_CERT_FILE"] = self._env["SSL_CERT_FILE"]
        try:
            self.process.start()
        finally:
            if previous is None:
                del os.environ["SSL_CERT_FILE"]
            else:
                os.environ["SSL_CERT_FILE"] = previous
        self._child_conn.close()
        kind, pid = await self._recv()
        assert kind == "ready", kind
        self.pid = int(pid)

    async def command(self, name: str, arg: object = None) -> Any:
        self._conn.send((name, arg))
        return await self._recv()

    async def stop(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(OSError, TimeoutError, EOFError):
                self._conn.send(("stop", None))
                await self._recv(timeout=20)
        await asyncio.get_running_loop().run_in_executor(None, self.process.join, 10)
        if self.process.is_alive():
            self.process.kill()


@dataclass
class Rig:
    """Fakes, world, database and a scratch directory for one section of the bench."""

    fake: TimedFakeDiscord
    world: StandardWorld
    fal: FakeFal
    db_url: str
    store: Repositories
    tmp: Path
    ca_pem: Path
    backend: str
    bots: list[BotProcess] = field(default_factory=list)

    @property
    def alice(self) -> FakeUser:
        return self.world.alice

    def env(self, **extra: str | None) -> dict[str, str]:
        """The bot's environment; an ``extra`` value of ``None`` removes that key (the bot's
        shipped default then applies)."""
        cdn = URL(self.fake.api_base)
        values = {
            "DISCORD_TOKEN": self.fake.token,
            "FAL_KEY": DEFAULT_KEY,
            "SEED_BOT_DISCORD__API_BASE": self.fake.api_base,
            "SEED_BOT_DISCORD__GATEWAY_URL": self.fake.gateway_url,
            "SEED_BOT_DISCORD__CDN_HOSTS": f"{cdn.host}:{cdn.port}",
            "SEED_BOT_FAL__QUEUE_BASE": self.fal.base_url,
            "SEED_BOT_FAL__REST_BASE": self.fal.base_url,
            "SEED_BOT_DATABASE__URL": self.db_url,
            "SEED_BOT_DATABASE__AUTO_MIGRATE": "false",
            "SEED_BOT_CONFIG": str(self.tmp / "absent-config.toml"),
            # Quotas would refuse a benchmark's traffic: off. The in-flight cap above 500.
            "SEED_BOT_LIMITS__USER_REQUESTS": "0",
            "SEED_BOT_LIMITS__GUILD_REQUESTS": "0",
            "SEED_BOT_LIMITS__MAX_IN_FLIGHT": "2000",
            "SSL_CERT_FILE": str(self.ca_pem),
        }
        for key, value in extra.items():
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value
        return values

    async def start_bot(
        self, *, status_delay: float | None = None, env: Mapping[str, str | None] | None = None
    ) -> BotProcess:
        """Start a bot process; ``env`` adds, overrides or (``None``) removes config
        (environment-style keys); ``status_delay`` None keeps the shipped default."""
        bot = BotProcess(
            self.env(**(env or {})),
            self.tmp / f"bot-{len(self.bots)}.log",
            status_delay=status_delay,
        )
        self.bots.append(bot)
        await bot.start()
        await self.fake.sync_gateway(timeout=30)
        return bot

    async def bound_threads(self, count: int, history: int = 0) -> list[FakeChannel]:
        """``count`` threads in #general, each bound to a stored conversation holding
        ``history`` completed turns (written through the store, not through the bot)."""
        threads = []
        for i in range(count):
            thread = await self.fake.create_thread(self.alice, self.world.channel, f"bench {i}")
            conversation = await self.store.conversations.create_conversation(
                NewConversation(
                    scope_id=str(thread.id),
                    owner_id=str(self.alice.id),
                    guild_id=str(self.world.guild.id),
                    parent_channel_id=str(self.world.channel.id),
                )
            )
            for n in range(history):
                turn = (
                    await self.store.conversations.begin_turn(
                        NewTurn(
                            scope_id=conversation.scope_id,
                            source_id=str(next(_PRE_SOURCE_IDS)),  # a Discord-sized id
                            author_id=str(self.alice.id),
                            author_name="alice",
                            reply_channel_id=str(thread.id),
                            prompt=f"question {n}",
                        )
                    )
                ).turn
                await self.store.turns.complete_turn(turn.id, _reply(n), _messages(n))
                await self.store.turns.record_delivery(turn.id, [str(900_000 + n)])
            threads.append(thread)
        return threads

    async def say(self, channel: FakeChannel, text: str) -> tuple[FakeMessage, float]:
        sent = time.monotonic()
        message = await self.fake.send_message(self.alice, channel, text)
        return message, sent

    async def mention(self, text: str) -> tuple[FakeMessage, float]:
        return await self.say(self.world.channel, f"<@{self.fake.bot_user.id}> {text}")


# Ids of pre-populated turns' "source messages": below any real snowflake, never reused.
_PRE_SOURCE_IDS = itertools.count(100_000_000_000_000_000)


def _messages(n: int) -> list[ChatMessage]:
    # The storage bench's "typical exchange": a short question, a few paragraphs of answer.
    return [
        ChatMessage(role="user", content=[{"type": "text", "text": f"question {n} " * 20}]),
        ChatMessage(role="assistant", content=f"answer {n} " * 150),
    ]


def _reply(n: int) -> ModelReply:
    return ModelReply(
        output=f"answer {n} " * 150, reasoning="thinking " * 50, messages=(), request_id=f"r{n}"
    )


@contextlib.asynccontextmanager
async def rig(backend: str = "sqlite", postgres: str | None = None) -> AsyncIterator[Rig]:
    """Start the fakes (fal over TLS with a throwaway CA, as fal is reached in production)
    and a fresh database; yield; stop every bot process and drop the database."""
    with tempfile.TemporaryDirectory(prefix="seed-bench-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "absent-config.toml").write_text("")
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(server_ctx)
        ca_pem = tmp / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_pem))
        async with contextlib.AsyncExitStack() as stack:
            if backend == "postgresql":
                assert postgres is not None
                db_url = await stack.enter_async_context(scratch_postgres(postgres))
            else:
                db_url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
            await upgrade(db_url)
            engine = create_engine(db_url)
            stack.push_async_callback(engine.dispose)
            fake = TimedFakeDiscord()
            await fake.start()
            stack.push_async_callback(fake.close)
            # fal sends a keep-alive on the status stream every 15 s (fal-protocol §4.2); the
            # fake's 50 ms default is for tests and would cost the bot a wake-up per 50 ms.
            fal = FakeFal(
                concurrency=10_000,
                keepalive_interval=15.0,
                ssl_context=server_ctx,
                seed=uuid.uuid4().int % 2**32,
            )
            await fal.start()
            stack.push_async_callback(fal.close)
            world = build_standard_world(fake)
            the_rig = Rig(fake, world, fal, db_url, sql_repositories(engine), tmp, ca_pem, backend)
            try:
                yield the_rig
            finally:
                for bot in the_rig.bots:
                    await bot.stop()


# --- records -> numbers --------------------------------------------------------------------

_TOKEN = re.compile(r"\bq[0-9a-f]{6}x\w+\b")


def new_batch_prefix() -> str:
    """A prefix for the tokens that tie a user message to its fal request."""
    return f"q{uuid.uuid4().hex[:6]}x"


def requests_by_token(fal: FakeFal) -> dict[str, FakeRequest]:
    out: dict[str, FakeRequest] = {}
    for request in fal.requests.values():
        prompt = request.input.get("prompt")
        if isinstance(prompt, str) and (m := _TOKEN.search(prompt)):
            out[m.group(0)] = request
    return out


def calls_per_request(fal: FakeFal, request_ids: Sequence[str], agent: str) -> list[int]:
    """HTTP calls the client identified by ``agent`` (a User-Agent prefix) made for each
    request: its submit(s) plus every call whose path names the request."""
    wanted = set(request_ids)
    counts = dict.fromkeys(wanted, 0)
    submits: dict[str, int] = {}
    for call in fal.calls:
        if not call.headers.get("User-Agent", "").startswith(agent):
            continue
        if call.route == "submit":
            prompt = call.json.get("prompt") if isinstance(call.json, dict) else None
            if isinstance(prompt, str) and (m := _TOKEN.search(prompt)):
                submits[m.group(0)] = submits.get(m.group(0), 0) + 1
            continue
        for part in call.path.split("/"):
            if part in wanted:
                counts[part] += 1
                break
    for token, request in requests_by_token(fal).items():
        if request.id in counts:
            counts[request.id] += submits.get(token, 0)
    return [counts[r] for r in request_ids]


def pct(values: Sequence[float], q: float) -> float:
    """Percentile ``q`` (0-100) by linear interpolation; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
