"""The fal queue client: submit, wait (status stream, polling as fallback), result, cancel,
upload. Implements ``bot.domain.ports.ModelClient``.

A normal turn costs three HTTP calls: the submit POST, one status stream that stays open
until fal reports COMPLETED, and the result GET, sent as soon as COMPLETED arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace

import aiohttp
from yarl import URL

from bot.domain.errors import (
    ModelAuthError,
    ModelError,
    ModelProtocolError,
    ModelTimeout,
    TimeoutPhase,
)
from bot.domain.models import ModelReply, ModelRequest, RequestHandle
from bot.domain.observer import NO_OBSERVER, CallObserver
from bot.domain.ports import OpenBody, ProgressCallback
from bot.fal import wire
from bot.fal.http import Http, Response, describe, retryable_status, transient_status
from bot.fal.progress import ProgressReporter
from bot.fal.settings import FalSettings
from bot.fal.uploads import FalUploads

log = logging.getLogger(__name__)

# Endpoint ids under these namespaces keep one more segment before the app (fal-protocol §1.1).
_NAMESPACES = frozenset({"workflows", "comfy"})
# fal's answer to a cancel that came after the request finished (fal-protocol §6).
ALREADY_COMPLETED = "ALREADY_COMPLETED"


def app_path(endpoint: str) -> str:
    """``owner/app`` of an endpoint id (``namespace/owner/app`` for namespaced ones): the
    part status, result and cancel URLs use; the sub-path is dropped."""
    parts = endpoint.strip("/").split("/")
    keep = 3 if parts[0] in _NAMESPACES else 2
    return "/".join(parts[:keep])


@dataclass(frozen=True, slots=True)
class _Urls:
    request_id: str
    status: str
    response: str
    cancel: str


class FalClient:
    """Seed 2.0 Mini through fal's queue API, over one ``aiohttp.ClientSession`` owned by
    the caller (this client neither creates nor closes it).

    Every failure is raised as a domain error carrying fal's request id when there is one:
    ``ModelError`` subclasses, and ``AttachmentError`` from ``upload`` (see there).
    Cancelling a task inside any method propagates ``CancelledError`` after releasing the
    connection; it does not cancel the request at fal (a restarted bot resumes it by id).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: FalSettings,
        *,
        rng: random.Random | None = None,
        observer: CallObserver = NO_OBSERVER,
    ) -> None:
        """``rng`` drives retry jitter (seed it for reproducible tests); ``observer`` hears
        of every HTTP call and retry, and of each waited request's queue and run times (the
        metrics)."""
        self._session = session
        self._settings = settings
        self._observer = observer
        self._http = Http(session, settings, rng or random.Random(), observer)
        queue_base = settings.queue_base.rstrip("/")
        self._queue_origin = URL(queue_base).origin()
        self._submit_url = f"{queue_base}/{settings.endpoint.strip('/')}"
        self._requests_url = f"{queue_base}/{app_path(settings.endpoint)}/requests"
        self._authorization = f"Key {settings.key}"
        self._uploads = FalUploads(self._http, settings, self._headers(json_body=True), self._error)
        # Account problems already logged at ERROR: each condition once, not once per turn.
        self._account_problems: set[str] = set()

    def __repr__(self) -> str:
        settings = self._settings
        return f"FalClient(endpoint={settings.endpoint!r}, queue_base={settings.queue_base!r})"

    # --- ModelClient -----------------------------------------------------------------------

    async def submit(self, request: ModelRequest) -> RequestHandle:
        """Queue ``request`` at fal and return its handle (request id and fal's URLs).

        The POST is retried only when it provably did not reach fal or fal answered a
        retryable status, so one call never queues two requests (see ``bot.fal.http``).
        """
        body = wire.submit_body(request)
        headers = self._headers(json_body=True)
        if self._settings.start_timeout is not None:
            headers["X-Fal-Request-Timeout"] = str(float(self._settings.start_timeout))
        if not self._settings.store_io:
            headers["X-Fal-Store-IO"] = "0"
        log.debug(
            "fal submit: prompt %d chars, %d messages, %d images, %d videos",
            len(request.prompt),
            len(request.messages),
            len(request.image_urls),
            len(request.video_urls),
        )
        response = await self._http.call(
            "POST",
            self._submit_url,
            op="submit",
            idempotent=False,
            headers=headers,
            data=wire.dumps(body),
        )
        if not response.ok:
            raise self._error(response, "submit", response.fal_request_id)
        payload = wire.parse_handle(response.json())
        # Nothing (not even a log line) between fal's answer and the caller storing the id:
        # the caller logs once it is stored.
        if self._account_problems:
            self._account_problems.clear()
        return RequestHandle(
            request_id=payload["request_id"],
            status_url=payload.get("status_url"),
            response_url=payload.get("response_url"),
            cancel_url=payload.get("cancel_url"),
        )

    async def wait(
        self,
        handle: RequestHandle,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
        sent: int | None = None,
    ) -> ModelReply:
        """Wait for the request to finish and return the model's answer (the messages the
        request ``sent`` are not decoded again: ``wire.parse_reply``).

        Listens on fal's status stream; when the stream is unavailable, drops, or stays
        silent past ``stream_idle_timeout``, polls the status URL instead. ``on_progress``
        is awaited on each change (queue position, then running); its exceptions propagate.

        Never gives up early on the request: status and result calls are retried on 429,
        5xx, resets and timeouts (jittered backoff) until ``timeout``. Only a definite
        answer ends the wait: the result, the request's own failure (the matching
        ``ModelError``), 404 for an id fal does not know, an account refusal, or the
        deadline, which cancels the request at fal (best effort) and raises
        ``ModelTimeout`` saying whether the request was still queued or running.
        """
        urls = self._urls(handle)
        reporter = ProgressReporter(on_progress, urls.request_id, self._observer)
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                status = None
                if self._settings.use_status_stream:
                    status = await self._stream_until_completed(urls, reporter)
                if status is None:
                    status = await self._poll_until_completed(urls, reporter)
                reply = await self._result(urls, status, sent)
                self._observer.ran(time.monotonic() - (reporter.running_at or reporter.started_at))
                return reply
        except TimeoutError:
            if not deadline.expired():
                raise
        phase: TimeoutPhase = "run" if reporter.running else "queue"
        silent = time.monotonic() - reporter.heard_at
        # fal itself failing for (at least) the second half of the wait is worth saying.
        silent_for = silent if timeout is not None and silent >= max(1.0, timeout / 2) else None
        log.warning(
            "fal %s: no answer within %ss (%s%s); cancelling",
            urls.request_id,
            timeout,
            "running" if reporter.running else "still queued",
            f", fal failing for the last {silent:.0f}s" if silent_for else "",
        )
        await self._cancel_quietly(urls)
        raise ModelTimeout(
            f"The model did not answer within {timeout:g} seconds.",
            phase=phase,
            silent_for=silent_for,
            request_id=urls.request_id,
        )

    async def cancel(self, handle: RequestHandle) -> ModelReply | None:
        """Ask fal to cancel the request. A request that already finished or that fal no
        longer knows is fine; other refusals raise a ``ModelError``. For one that had
        already completed, its answer is fetched and returned (fal billed it: the answer
        carries the units), or None when it failed; None for any other request."""
        urls = self._urls(handle)
        if await self._cancel(urls) != ALREADY_COMPLETED:
            return None
        try:
            return await self._result(urls, wire.QueueStatus(state="COMPLETED"), None)
        except ModelError as exc:
            log.info("fal %s had completed without an answer: %s", urls.request_id, exc)
            return None

    async def _cancel(self, urls: _Urls) -> str | None:
        """Cancel at fal; returns fal's outcome (``ALREADY_COMPLETED``, ...)."""
        response = await self._http.call(
            "PUT",
            urls.cancel,
            op="cancel",
            idempotent=True,
            headers=self._headers(),
            request_id=urls.request_id,
        )
        payload = response.json()
        outcome = payload.get("status") if isinstance(payload, dict) else None
        if (
            response.ok
            or response.status == 404
            or (response.status == 400 and outcome == ALREADY_COMPLETED)
        ):
            log.info("fal cancel %s: HTTP %d %s", urls.request_id, response.status, outcome)
            return outcome if isinstance(outcome, str) else None
        raise self._error(response, "cancel", urls.request_id)

    async def upload(self, data: bytes, *, content_type: str, file_name: str) -> str:
        """Store ``data`` in fal's CDN; its public URL (see ``FalUploads.store``)."""
        return await self._uploads.store(data, len(data), content_type, file_name)

    async def upload_stream(
        self, open_body: OpenBody, *, size: int, content_type: str, file_name: str
    ) -> str:
        """``upload`` for ``size`` bytes streamed from ``open_body``, no whole file held."""
        return await self._uploads.store(open_body, size, content_type, file_name)

    async def check_key(self) -> bool:
        """Whether fal accepts the key: asks the status of a request that cannot exist, which
        answers 404 to a valid key and 401/403 to a refused one. Costs nothing."""
        urls = self._built_urls("00000000-0000-4000-8000-000000000000")
        response = await self._http.call(
            "GET",
            urls.status,
            op="key check",
            idempotent=True,
            headers=self._headers(),
            request_id=None,
        )
        if response.status in (401, 403):
            return False
        if response.status == 404 or response.ok:
            return True
        raise self._error(response, "key check", None)

    def handle_for(self, request_id: str) -> RequestHandle:
        """A handle for a request known only by id (resuming after a restart), with the
        owner/app URLs fal documents for status, result and cancel."""
        urls = self._built_urls(request_id)
        return RequestHandle(
            request_id=request_id,
            status_url=urls.status,
            response_url=urls.response,
            cancel_url=urls.cancel,
        )

    # --- internals -------------------------------------------------------------------------

    def _headers(
        self, *, json_body: bool = False, accept: str = "application/json"
    ) -> dict[str, str]:
        headers = {
            "Authorization": self._authorization,
            "Accept": accept,
            "User-Agent": self._settings.user_agent,
        }
        if json_body:
            headers["Content-Type"] = "application/json"
        return headers

    def _built_urls(self, request_id: str) -> _Urls:
        if not wire.valid_request_id(request_id):
            raise ModelProtocolError("Invalid fal request id.", request_id=None)
        base = f"{self._requests_url}/{request_id}"
        return _Urls(request_id, f"{base}/status", base, f"{base}/cancel")

    def _pick(self, returned: str | None, built: str) -> str:
        # fal's URLs carry our key, so they are followed only on the configured queue
        # origin; a proxy in front of fal gets its own URLs used this way too.
        if returned:
            with contextlib.suppress(ValueError):
                if URL(returned).origin() == self._queue_origin:
                    return returned
        return built

    def _urls(self, handle: RequestHandle) -> _Urls:
        built = self._built_urls(handle.request_id)
        return _Urls(
            handle.request_id,
            self._pick(handle.status_url, built.status),
            self._pick(handle.response_url, built.response),
            self._pick(handle.cancel_url, built.cancel),
        )

    def _error(
        self,
        response: Response,
        op: str,
        request_id: str | None,
        billable_units: int | None = None,
    ) -> ModelError:
        error = wire.error_for(
            response.status,
            response.headers,
            response.json(),
            request_id=request_id,
            timeout_type_user=response.user_timeout,
            tried_for=response.tried_for,
        )
        reported = wire.billable_units(response.headers)
        error.billable_units = reported if reported is not None else billable_units
        if isinstance(error, ModelAuthError):
            if error.condition not in self._account_problems:
                self._account_problems.add(error.condition)
                log.error(
                    "fal refuses the bot's account (%s, HTTP %d on %s): every turn fails "
                    "until an admin fixes it; logged once until fal accepts a request again",
                    error.condition.replace("_", " "),
                    response.status,
                    op,
                )
            return error
        log.warning(
            "fal %s failed for %s: HTTP %d -> %s",
            op,
            request_id or "-",
            response.status,
            type(error).__name__,
        )
        return error

    async def _stream_until_completed(
        self, urls: _Urls, reporter: ProgressReporter
    ) -> wire.QueueStatus | None:
        """The COMPLETED status from the status stream, or ``None`` to fall back to polling."""
        async with contextlib.aclosing(self._stream_events(urls, reporter)) as events:
            async for status in events:
                if status.state == "COMPLETED":
                    return status
                await reporter.update(status)
        return None

    async def _stream_events(
        self, urls: _Urls, reporter: ProgressReporter
    ) -> AsyncGenerator[wire.QueueStatus]:
        # Any trouble with the stream ends the iteration (polling takes over); only the
        # network part is guarded, so the progress callback's own errors are not swallowed.
        rid = urls.request_id
        try:
            async with self._session.get(
                f"{urls.status}/stream",
                params={"logs": "0"},
                headers=self._headers(accept="text/event-stream"),
                timeout=self._http.timeout(None, sock_read=self._settings.stream_idle_timeout),
                allow_redirects=False,
                raise_for_status=False,
            ) as resp:
                if resp.status != 200 or resp.content_type != "text/event-stream":
                    log.info(
                        "fal status stream for %s unavailable (HTTP %d, %s); polling",
                        rid,
                        resp.status,
                        resp.content_type,
                    )
                    return
                data: list[str] = []
                async for raw in resp.content:
                    reporter.heard()  # an event or a keep-alive: fal is there
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif not line and data:
                        event = "\n".join(data)
                        data = []
                        yield wire.parse_status(json.loads(event), rid)
                    # Anything else is a keep-alive comment or a field we do not use.
            log.info("fal status stream for %s ended before completion; polling", rid)
        except (aiohttp.ClientError, TimeoutError, ValueError, ModelProtocolError) as exc:
            log.info("fal status stream for %s failed (%s); polling", rid, describe(exc))

    async def _poll_until_completed(
        self, urls: _Urls, reporter: ProgressReporter
    ) -> wire.QueueStatus:
        settings = self._settings
        delay = settings.poll_interval
        while True:
            response = await self._http.call(
                "GET",
                urls.status,
                op="status",
                idempotent=True,
                headers=self._headers(),
                params={"logs": "0"},
                request_id=urls.request_id,
                retry_if=transient_status,  # a status is never the request's own failure
            )
            if not response.ok:
                raise self._error(response, "status", urls.request_id)
            status = wire.parse_status(response.json(), urls.request_id)
            if status.state == "COMPLETED":
                return replace(status, billable_units=wire.billable_units(response.headers))
            if await reporter.update(status):
                delay = settings.poll_interval
            await asyncio.sleep(delay)
            delay = min(delay * settings.poll_backoff, settings.poll_interval_max)

    async def _result(self, urls: _Urls, status: wire.QueueStatus, sent: int | None) -> ModelReply:
        # The result of a failed request replays its failure (a 5xx for an infrastructure
        # error): only when COMPLETED said it succeeded is a 5xx a passing trouble.
        failed = status.error is not None or status.error_type is not None
        response = await self._http.call(
            "GET",
            urls.response,
            op="result",
            idempotent=True,
            headers=self._headers(),
            request_id=urls.request_id,
            retry_if=retryable_status if failed else transient_status,
        )
        if not response.ok:
            raise self._error(response, "result", urls.request_id, status.billable_units)
        units = wire.billable_units(response.headers)
        reply = wire.parse_reply(
            response.body,
            urls.request_id,
            status.inference_time,
            status.billable_units if units is None else units,
            sent=sent,
        )
        log.info(
            "fal %s completed: %d chars, inference %ss, %s billable units",
            urls.request_id,
            len(reply.output),
            status.inference_time,
            reply.billable_units,
        )
        return reply

    async def _cancel_quietly(self, urls: _Urls) -> None:
        try:
            async with asyncio.timeout(self._settings.cancel_timeout):
                await self._cancel(urls)
        except (ModelError, TimeoutError) as exc:
            log.warning("fal cancel of %s failed: %s", urls.request_id, type(exc).__name__)
