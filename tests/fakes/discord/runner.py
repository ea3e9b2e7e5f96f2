"""Run a real ``discord.Client`` (or ``commands.Bot``, ``AutoShardedClient``) against a
:class:`~.server.FakeDiscord` and wait until it is ready, without sleeping.

"Ready" means: the client's ``on_ready`` fired *and* every gateway session has parsed all the
fake sent so far (a heartbeat barrier, see ``GatewaySession.barrier``), so the client's cache
holds every guild, channel and thread. discord.py delays ``on_ready`` by ``guild_ready_timeout``
(2 s by default) after the last GUILD_CREATE: build test clients with
``guild_ready_timeout=0`` (the barrier makes it safe) to keep tests fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

import discord

from .events import GatewayIdentified
from .server import FakeDiscord

__all__ = ["ErrorLogCapture", "run_client"]

ClientT = TypeVar("ClientT", bound=discord.Client)


class ErrorLogCapture(logging.Handler):
    """Collects ERROR records of the ``discord`` loggers: discord.py reports exceptions in
    event handlers, commands and views only by logging them."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def report(self) -> str:
        formatter = logging.Formatter("%(name)s: %(message)s")
        return "\n".join(formatter.format(r) for r in self.records)


@contextlib.asynccontextmanager
async def run_client(
    client: ClientT,
    fake: FakeDiscord,
    *,
    token: str | None = None,
    timeout: float = 10.0,
    wait_ready: bool = True,
    fail_on_error_logs: bool = True,
    error_loggers: Sequence[str] = ("discord",),
    reconnect: bool = True,
) -> AsyncIterator[ClientT]:
    """Start ``client`` against ``fake`` and (``wait_ready``) wait until it is ready.

    If the client stops while starting, its exception is raised (e.g.
    ``discord.PrivilegedIntentsRequired``). On exit the client is closed and its task awaited;
    with ``fail_on_error_logs`` ERROR records of ``error_loggers`` (default: discord.py's, which
    is how it reports exceptions in event handlers, app commands and views; add ``"bot"`` for
    the bot's own) logged meanwhile fail the test.
    """
    capture = ErrorLogCapture()
    loggers = [logging.getLogger(name) for name in error_loggers]
    for logger in loggers:
        logger.addHandler(capture)
    since = fake.mark()
    task = asyncio.create_task(
        client.start(token or fake.token, reconnect=reconnect), name="discord-client-under-test"
    )
    surfaced = False
    try:
        if wait_ready:
            try:
                await _until_ready(client, fake, task, since, timeout)
            except BaseException:
                surfaced = True
                raise
        yield client
        if task.done() and not task.cancelled() and task.exception() is not None:
            surfaced = True
            raise AssertionError("the client stopped while the test ran") from task.exception()
        if fail_on_error_logs and capture.records:
            raise AssertionError("discord.py logged errors:\n" + capture.report())
    finally:
        try:
            await client.close()
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise AssertionError(f"the client did not stop within {timeout}s of close()")
            if not task.cancelled() and task.exception() is not None and not surfaced:
                exc = task.exception()
                if not isinstance(exc, discord.ConnectionClosed) or exc.code != 1000:
                    raise AssertionError("the client's task failed") from exc
        finally:
            for logger in loggers:
                logger.removeHandler(capture)


async def _until_ready(
    client: discord.Client,
    fake: FakeDiscord,
    task: asyncio.Task[None],
    since: int,
    timeout: float,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # The client can only be waited on once login() has run; an IDENTIFY proves it has.
    identified = asyncio.create_task(
        fake.wait_for_event(GatewayIdentified, since=since, timeout=timeout, what="an IDENTIFY")
    )
    await _race(task, identified, "before identifying")
    ready = asyncio.create_task(client.wait_until_ready())
    try:
        async with asyncio.timeout(deadline - loop.time()):
            await _race(task, ready, "before becoming ready")
    except TimeoutError:
        problems = "".join(f"\n  {p}" for p in fake.problems)
        raise AssertionError(
            f"the client was not ready within {timeout}s (guild_ready_timeout too long?)"
            + (f"; the fake saw problems:{problems}" if problems else "")
        ) from None
    await fake.sync_gateway(timeout=max(0.1, deadline - loop.time()))


async def _race(task: asyncio.Task[None], other: asyncio.Task[object], when: str) -> None:
    try:
        done, _ = await asyncio.wait({task, other}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        other.cancel()
        raise
    if other in done:
        other.result()
        return
    other.cancel()
    with contextlib.suppress(asyncio.CancelledError, AssertionError):
        await other
    task.result()
    raise AssertionError(f"the client stopped {when}")
