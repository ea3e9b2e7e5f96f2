"""Reads the web pages people link, safely enough for a public server: http(s) only, only
public addresses (checked on the address actually connected to, after every redirect), a
few redirects followed by hand, and bounds on time, size and content type. No cookies or
credentials go out, and the ``User-Agent`` names the bot."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from bot.domain.attachments import cut_text
from bot.domain.links import Page, PageError
from bot.ops.logs import describe_exception
from bot.urls import describe_url

log = logging.getLogger(__name__)

USER_AGENT = "seed-bot/0.1 (a Discord bot reading a page someone linked in a chat)"
MAX_REDIRECTS = 5
TIMEOUT_SECONDS = 10.0
# What is downloaded of a page at most, before its text is taken out (markup is most of it).
MAX_DOWNLOAD_BYTES = 2 * 1024 * 1024
HTML_TYPES = {"text/html", "application/xhtml+xml"}
TEXT_TYPES = {"text/plain", "text/markdown"}
_REDIRECTS = {301, 302, 303, 307, 308}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public(address: IPAddress) -> bool:
    """Whether an address is on the public internet: not loopback, private, link-local
    (where cloud metadata services answer), shared, reserved or multicast. An IPv4 address
    written as IPv6 is judged as IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            address = mapped
    return address.is_global and not address.is_multicast


@dataclass(frozen=True, slots=True)
class Network:
    """How names are resolved and which addresses count as public. Production uses the
    system resolver and :func:`is_public`; only code (a test) can pass others, never config."""

    resolver: Callable[[], AbstractResolver] = aiohttp.ThreadedResolver
    public: Callable[[IPAddress], bool] = is_public
    allow_private_hosts: frozenset[str] = field(default_factory=frozenset)

    def allows(self, host: str, address: IPAddress) -> bool:
        return self.public(address) or host.lower().rstrip(".") in self.allow_private_hosts


class _Refused(OSError):
    """A host that resolves to no address the bot may connect to."""


class _CheckingResolver(AbstractResolver):
    """Resolves through ``inner`` and keeps only the addresses ``network`` allows: the
    connector connects to what this returns, so a name cannot resolve to a public address
    for a check and to a private one for the connection."""

    def __init__(self, network: Callable[[], Network]) -> None:
        self._network = network  # read at each resolution: a reload may change it
        self._inner = network().resolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        network = self._network()
        kept = [r for r in found if network.allows(host, ipaddress.ip_address(r["host"]))]
        if not kept:
            raise _Refused(f"{host} resolves to no public address")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def link_problem(url: URL, network: Network) -> str | None:
    """Why ``url`` may not be fetched, before any connection; None when it may."""
    if url.scheme not in ("http", "https") or not url.host:
        return "only http(s) links are read"
    if url.user is not None or url.password is not None:
        return "the link carries credentials"
    # An address written in the link is not resolved (the connector goes straight to it):
    # it is judged here.
    address = _literal(url.host)
    if address is not None and not network.allows(url.host, address):
        return "it points to a private address"
    if url.host.lower().rstrip(".") == "localhost" and not network.allows(
        url.host, ipaddress.ip_address("127.0.0.1")
    ):
        return "it points to a private address"
    return None


_BLOCKS = (
    "p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote",
    "section", "article", "table", "ul", "ol", "dt", "dd", "hr",
)  # fmt: skip
_HIDDEN = (
    "script", "style", "noscript", "template", "svg", "iframe", "nav", "footer", "header",
    "aside", "form", "button", "head",
)  # fmt: skip


_BREAK = "\x00"  # a NUL in the page itself only becomes a line break too


def html_text(data: bytes, charset: str | None) -> tuple[str, str]:
    """A page's title and readable text: its main part (``<main>``, ``<article>`` or the
    body) without scripts, navigation and the like, one line per block."""
    from bs4 import BeautifulSoup  # loaded with the first page read, not at start

    soup = BeautifulSoup(data, "html.parser", from_encoding=charset)
    title = " ".join(soup.title.get_text().split()) if soup.title else ""
    for tag in soup(_HIDDEN):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    # Line breaks come from the blocks only: the source's own line breaks are spaces.
    for tag in root.find_all(_BLOCKS):
        tag.append(_BREAK)
    lines = (" ".join(line.split()) for line in root.get_text().split(_BREAK))
    return title, "\n".join(line for line in lines if line)


