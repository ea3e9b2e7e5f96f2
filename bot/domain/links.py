"""Web pages linked in a message: which links are read, and their text as the model sees it
(like an inlined text file, within the ``[links]`` caps), with a note naming each page read
or left out. Fetching is a port (:class:`PageReader`): the safe fetcher lives in bot/web."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from bot.domain.models import Attachment, Origin

log = logging.getLogger(__name__)

# The defaults of the [links] settings, written once (config.py uses them).
DEFAULT_READ_PAGES = True
DEFAULT_MAX_PAGES = 3
DEFAULT_MAX_PAGE_BYTES = 32 * 1024
# Discord unfurls a link a moment after the message (MESSAGE_UPDATE); it is waited for so long.
DEFAULT_EMBED_WAIT = 3.0

# A link as Discord finds one in a message: http(s) up to whitespace or an angle bracket
# (``<https://…>`` is a link whose preview the person suppressed: still a link to read).
_LINK_RE = re.compile(r"https?://[^\s<>|`\"]+", re.IGNORECASE)
# Punctuation that ends a sentence rather than the link (Discord leaves it out too).
_TRAILING = ".,:;!?'*_~"


@dataclass(frozen=True, slots=True)
class LinkPolicy:
    """Which linked pages are read: at most ``max_pages`` per message (a burst and a quoted
    message's links included), each page's text cut to ``max_page_bytes``. These caps are
    the pages' own: inlined files keep the ``[attachments]`` text budget."""

    read_pages: bool = DEFAULT_READ_PAGES
    max_pages: int = DEFAULT_MAX_PAGES
    max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES


@dataclass(frozen=True, slots=True)
class Page:
    """A page's readable text. ``url`` is where it was finally read (after redirects)."""

    url: str
    title: str
    text: str
    cut: bool = False  # only the start of a longer text


class PageError(Exception):
    """A page that could not be read; ``reason`` says why, fit to show the person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PageReader(Protocol):
    """Reads a web page's text. Implemented by bot/web."""

    async def read(self, url: str, max_bytes: int) -> Page:
        """The page's readable text (at most ``max_bytes`` of it, cut on a character);
        raises :class:`PageError` when it cannot or may not be read."""
        ...


_HOST_NAME = re.compile(
    r"(?i)^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$"
)


def is_host_name(value: str) -> bool:
    """Whether ``value`` is a DNS host name (letters in it: an IP address is not one)."""
    return len(value) <= 253 and _HOST_NAME.match(value) is not None and ":" not in value


def linked_urls(text: str) -> list[str]:
    """The http(s) links in ``text``, in order, each once."""
    found: dict[str, None] = {}
    for match in _LINK_RE.finditer(text):
        url = match.group(0).rstrip(_TRAILING)
        # A closing parenthesis belongs to the link only when it opened one inside it.
        while url.endswith(")") and url.count(")") > url.count("("):
            url = url[:-1]
        if urlsplit(url).hostname:
            found[url] = None
    return list(found)


def page_attachment(url: str) -> Attachment:
    """A linked page as a turn's attachment (so a burst, a quote and a reused preparation
    carry it like a file). Its id is the link: one page is read once per turn."""
    return Attachment(f"page:{url}", url, "text/html", 0, url, Origin.PAGE)


def shown_page(url: str) -> str:
    """A page as the reply names it: host and path in a code span, short, unable to break
    markdown or ping anyone."""
    parts = urlsplit(url)
    shown = f"{parts.hostname or ''}{parts.path if parts.path != '/' else ''}"
    shown = re.sub(r"[`*_~|<>@\\\n\r\t]", "", shown)
    return f"`{shown[:80] + '…' if len(shown) > 80 else shown}`"


@dataclass(frozen=True, slots=True)
class ReadPages:
    """Pages as read for one turn: each page's text, and a note per page (read or not)."""

    pages: tuple[Page, ...] = ()
    notes: tuple[str, ...] = ()


async def read_pages(
    reader: PageReader | None, links: Sequence[Attachment], policy: LinkPolicy
) -> ReadPages:
    """Read the first ``max_pages`` of a turn's linked pages at once; the reply is told
    which were read, which could not be and why, and which were left out."""
    if not links or reader is None or not policy.read_pages:
        return ReadPages()
    # One page linked twice (a quoted message and its reply, a burst) is read once.
    links = list({link.url: link for link in links}.values())
    chosen, over = links[: policy.max_pages], links[policy.max_pages :]
    results = await asyncio.gather(
        *(reader.read(link.url, policy.max_page_bytes) for link in chosen),
        return_exceptions=True,
    )
    pages: list[Page] = []
    read: list[str] = []
    failed: list[str] = []
    for link, result in zip(chosen, results, strict=True):
        if isinstance(result, PageError):
            log.info("linked page left out: %s", result.reason)
            failed.append(f"{shown_page(link.url)} could not be read: {result.reason}")
        elif isinstance(result, BaseException):
            raise result
        else:
            pages.append(result)
            cut = f" (its first {policy.max_page_bytes // 1024} KB)" if result.cut else ""
            read.append(shown_page(link.url) + cut)
    notes = [f"read {', '.join(read)}"] if read else []
    notes += failed
    if over:
        notes.append(
            f"{len(over)} links not read (at most {policy.max_pages} pages per message): "
            + ", ".join(shown_page(link.url) for link in over)
        )
    return ReadPages(tuple(pages), tuple(notes))
