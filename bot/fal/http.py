"""One HTTP call to fal, with timeouts and the retry policy of fal-protocol.md §8 and §14.

Retried:
* transport failures where the request provably never left this process: the connection
  could not be made (``ClientConnectorError``, TLS errors excepted) or timed out while
  connecting (``ConnectionTimeoutError``). Safe for every method, submits included.
* any other transport failure (reset, disconnect, read timeout, truncated body) only for
  idempotent calls. A submit POST that fails after its bytes may have been written is
  **not** sent again here: fal has no idempotency key, and a second POST would queue (and
  bill) a second request. aiohttp cannot tell "written but unanswered" from "written and
  processed", so the caller gets ``ModelSubmitUnknown`` and decides (the domain's one rule
  for an unknown submit fate, ``bot.domain.submission``).
* answers 408, 409, 429, and 500/502/503/504 without ``x-fal-request-id`` (the ingress,
  not fal's app, answered: the request never reached the queue). Never a 504 with
  ``X-Fal-Request-Timeout-Type`` (fal enforced the caller's own start timeout), a 5xx with
  ``x-fal-request-id`` (the request's own outcome), nor any other 4xx.

A *persistent* call (status and result of a known request while a turn waits) is retried
with no attempt limit, on every transport failure and on the answers its caller's
``retry_if`` names, until it succeeds or the caller's deadline cancels it: a GET on a known
request id is always safe to repeat.

Delays are exponential from ``retry_base_delay``, capped at ``retry_max_delay``, with
×[0.5, 1.5) jitter (like fal-client), and at least a ``Retry-After`` when one is given.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import types
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy

from bot.domain import jsontext
from bot.domain.errors import ModelSubmitUnknown, ModelUnavailable, SeedBotError
from bot.domain.observer import NO_OBSERVER, CallObserver
from bot.fal.settings import FalSettings

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-fal-request-id"
TIMEOUT_TYPE_HEADER = "X-Fal-Request-Timeout-Type"
_RETRY_STATUSES = frozenset({408, 409, 429})
_INGRESS_STATUSES = frozenset({500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Response:
    """A fully read HTTP answer (the connection is already released)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    content_type: str
    tried_for: float = 0.0  # seconds from the first attempt to this answer

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def fal_request_id(self) -> str | None:
        return self.headers.get(REQUEST_ID_HEADER)

    @property
    def user_timeout(self) -> bool:
        """fal's own start-timeout verdict (the caller's ``X-Fal-Request-Timeout``)."""
        return self.status == 504 and TIMEOUT_TYPE_HEADER in self.headers

    def json(self) -> object | None:
        """The decoded body, or ``None`` when it is not JSON (an ingress HTML page)."""
        try:
            return jsontext.loads(self.body)
        except ValueError:
            return None


def transient_status(response: Response) -> bool:
    """Whether an answer to a GET on a known request is a passing trouble (rate limit,
    conflict, any 5xx but fal's start-timeout verdict), not an answer about the request."""
    if response.user_timeout:
        return False
    return response.status in _RETRY_STATUSES or response.status >= 500


def retryable_status(response: Response) -> bool:
    """Whether fal's answer asks for (or allows) the same call again."""
    if response.user_timeout:
        return False
    if response.status in _RETRY_STATUSES:
        return True
    return response.status in _INGRESS_STATUSES and response.fal_request_id is None


def never_sent(exc: BaseException) -> bool:
    """Whether the failure happened before any byte of the request was written."""
    if isinstance(exc, aiohttp.ClientSSLError):
        return False  # a TLS/certificate problem is not going to heal by itself
    return isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


def retryable_exception(exc: BaseException, *, idempotent: bool) -> bool:
    """Whether a transport failure may be retried for a call of this kind."""
    if never_sent(exc):
        return True
    if isinstance(exc, aiohttp.ClientSSLError):
        return False
    return idempotent and isinstance(
        exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | TimeoutError
    )


def backoff_delay(retry: int, settings: FalSettings, rng: random.Random) -> float:
    """Delay before retry number ``retry`` (1-based)."""
    cap = settings.retry_max_delay
    delay: float = min(settings.retry_base_delay * 2 ** (retry - 1), cap)
    return min(delay * rng.uniform(0.5, 1.5), cap)


def _retry_after(response: Response, cap: float) -> float:
    raw = response.headers.get("Retry-After", "")
    try:
        return min(max(float(raw), 0.0), cap)
    except ValueError:
        return 0.0  # an HTTP date or garbage: fall back to our own backoff


