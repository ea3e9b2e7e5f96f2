"""A fake web for linked pages, on loopback only: one server listening on 127.0.0.1 (a
private address, which the bot must refuse) and on 127.0.0.2, which tests present to the
bot as the public address of names such as ``public.test`` (see :func:`test_network`).
Every request that reaches it is recorded, so a test sees what was never fetched."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from bot.web.pages import IPAddress, Network, is_public

PRIVATE = "127.0.0.1"
PUBLIC = "127.0.0.2"  # stands in for a public address in tests (never for real traffic)


@dataclass(frozen=True)
class PageRequest:
    address: str  # the server address the request reached
    host: str  # its Host header
    path: str
    headers: Mapping[str, str]


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    location: str | None = None


@dataclass
class FakeWeb:
    port: int = 0
    pages: dict[str, Reply] = field(default_factory=dict)
    requests: list[PageRequest] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    def page(self, path: str, html: str, content_type: str = "text/html; charset=utf-8") -> None:
        self.pages[path] = Reply(body=html.encode(), content_type=content_type)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.pages[path] = Reply(status=status, location=location)

    def url(self, path: str, host: str = "public.test") -> str:
        return f"http://{host}:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        first = web.TCPSite(self._runner, PRIVATE, 0)
        await first.start()
        self.port = int(self._runner.addresses[0][1])
        await web.TCPSite(self._runner, PUBLIC, self.port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        self.requests.append(
            PageRequest(
                address=sockname[0] if sockname else "?",
                host=request.host,
                path=request.path,
                headers=dict(request.headers),
            )
        )
        reply = self.pages.get(request.path)
        if reply is None:
            return web.Response(status=404, text="not found")
        headers = {"Location": reply.location} if reply.location else {}
        return web.Response(
            status=reply.status,
            body=reply.body,
            headers={**headers, "Content-Type": reply.content_type},
        )


class FakeResolver(AbstractResolver):
    """Names of the fake web only: ``*.test`` is its public address, ``localhost`` and
    ``*.internal`` its private one; any other name does not resolve (no real DNS in tests)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        await asyncio.sleep(0)
        if host.endswith(".test"):
            address = PUBLIC
        elif host == "localhost" or host.endswith(".internal"):
            address = PRIVATE
        else:
            raise OSError(f"{host} does not resolve in tests")
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        return None


def _public_in_tests(address: IPAddress) -> bool:
    # The real rule, except for the one loopback address standing in for the internet.
    return address == ipaddress.ip_address(PUBLIC) or is_public(address)


def fake_network() -> Network:
    """The bot's network in tests: the fake web's names, and its stand-in public address
    judged public; every other address (127.0.0.1 among them) by the real rule."""
    return Network(resolver=FakeResolver, public=_public_in_tests)
