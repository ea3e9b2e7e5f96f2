"""The HTTP endpoint for operators: ``/healthz`` (the process is alive), ``/readyz`` (every
shard this process runs is connected and the database answers) and ``/metrics``
(Prometheus), on aiohttp's own web server.

``/readyz`` answers 200 with ``{"status": "ready"}``, or 503 with ``{"status": "not ready",
"not_ready": {what: why}}``, e.g. ``{"shard 1": "not connected", "database": "no answer
within 2s"}``. It needs no credentials and may be reachable from anywhere, so a reason is a
category ("unavailable"), never the driver's text (which names the database's host and
port); the detail goes to the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence

import discord
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.outage import Outage
from bot.ops.logs import describe_exception
from bot.ops.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)

DATABASE_CHECK_SECONDS = 2.0
DATABASE_UNAVAILABLE = "unavailable"

# Each check returns what is not ready ({} when all is well).
Check = Callable[[], Awaitable[dict[str, str]]]


def parse_listen(listen: str) -> tuple[str, int]:
    """``"host:port"`` (validated by the config) as a pair; ``[::1]:9464`` works too."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def shard_check(client: discord.AutoShardedClient, shard_ids: Sequence[int] | None) -> Check:
    """Not ready while any shard this process runs (``shard_ids``; all of ``shard_count``
    when None) is not connected to the gateway."""

    async def check() -> dict[str, str]:
        wanted: Sequence[int] | None = shard_ids
        if wanted is None and client.shard_count:
            wanted = range(client.shard_count)
        if not wanted:
            return {"discord": "not connected yet"}
        problems = {}
        for shard_id in wanted:
            shard = client.get_shard(shard_id)
            if shard is None or shard.is_closed():
                problems[f"shard {shard_id}"] = "not connected"
        if not problems and not client.is_ready():
            problems["discord"] = "connected, loading servers"
        return problems

    return check


def database_check(
    engine: AsyncEngine, timeout: float = DATABASE_CHECK_SECONDS, *, outage: Outage | None = None
) -> Check:
    """Not ready while the database does not answer ``SELECT 1`` within ``timeout``, or while
    the store rides out an ``outage`` (how long, how many calls wait, what it met)."""

    last_logged = ""

    def logged(detail: str) -> None:
        # Probes come every few seconds: a reason is logged when it changes, not each time.
        nonlocal last_logged
        if detail != last_logged:
            log.warning("readiness: database %s", detail)
            last_logged = detail

    async def check() -> dict[str, str]:
        nonlocal last_logged
        # While calls wait on the outage, it is the news; once none does, the probe decides
        # (the outage itself ends at the store's next success).
        if outage is not None and outage.down and outage.holding:
            logged(f"unreachable ({outage.error})")
            return {
                "database": f"{DATABASE_UNAVAILABLE} for {outage.down_for():.0f}s, "
                f"{outage.holding} calls waiting"
            }
        try:
            async with asyncio.timeout(timeout), engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except TimeoutError:
            return {"database": f"no answer within {timeout:g}s"}
        except (SQLAlchemyError, OSError) as exc:
            logged(f"unreachable ({describe_exception(exc)})")
            return {"database": DATABASE_UNAVAILABLE}
        last_logged = ""
        return {}

    return check


class HealthServer:
    """Serves the three endpoints on ``host:port`` until closed."""

    def __init__(self, metrics: Metrics, checks: Sequence[Check]) -> None:
        self.metrics = metrics
        self.checks = list(checks)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("health and metrics on http://%s:%d (/healthz /readyz /metrics)", host, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def not_ready(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        for result in await asyncio.gather(*(check() for check in self.checks)):
            problems.update(result)
        return problems

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        problems = await self.not_ready()
        if problems:
            body = {"status": "not ready", "not_ready": problems}
            return web.Response(status=503, text=json.dumps(body), content_type="application/json")
        return web.json_response({"status": "ready"})

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