def describe(exc: BaseException) -> str:
    """A short, secret-free name for a transport failure. ``str()`` of some aiohttp errors
    holds the full URL, and an upload URL carries a signature."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__} ({exc.strerror})"
    return type(exc).__name__


class Http:
    """Performs fal calls over the owner's session; never opens or closes a session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: FalSettings,
        rng: random.Random,
        observer: CallObserver = NO_OBSERVER,
    ):
        self._session = session
        self._settings = settings
        self._rng = rng
        self._observer = observer

    def timeout(
        self, total: float | None, *, sock_read: float | None = None
    ) -> aiohttp.ClientTimeout:
        """A per-call timeout with the explicit connect bound."""
        return aiohttp.ClientTimeout(
            total=total, sock_connect=self._settings.connect_timeout, sock_read=sock_read
        )

    async def call(
        self,
        method: str,
        url: str,
        *,
        op: str,
        idempotent: bool,
        headers: Mapping[str, str],
        data: bytes | Callable[[], AsyncGenerator[bytes, None]] | None = None,
        params: Mapping[str, str] | None = None,
        total_timeout: float | None = None,
        request_id: str | None = None,
        retry_if: Callable[[Response], bool] | None = None,
    ) -> Response:
        """Make the call, retrying per the module's policy. Returns the last answer, which
        the caller maps when it is not 2xx; raises ``ModelUnavailable`` when fal could not
        be reached, ``ModelSubmitUnknown`` when a non-idempotent call's outcome is unknown.

        With ``retry_if`` the call is persistent (idempotent calls only): answers it accepts
        and every transport failure are retried without limit; the caller bounds the time.

        ``data`` may open a streamed body instead, once per attempt; a ``SeedBotError`` the
        body raises (its source failed) ends the call with that error, never retried."""
        settings = self._settings
        timeout = self.timeout(total_timeout or settings.request_timeout)
        persistent = retry_if is not None and idempotent
        retry_answer = retry_if or retryable_status
        limit = None if persistent else settings.max_attempts
        rid = request_id or "-"
        attempt = 0
        first = time.monotonic()
        while True:
            attempt += 1
            try:
                response = await self._send(method, url, headers, data, params, timeout, first)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._observer.fal_call(op, "error")
                if isinstance(exc.__cause__, SeedBotError):
                    raise exc.__cause__ from None  # the body's own source failed
                reason = describe(exc)
                last = limit is not None and attempt >= limit
                if last or not retryable_exception(exc, idempotent=idempotent):
                    log.warning("fal %s failed for %s: %s (attempt %d)", op, rid, reason, attempt)
                    tried_for = time.monotonic() - first
                    if idempotent or never_sent(exc):
                        raise ModelUnavailable(
                            f"Could not reach fal ({reason}).",
                            tried_for=tried_for,
                            request_id=request_id,
                        ) from exc
                    raise ModelSubmitUnknown(
                        f"Lost the connection to fal during {op} ({reason}); "
                        "it is unknown whether fal received the request.",
                        tried_for=tried_for,
                        request_id=request_id,
                    ) from exc
                delay = backoff_delay(attempt, settings, self._rng)
            else:
                self._observer.fal_call(op, str(response.status))
                last = limit is not None and attempt >= limit
                if response.ok or last or not retry_answer(response):
                    return response
                reason = f"HTTP {response.status}"
                delay = max(
                    backoff_delay(attempt, settings, self._rng),
                    _retry_after(response, settings.retry_max_delay),
                )
            self._observer.retry(op)
            # A long outage retried by a persistent call goes on at INFO after the first few.
            log.log(
                logging.WARNING if attempt < settings.max_attempts else logging.INFO,
                "fal %s for %s: %s; retry %d%s in %.2fs",
                op,
                rid,
                reason,
                attempt,
                f"/{limit - 1}" if limit is not None else "",
                delay,
            )
            await asyncio.sleep(delay)

    async def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        data: bytes | Callable[[], AsyncGenerator[bytes, None]] | None,
        params: Mapping[str, str] | None,
        timeout: aiohttp.ClientTimeout,
        first: float,
    ) -> Response:
        body = data() if callable(data) else data
        try:
            async with self._session.request(
                method,
                url,
                headers=headers,
                data=body,
                params=params,
                timeout=timeout,
                allow_redirects=False,
                raise_for_status=False,
            ) as resp:
                return Response(
                    resp.status,
                    resp.headers,
                    await resp.read(),
                    resp.content_type,
                    time.monotonic() - first,
                )
        finally:
            # A body the request did not read to its end (fal answered early, the connection
            # broke) still lets go of its source now, not when collected.
            if isinstance(body, types.AsyncGeneratorType) and not body.ag_running:
                await body.aclose()
