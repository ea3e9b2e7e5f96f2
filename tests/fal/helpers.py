"""Small helpers shared by the fal tests."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult

from bot.domain.models import Progress
from tests.fakes.fal import DEFAULT_KEY


class ProgressLog:
    """An ``on_progress`` callback that records updates and lets a test wait for them."""

    def __init__(self) -> None:
        self.updates: list[Progress] = []
        self._changed = asyncio.Condition()

    async def __call__(self, progress: Progress) -> None:
        async with self._changed:
            self.updates.append(progress)
            self._changed.notify_all()

    async def wait_for(self, progress: Progress, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: progress in self.updates)


def assert_secret_free(error: BaseException, *secrets: str) -> None:
    """The key appears in no rendering of ``error`` nor of the errors it chains."""
    secrets = secrets or (DEFAULT_KEY,)
    seen: BaseException | None = error
    while seen is not None:
        renderings: list[Any] = [str(seen), repr(seen), *map(str, seen.args)]
        renderings.extend(str(v) for v in vars(seen).values())
        for secret in secrets:
            for text in renderings:
                assert secret not in text
        seen = seen.__cause__ or seen.__context__


class FirstConnectRefused(AbstractResolver):
    """Resolves every host to 127.0.0.1: the first time to a port that refuses connections,
    then to ``port`` (a connect failure the client can prove happened before sending)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self.lookups = 0
        # Bound but not listening: connecting to it is refused, and the port stays ours.
        self._dead = socket.socket()
        self._dead.bind(("127.0.0.1", 0))

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups += 1
        target = self._dead.getsockname()[1] if self.lookups == 1 else self._port
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": target,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        self._dead.close()