def _charset(response: aiohttp.ClientResponse) -> str | None:
    charset = response.charset
    return charset if charset and re.fullmatch(r"[\w.:-]{1,40}", charset) else None


class PageFetcher:
    """:class:`~bot.domain.links.PageReader` over a session of its own: no cookie jar, no
    proxy from the environment, its own resolver that refuses private addresses."""

    def __init__(self, network: Network | None = None) -> None:
        self.network = network or Network()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=_CheckingResolver(lambda: self.network), use_dns_cache=False, limit=16
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                headers={"User-Agent": USER_AGENT},
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=5, sock_read=TIMEOUT_SECONDS
                ),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def read(self, url: str, max_bytes: int) -> Page:
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                final, title, text = await self._follow(URL(url))
        except TimeoutError:
            raise PageError(f"it took longer than {TIMEOUT_SECONDS:.0f} seconds") from None
        except ValueError:
            raise PageError("it is not a valid link") from None
        if not text.strip():
            raise PageError("it has no readable text")
        data = text.encode()
        cut = len(data) > max_bytes
        if cut:
            text = cut_text(data, max_bytes)
            text += f"\n[… cut: only the first {max_bytes // 1024} KB of the page's text]"
        return Page(str(final), title, f"{title}\n\n{text}" if title else text, cut)

    async def _follow(self, url: URL) -> tuple[URL, str, str]:
        for _ in range(MAX_REDIRECTS + 1):
            if (problem := link_problem(url, self.network)) is not None:
                log.info("linked page %s not fetched: %s", describe_url(str(url)), problem)
                raise PageError(problem)
            try:
                async with self._client().get(
                    url,
                    allow_redirects=False,
                    headers={"Accept": "text/html,application/xhtml+xml,text/plain;q=0.8"},
                ) as response:
                    if response.status in _REDIRECTS:
                        location = response.headers.get("Location")
                        if not location:
                            raise PageError(f"the site answered HTTP {response.status}")
                        url = url.join(URL(location))
                        continue
                    return url, *(await self._text(response))
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, _Refused):
                    log.info("linked page %s not fetched: %s", describe_url(str(url)), exc)
                    raise PageError("it points to a private address") from None
                raise PageError("the site could not be reached") from None
            except aiohttp.ClientError as exc:
                log.info(
                    "linked page %s failed: %s", describe_url(str(url)), describe_exception(exc)
                )
                raise PageError("the site could not be reached") from None
        raise PageError(f"it redirects more than {MAX_REDIRECTS} times")

    async def _text(self, response: aiohttp.ClientResponse) -> tuple[str, str]:
        if response.status != 200:
            raise PageError(f"the site answered HTTP {response.status}")
        ctype = response.content_type.lower()
        if ctype not in HTML_TYPES | TEXT_TYPES:
            raise PageError(f"it is not a web page ({ctype[:40]})")
        data = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            data += chunk
            if len(data) >= MAX_DOWNLOAD_BYTES:
                del data[MAX_DOWNLOAD_BYTES:]  # the start of a long page is read
                break
        charset = _charset(response)
        if ctype in TEXT_TYPES:
            try:
                return "", bytes(data).decode(charset or "utf-8", "replace")
            except LookupError:  # a charset Python does not know
                return "", bytes(data).decode("utf-8", "replace")
        # Parsing a large page takes a while: off the event loop.
        return await asyncio.to_thread(html_text, bytes(data), charset)


def private_hosts(hosts: Collection[str]) -> frozenset[str]:
    """``[links] allow_private_hosts`` as the fetcher compares it."""
    return frozenset(h.lower().rstrip(".") for h in hosts)
