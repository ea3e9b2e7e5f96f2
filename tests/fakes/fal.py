"""A fake of fal's queue API and storage, served by aiohttp on loopback (fal-protocol.md §13).

One server plays both ``queue.fal.run`` and ``rest.fal.ai`` (their paths do not collide) and
serves uploaded files itself. Tests drive it through:

* knobs (plain attributes, changeable at any time): ``concurrency``, ``model_latency``,
  ``keepalive_interval``, ``responder``, ``stuck``, ``honour_cancel``, ``allowed_media_hosts``,
  ``faults``;
* hooks: ``hold()`` / ``release()`` / ``unhold()`` / ``complete_now()`` decide when a running
  request finishes, so no test has to sleep; ``wait_for()``, ``wait_for_state()``,
  ``wait_for_calls()`` wait on the fake's own change notifications;
* records: ``calls`` (every HTTP call, with headers and body), ``requests`` (every queued
  request, with its state and ``time.monotonic()`` timestamps), ``files``.

Facts the fake follows and guesses it makes are marked in fal-protocol.md; the guesses here:
submit answers 200; a held or slow request reports ``IN_PROGRESS`` with two log lines; the
returned ``messages`` history leaves the system prompt out (fal-protocol §15.8 is open; the
client treats history as opaque, so nothing depends on it); a user turn with media is a list
of OpenAI-style parts (text, then ``image_url``, then ``video_url``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import random
import re
import socket
import ssl
import struct
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias
from urllib.parse import quote

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

DEFAULT_ENDPOINT = "fal-ai/bytedance/seed/v2/mini"
DEFAULT_KEY = "fal-test-key-5f3a9c"
UNITS_HEADER = "X-Fal-Billable-Units"

Route = Literal["submit", "status", "stream", "result", "cancel", "initiate", "upload", "file"]
State = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
FaultKind = Literal[
    "http", "reset", "reset_after", "delay", "slow_answer", "stream_drop", "stream_silent"
]

NGINX_PAGE = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_REASONS = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}
_NAMESPACES = frozenset({"workflows", "comfy"})
_MAX_IMAGES, _MAX_VIDEOS = 6, 3
_THINKING = ("enabled", "disabled", "auto")
_EFFORT = ("minimal", "low", "medium", "high")
_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.S)


def app_path(endpoint: str) -> str:
    """``owner/app`` (``namespace/owner/app``) of an endpoint id (fal-protocol §1.1)."""
    parts = endpoint.strip("/").split("/")
    return "/".join(parts[: 3 if parts[0] in _NAMESPACES else 2])


# --- outcomes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelOutput:
    """What a scripted responder returns for a successful run. ``reasoning`` is dropped when
    the input says ``thinking: disabled``."""

    output: str
    reasoning: str | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed run: the result endpoint answers ``status`` with ``body``; the COMPLETED
    status carries ``error`` and ``error_type``."""

    status: int
    body: Mapping[str, Any]
    error: str
    error_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def validation(cls, problems: list[dict[str, Any]]) -> Failure:
        """A model/validation error: 422 with a pydantic-style ``detail`` list."""
        return cls(422, {"detail": problems}, "Invalid status code: 422")

    @classmethod
    def infra(cls, status: int, error_type: str, detail: str) -> Failure:
        """An infrastructure error: flat ``detail`` + ``error_type`` and the header."""
        return cls(
            status,
            {"detail": detail, "error_type": error_type},
            detail,
            error_type,
            {"X-Fal-Error-Type": error_type},
        )

    @classmethod
    def start_timeout(cls) -> Failure:
        """fal's start deadline (``X-Fal-Request-Timeout``) passed before a runner started."""
        failure = cls.infra(504, "request_timeout", "Request timed out")
        return cls(
            failure.status,
            failure.body,
            failure.error,
            failure.error_type,
            {**failure.headers, "X-Fal-Request-Timeout-Type": "user"},
        )

    @classmethod
    def cancelled(cls) -> Failure:
        """The request was cancelled (in queue, or honoured by the app)."""
        return cls.infra(499, "client_cancelled", "Request cancelled by the client.")


Outcome: TypeAlias = ModelOutput | Failure
Responder: TypeAlias = Callable[[dict[str, Any]], "str | ModelOutput | Failure"]


def billable_units(arguments: Mapping[str, Any], body: Mapping[str, Any]) -> int:
    """The ``X-Fal-Billable-Units`` the fake reports for a successful run: input 1 unit per
    4 characters of the request's JSON, output 4 units per 4 characters of the answer and
    reasoning (fal's 1 unit per input token, 4 per output token, with a fixed stand-in for
    the tokenizer), so tests can compute the exact figure."""
    input_units = len(json.dumps(arguments, sort_keys=True)) // 4 + 1
    produced = str(body.get("output", "")) + str(body.get("reasoning_content") or "")
    return input_units + 4 * (len(produced) // 4 + 1)


def echo_responder(arguments: dict[str, Any]) -> ModelOutput:
    """The default model: echoes the prompt, and reasons about it unless told not to."""
    prompt = arguments["prompt"]
    return ModelOutput(output=f"echo: {prompt}", reasoning=f"The user said: {prompt}")


# --- faults --------------------------------------------------------------------------------


@dataclass(slots=True)
class Fault:
    """One injected failure, matched against calls in order of ``FakeFal.faults``.

    A fault applies to calls of ``route`` (any route when ``None``) whose per-route number
    (1-based, counting every call the fake received on that route) is in ``calls`` (any when
    ``None``), with ``probability`` (drawn from the fake's seeded RNG), at most ``times``
    times (forever when ``None``). Kinds:

    * ``http``: answer ``status`` with ``body`` (a dict → JSON, a str → text/html) and
      ``headers``; ``x-fal-request-id`` is added when ``with_request_id``;
    * ``reset``: abort the connection with a TCP RST before doing anything;
    * ``reset_after``: do the work (a submit is queued), then reset instead of answering;
    * ``delay``: wait ``delay`` seconds, then answer normally;
    * ``slow_answer``: do the work at once (a submit is queued), answer ``delay`` seconds
      later;
    * ``stream_drop``: status stream sends its first event, then the connection drops;
    * ``stream_silent``: status stream sends headers, then nothing (no event, no keep-alive).
    """

    route: Route | None = None
    kind: FaultKind = "http"
    status: int = 500
    body: Mapping[str, Any] | str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    with_request_id: bool = True
    delay: float = 0.0
    calls: Collection[int] | None = None
    times: int | None = 1
    probability: float = 1.0
    hits: int = 0

    @classmethod
    def rate_limited(cls, route: Route = "submit", *, times: int | None = 1) -> Fault:
        return cls(
            route,
            status=429,
            body={"detail": "Too many requests", "error_type": "concurrent_requests_limit"},
            headers={"X-Fal-Needs-Retry": "1"},
            times=times,
        )

    @classmethod
    def ingress(
        cls, status: int = 502, route: Route | None = None, *, times: int | None = 1
    ) -> Fault:
        """A 502/503/504 from the ingress: nginx page, no ``x-fal-request-id``."""
        page = NGINX_PAGE.format(code=status, reason=_REASONS.get(status, "Error"))
        return cls(route, status=status, body=page, with_request_id=False, times=times)

    @classmethod
    def server_error(
        cls,
        status: int = 503,
        route: Route | None = None,
        *,
        error_type: str = "runner_disconnected",
        times: int | None = 1,
    ) -> Fault:
        """A 5xx from fal itself (carries ``x-fal-request-id``)."""
        return cls(
            route,
            status=status,
            body={"detail": "Runner disconnected", "error_type": error_type},
            headers={"X-Fal-Error-Type": error_type},
            times=times,
        )

    @classmethod
    def user_timeout(cls, route: Route | None = "result", *, times: int | None = 1) -> Fault:
        """A 504 for the caller's own start timeout: must never be retried."""
        return cls(
            route,
            status=504,
            body={"detail": "Request timed out", "error_type": "request_timeout"},
            headers={"X-Fal-Request-Timeout-Type": "user", "X-Fal-Error-Type": "request_timeout"},
            times=times,
        )

    @classmethod
    def account_locked(
        cls,
        route: Route | None = None,
        *,
        reason: str = "Exhausted balance. Top up your balance at fal.ai/dashboard/billing.",
        times: int | None = 1,
    ) -> Fault:
        """fal's answer to a locked account (403 ``User is locked. Reason: …``; reasons seen:
        ``Exhausted balance…``, ``TOP_UP.``, ``Admin lock. Please contact support@fal.ai.``)."""
        return cls(
            route, status=403, body={"detail": f"User is locked. Reason: {reason}"}, times=times
        )

    @classmethod
    def key_refused(cls, route: Route | None = None, *, times: int | None = 1) -> Fault:
        """fal's answer to a wrong key (401)."""
        return cls(
            route, status=401, body={"detail": "No user found for Key ID and Secret"}, times=times
        )

    @classmethod
    def reset(cls, route: Route | None = None, *, times: int | None = 1) -> Fault:
        return cls(route, kind="reset", times=times)

    @classmethod
    def reset_after(cls, route: Route = "submit", *, times: int | None = 1) -> Fault:
        return cls(route, kind="reset_after", times=times)

    @classmethod
    def slow(cls, delay: float, route: Route | None = None, *, times: int | None = 1) -> Fault:
        return cls(route, kind="delay", delay=delay, times=times)

    @classmethod
    def slow_answer(
        cls, delay: float, route: Route | None = None, *, times: int | None = 1
    ) -> Fault:
        return cls(route, kind="slow_answer", delay=delay, times=times)

    @classmethod
    def stream_drop(cls, *, times: int | None = 1) -> Fault:
        return cls("stream", kind="stream_drop", times=times)

    @classmethod
    def stream_silent(cls, *, times: int | None = 1) -> Fault:
        return cls("stream", kind="stream_silent", times=times)


# --- records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP call the fake received. ``time`` is ``time.monotonic()`` on arrival."""

    route: Route | None
    method: str
    path: str
    query: Mapping[str, str]
    headers: CIMultiDictProxy[str]
    body: bytes
    json: Any
    time: float
    number: int  # per-route, 1-based


@dataclass(slots=True, eq=False)
class FakeRequest:
    """One queued request and what became of it. Times are ``time.monotonic()``."""

    id: str
    endpoint: str
    key: str
    input: dict[str, Any]
    headers: CIMultiDictProxy[str]
    submitted_at: float
    webhook: str | None = None
    state: State = "IN_QUEUE"
    started_at: float | None = None
    completed_at: float | None = None
    result_status: int | None = None
    result_body: Mapping[str, Any] | None = None
    result_headers: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    cancel_requested: bool = False
    answer_lost: bool = False  # the submit's answer never left the fake (``reset_after``)
    answer_sent: bool = False  # the submit's answer is being written to the client
    forced: Outcome | None = None
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def succeeded(self) -> bool:
        return self.state == "COMPLETED" and self.result_status == 200


@dataclass(frozen=True, slots=True)
class StoredFile:
    content_type: str
    file_name: str
    data: bytes
    #: The ``X-Fal-Object-Lifecycle-Preference`` sent when the upload was initiated, decoded
    #: (``{"expiration_duration_seconds": …}``), or None when there was none.
    lifecycle: Mapping[str, Any] | None = None


# --- the server ----------------------------------------------------------------------------


class FakeFal:
    """The fake fal server. Use ``async with FakeFal(...) as fake`` or ``start``/``close``.

        ``keys``: accepted API keys (``Authorization: Key <k>``); ``endpoints``: endpoint ids
        accepted on submit; ``concurrency``: requests ``IN_PROGRESS`` at once (the rest stay
        ``IN_QUEUE``); ``model_latency``: seconds a run takes when not held; ``keepalive_interval``:
        seconds between ``: ping`` comments on the status stream (``None``: none);
        ``responder``: the model (default: echo); ``stuck``: inputs whose run never ends (until
    cancelled), while others go on; ``allowed_media_hosts``: hosts whose media URLs
        "download" (the fake's own files always do); ``honour_cancel``: whether cancelling a
        running request stops it (499) or lets it finish; ``seed``: RNG for request ids and
        probabilistic faults; ``ssl_context``: serve https with it.
    """

    def __init__(
        self,
        *,
        keys: Iterable[str] = (DEFAULT_KEY,),
        endpoints: Iterable[str] = (DEFAULT_ENDPOINT,),
        concurrency: int = 2,
        model_latency: float = 0.0,
        keepalive_interval: float | None = 0.05,
        responder: Responder = echo_responder,
        allowed_media_hosts: Iterable[str] = (),
        honour_cancel: bool = True,
        stuck: Callable[[dict[str, Any]], bool] | None = None,
        seed: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.keys = set(keys)
        self.endpoints = set(endpoints)
        self.concurrency = concurrency
        self.model_latency = model_latency
        self.keepalive_interval = keepalive_interval
        self.responder = responder
        self.allowed_media_hosts = set(allowed_media_hosts)
        self.honour_cancel = honour_cancel
        self.stuck = stuck
        # Whether results (and the COMPLETED status) carry X-Fal-Billable-Units.
        self.report_units = True
        self.faults: list[Fault] = []
        self.fault_hits: Counter[Route | None] = Counter()  # faults applied, by route
        self.calls: list[Call] = []
        self.requests: dict[str, FakeRequest] = {}
        self.files: dict[str, StoredFile] = {}
        self.open_streams = 0
        self.closed_streams = 0
        # Storage uploads whose body is being received now, and the most at once; while
        # ``uploads_held`` a PUT waits before reading its body. ``keep_uploads`` False
        # stores an upload's size only (a bench's gigabytes are counted, not kept).
        self.uploads_open = 0
        self.max_uploads_open = 0
        self.uploaded_bytes = 0
        self.keep_uploads = True
        self._uploads_go = asyncio.Event()
        self._uploads_go.set()
        self._rng = random.Random(seed)
        self._ssl = ssl_context
        self._queue: list[str] = []
        self._holding = False
        self._route_counts: dict[Route | None, int] = {}
        self._uploads: dict[str, tuple[str, str, str, str, Mapping[str, Any] | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._base = ""

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1, on a free port."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that hangs up on a status stream ends its handler at
        # once, so ``closed_streams`` tells a test the client let go of the connection.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._base = f"{'https' if self._ssl else 'http'}://{host}:{port}"

    async def close(self) -> None:
        """Stop serving; ends open status streams and pending runs."""
        self._closing.set()
        self._notify()
        for timer in self._timers:
            timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeFal:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """``http(s)://127.0.0.1:PORT``: the queue base and the REST base alike."""
        return self._base

    @property
    def port(self) -> int:
        return URL(self._base).port or 0

    # --- hooks -----------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        """Append ``fault`` to ``faults`` and return it (its ``hits`` count applications)."""
        self.faults.append(fault)
        return fault

    def hold(self) -> None:
        """From now on, a request that starts running stays ``IN_PROGRESS`` until released
        (or cancelled): a request stuck forever, under test control."""
        self._holding = True

    def unhold(self) -> None:
        """Stop holding and let every held request finish."""
        self._holding = False
        for request in self.requests.values():
            request.gate.set()

    async def release(self, request_id: str | None = None, outcome: Outcome | None = None) -> None:
        """Let a held request (every one when ``request_id`` is ``None``) finish, with
        ``outcome`` instead of the responder's when given. A running request is awaited
        until ``COMPLETED``; a queued one finishes as soon as it gets to run."""
        targets = [self.requests[request_id]] if request_id else list(self.requests.values())
        for request in targets:
            if outcome is not None:
                request.forced = outcome
            request.gate.set()
        running = [r.id for r in targets if r.state == "IN_PROGRESS"]
        await self.wait_for(lambda: all(self.requests[r].state == "COMPLETED" for r in running))

    def complete_now(self, request_id: str, outcome: Outcome | None = None) -> None:
        """Finish a request at once, whatever its state (a queued one leaves the queue)."""
        request = self.requests[request_id]
        self._finish(request, outcome or request.forced or self._simulate(request))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds; it is checked after every change the fake makes
        (a call received, a state change, a stream opened or closed)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()

    async def wait_for_state(self, request_id: str, state: State, timeout: float = 5.0) -> None:
        await self.wait_for(
            lambda: request_id in self.requests and self.requests[request_id].state == state,
            timeout,
        )

    async def wait_for_calls(self, route: Route, count: int, timeout: float = 5.0) -> None:
        await self.wait_for(lambda: len(self.calls_to(route)) >= count, timeout)

    async def wait_for_submissions(self, count: int, timeout: float = 5.0) -> list[str]:
        """Wait until ``count`` requests were queued; return their ids in order."""
        await self.wait_for(lambda: len(self.requests) >= count, timeout)
        return list(self.requests)

    # --- records ---------------------------------------------------------------------------

    def calls_to(self, route: Route) -> list[Call]:
        return [c for c in self.calls if c.route == route]

    def request_url(self, request: FakeRequest) -> str:
        """The owner/app result URL of ``request`` (what submit hands out)."""
        return f"{self._base}/{app_path(request.endpoint)}/requests/{request.id}"

    # --- plumbing --------------------------------------------------------------------------

    def _new_id(self) -> str:
        # Drawn from the seeded RNG, so a test's request ids are the same on every run.
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def _json(
        self,
        status: int,
        body: Any,
        *,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        out = CIMultiDict(headers or {})
        out["x-fal-request-id"] = request_id or self._new_id()
        return web.Response(
            status=status, text=json.dumps(body), content_type="application/json", headers=out
        )

    @staticmethod
    def _reset(request: web.Request) -> None:
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER 0: close() sends a RST, as a crashed proxy would.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def _take_fault(self, route: Route | None, number: int) -> Fault | None:
        for fault in self.faults:
            if fault.route is not None and fault.route != route:
                continue
            if fault.calls is not None and number not in fault.calls:
                continue
            if fault.times is not None and fault.hits >= fault.times:
                continue
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                continue
            fault.hits += 1
            return fault
        return None

    def _fault_response(self, fault: Fault) -> web.Response:
        headers = CIMultiDict(fault.headers)
        if fault.with_request_id:
            headers["x-fal-request-id"] = self._new_id()
        if isinstance(fault.body, str):
            return web.Response(
                status=fault.status, text=fault.body, content_type="text/html", headers=headers
            )
        body = fault.body if fault.body is not None else {"detail": "Injected failure"}
        return web.Response(
            status=fault.status,
            text=json.dumps(body),
            content_type="application/json",
            headers=headers,
        )

    def _route(self, method: str, path: str) -> tuple[Route | None, str, str]:
        """(route, app prefix, request id) of a call."""
        if path == "/storage/upload/initiate" and method == "POST":
            return "initiate", "", ""
        if path.startswith("/storage/upload/put/") and method == "PUT":
            return "upload", "", path.rsplit("/", 1)[1]
        if path.startswith("/files/") and method == "GET":
            return "file", "", path.split("/")[2]
        for route, pattern, verb in (
            ("cancel", r"^/(?P<app>.+)/requests/(?P<id>[^/]+)/cancel$", "PUT"),
            ("stream", r"^/(?P<app>.+)/requests/(?P<id>[^/]+)/status/stream$", "GET"),
            ("status", r"^/(?P<app>.+)/requests/(?P<id>[^/]+)/status$", "GET"),
            ("result", r"^/(?P<app>.+)/requests/(?P<id>[^/]+)(?:/response)?$", "GET"),
        ):
            match = re.match(pattern, path)
            if match and method == verb:
                return route, match["app"], match["id"]  # type: ignore[return-value]
        if method == "POST" and path.strip("/") in self.endpoints:
            return "submit", path.strip("/"), ""
        return None, "", ""

    def hold_uploads(self) -> None:
        """Storage PUTs wait (their bodies unread) until ``release_uploads``."""
        self._uploads_go.clear()

    def release_uploads(self) -> None:
        self._uploads_go.set()

    async def _read_upload(self, request: web.Request) -> bytes:
        self.uploads_open += 1
        self.max_uploads_open = max(self.max_uploads_open, self.uploads_open)
        self._notify()
        try:
            await self._uploads_go.wait()
            if self.keep_uploads:
                raw = await request.read()
                self.uploaded_bytes += len(raw)
                return raw
            async for chunk in request.content.iter_any():
                self.uploaded_bytes += len(chunk)
            return b""
        finally:
            self.uploads_open -= 1
            self._notify()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        route, app, ident = self._route(request.method, request.path)
        raw = await (self._read_upload(request) if route == "upload" else request.read())
        try:
            parsed = json.loads(raw) if raw and request.content_type == "application/json" else None
        except ValueError:
            parsed = None
        number = self._route_counts.get(route, 0) + 1
        self._route_counts[route] = number
        self.calls.append(
            Call(
                route,
                request.method,
                request.path,
                dict(request.query),
                CIMultiDictProxy(CIMultiDict(request.headers)),
                raw,
                parsed,
                time.monotonic(),
                number,
            )
        )
        self._notify()
        fault = self._take_fault(route, number)
        if fault is not None:
            self.fault_hits[route] += 1
            if fault.kind == "reset":
                self._reset(request)
                return web.Response()
            if fault.kind == "http":
                return self._fault_response(fault)
            if fault.kind == "delay":
                await self._pause(fault.delay)
        response = await self._serve(request, route, app, ident, raw, parsed, fault)
        queued = (
            self.requests.get(response.headers.get("x-fal-request-id", ""))
            if route == "submit" and isinstance(response, web.Response)
            else None
        )
        if fault is not None and fault.kind == "slow_answer":
            await self._pause(fault.delay)
        if fault is not None and fault.kind == "reset_after":
            if queued is not None:
                queued.answer_lost = True
            self._reset(request)
        elif queued is not None:
            queued.answer_sent = True
            self._notify()
        return response

    async def _serve(
        self,
        request: web.Request,
        route: Route | None,
        app: str,
        ident: str,
        raw: bytes,
        parsed: Any,
        fault: Fault | None,
    ) -> web.StreamResponse:
        if route is None:
            return self._json(404, {"detail": f"Path {request.path} not found"})
        if route == "upload":
            return self._upload(request, ident, raw)
        if route == "file":
            return self._file(ident)
        key = self._authorised(request)
        if key is None:
            return self._json(401, {"detail": "No user found for Key ID and Secret"})
        if route == "submit":
            return self._submit(request, app, key, raw, parsed)
        if route == "initiate":
            return self._initiate(request, parsed)
        fake_request = self.requests.get(ident)
        # Status, result and cancel take owner/app or the full endpoint id before
        # /requests/; a request made with another key is not found (fal-protocol §13.2).
        if (
            fake_request is None
            or fake_request.key != key
            or app not in (app_path(fake_request.endpoint), fake_request.endpoint)
        ):
            return self._json(404, {"status": "NOT_FOUND"}, request_id=ident or None)
        if route == "status":
            body = self._status_body(fake_request, _truthy(request.query.get("logs")))
            code = 200 if fake_request.state == "COMPLETED" else 202
            units = fake_request.result_headers.get(UNITS_HEADER) if code == 200 else None
            extra = {UNITS_HEADER: units} if units is not None and self.report_units else {}
            return self._json(code, body, request_id=fake_request.id, headers=extra)
        if route == "stream":
            return await self._stream(request, fake_request, fault)
        if route == "result":
            return self._result(fake_request)
        return self._cancel(fake_request)

    def _authorised(self, request: web.Request) -> str | None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        return key if scheme == "Key" and key in self.keys else None

    # --- queue -----------------------------------------------------------------------------

    def _submit(
        self, request: web.Request, endpoint: str, key: str, raw: bytes, parsed: Any
    ) -> web.Response:
        if not isinstance(parsed, dict):
            # fal-protocol §15.11: unknown; a pydantic-style 422 on the body is a guess.
            return self._json(
                422,
                {
                    "detail": [
                        {"loc": ["body"], "msg": "Input should be an object", "type": "dict_type"}
                    ]
                },
            )
        limit = request.query.get("fal_max_queue_length")
        if limit is not None and len(self._queue) > int(limit):
            return self._json(429, {"detail": "Queue is full", "error_type": "queue_full"})
        request_id = self._new_id()
        webhook = request.query.get("fal_webhook")
        fake_request = FakeRequest(
            id=request_id,
            endpoint=endpoint,
            key=key,
            input=parsed,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            submitted_at=time.monotonic(),
            webhook=webhook,
        )
        self.requests[request_id] = fake_request
        position = len(self._queue)
        self._queue.append(request_id)
        start_timeout = request.headers.get("X-Fal-Request-Timeout")
        if start_timeout is not None:
            self._timers.append(
                asyncio.get_running_loop().call_later(
                    float(start_timeout), self._start_deadline, fake_request
                )
            )
        body = {
            "status": "IN_QUEUE",
            "request_id": request_id,
            **self._urls(fake_request),
            "queue_position": position,
        }
        if webhook is not None:
            body["gateway_request_id"] = request_id
        self._dispatch()
        self._notify()
        return self._json(200, body, request_id=request_id)

    def _urls(self, request: FakeRequest) -> dict[str, str]:
        base = self.request_url(request)
        return {
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
        }

    def _dispatch(self) -> None:
        running = sum(1 for r in self.requests.values() if r.state == "IN_PROGRESS")
        while self._queue and running < self.concurrency:
            request = self.requests[self._queue.pop(0)]
            request.state = "IN_PROGRESS"
            request.started_at = time.monotonic()
            request.logs.append(_log("Loading Seed 2.0 Mini"))
            running += 1
            self._spawn(self._run(request))
        self._notify()

    async def _run(self, request: FakeRequest) -> None:
        if self._holding or (self.stuck is not None and self.stuck(request.input)):
            await request.gate.wait()
        elif self.model_latency > 0:
            await asyncio.sleep(self.model_latency)
        if request.state == "IN_PROGRESS":
            self._finish(request, request.forced or self._simulate(request))

    def _start_deadline(self, request: FakeRequest) -> None:
        if request.state == "IN_QUEUE":
            self._finish(request, Failure.start_timeout())

    def _finish(self, request: FakeRequest, outcome: Outcome) -> None:
        if request.state == "COMPLETED":
            return
        if request.id in self._queue:
            self._queue.remove(request.id)
        request.state = "COMPLETED"
        request.completed_at = time.monotonic()
        request.logs.append(_log("Done"))
        if isinstance(outcome, Failure):
            request.result_status = outcome.status
            request.result_body = outcome.body
            request.result_headers = outcome.headers
            if outcome.status == 422:  # the SDK's validation handler bills nothing
                request.result_headers = {**outcome.headers, UNITS_HEADER: "0"}
            request.error, request.error_type = outcome.error, outcome.error_type
        else:
            request.result_status = 200
            request.result_body = self._output_body(request.input, outcome)
            units = billable_units(request.input, request.result_body)
            request.result_headers = {UNITS_HEADER: str(units)}
        request.gate.set()
        self._dispatch()

    def _status_body(self, request: FakeRequest, logs: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"status": request.state, "request_id": request.id}
        body.update(self._urls(request))
        if request.state == "IN_QUEUE":
            body["queue_position"] = self._queue.index(request.id)
            return body
        body["logs"] = list(request.logs) if logs else None
        if request.state == "COMPLETED":
            if request.succeeded:
                started = request.started_at or request.completed_at or 0.0
                body["metrics"] = {"inference_time": (request.completed_at or 0.0) - started}
            else:
                body["metrics"] = {}
                body["error"] = request.error
                body["error_type"] = request.error_type
        return body

    async def _stream(
        self, request: web.Request, fake_request: FakeRequest, fault: Fault | None
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "x-fal-request-id": fake_request.id,
            }
        )
        await response.prepare(request)
        logs = _truthy(request.query.get("logs"))
        self.open_streams += 1
        self._notify()
        try:
            if fault is not None and fault.kind == "stream_silent":
                await self._closing.wait()
                return response
            last: tuple[Any, ...] | None = None
            while not self._closing.is_set():
                changed = self._changed
                body = self._status_body(fake_request, logs)
                key = (body["status"], body.get("queue_position"), len(body.get("logs") or ()))
                if key != last:
                    last = key
                    await response.write(f"data: {json.dumps(body)}\n\n".encode())
                    if fault is not None and fault.kind == "stream_drop":
                        self._reset(request)
                        return response
                if fake_request.state == "COMPLETED":
                    await response.write_eof()
                    return response
                try:
                    await asyncio.wait_for(changed.wait(), self.keepalive_interval)
                except TimeoutError:
                    await response.write(b": ping\n\n")
            return response
        except ConnectionResetError:
            return response  # the client hung up between two writes
        finally:
            self.open_streams -= 1
            self.closed_streams += 1
            self._notify()

    def _result(self, request: FakeRequest) -> web.Response:
        if request.state != "COMPLETED":
            # fal-protocol §5.2: the code is evidenced, the body is a guess.
            return self._json(
                400, {"detail": "Request is still in progress"}, request_id=request.id
            )
        headers = dict(request.result_headers)
        if not self.report_units:
            headers.pop(UNITS_HEADER, None)
        return self._json(
            request.result_status or 500,
            request.result_body,
            request_id=request.id,
            headers=headers,
        )

    def _cancel(self, request: FakeRequest) -> web.Response:
        if request.state == "COMPLETED":
            return self._json(400, {"status": "ALREADY_COMPLETED"}, request_id=request.id)
        request.cancel_requested = True
        if request.state == "IN_QUEUE" or self.honour_cancel:
            self._finish(request, Failure.cancelled())
        self._notify()
        return self._json(202, {"status": "CANCELLATION_REQUESTED"}, request_id=request.id)

    # --- the model -------------------------------------------------------------------------

    def _simulate(self, request: FakeRequest) -> Outcome:
        arguments = request.input
        problems = self._validate(arguments)
        if problems:
            return Failure.validation(problems)
        answer = self.responder(arguments)
        if isinstance(answer, str):
            default = echo_responder(arguments)
            return ModelOutput(answer, default.reasoning)
        return answer

    def _output_body(self, arguments: dict[str, Any], output: ModelOutput) -> dict[str, Any]:
        images = list(arguments.get("image_urls") or [])[:_MAX_IMAGES]
        videos = list(arguments.get("video_urls") or [])[:_MAX_VIDEOS]
        content: Any = arguments["prompt"]
        if images or videos:
            content = [{"type": "text", "text": arguments["prompt"]}]
            content += [{"type": "image_url", "image_url": {"url": u}} for u in images]
            content += [{"type": "video_url", "video_url": {"url": u}} for u in videos]
        history = [
            *(arguments.get("messages") or []),
            {"role": "user", "content": content},
            {"role": "assistant", "content": output.output},
        ]
        body: dict[str, Any] = {"output": output.output, "messages": history}
        if arguments.get("thinking", "enabled") != "disabled" and output.reasoning is not None:
            body["reasoning_content"] = output.reasoning
        return body

    def _validate(self, arguments: dict[str, Any]) -> list[dict[str, Any]]:
        problems: list[dict[str, Any]] = []

        def problem(loc: list[Any], msg: str, kind: str, value: Any = None) -> None:
            item = {"loc": ["body", *loc], "msg": msg, "type": kind}
            if kind.endswith("_error"):
                item["url"] = f"https://docs.fal.ai/errors#{kind}"
            if value is not None:
                item["input"] = value
            problems.append(item)

        if "prompt" not in arguments:
            problem(["prompt"], "Field required", "missing")
        elif not isinstance(arguments["prompt"], str):
            problem(
                ["prompt"], "Input should be a valid string", "string_type", arguments["prompt"]
            )
        for name, allowed in (("thinking", _THINKING), ("reasoning_effort", _EFFORT)):
            if name in arguments and arguments[name] not in allowed:
                choices = ", ".join(f"'{a}'" for a in allowed)
                problem([name], f"Input should be {choices}", "enum", arguments[name])
        for index, message in enumerate(arguments.get("messages") or []):
            if not isinstance(message, dict) or message.get("role") not in (
                "system",
                "user",
                "assistant",
            ):
                problem(["messages", index], "Invalid message", "model_type", message)
        for name, limit, kind in (
            ("image_urls", _MAX_IMAGES, "image"),
            ("video_urls", _MAX_VIDEOS, "video"),
        ):
            urls = arguments.get(name)
            if urls is None:
                continue
            if not isinstance(urls, list):
                problem([name], "Input should be a valid list", "list_type", urls)
                continue
            for index, url in enumerate(urls[:limit]):  # extra media is silently ignored
                verdict = self._fetch(url, kind)
                if verdict is not None:
                    problem([name, index], verdict[1], verdict[0], url)
        return problems

    def _fetch(self, url: Any, kind: str) -> tuple[str, str] | None:
        """``(error type, message)`` when the media URL would not load, else ``None``."""
        if not isinstance(url, str):
            return "string_type", "Input should be a valid string"
        if url.startswith("data:"):
            match = _DATA_URI.match(url)
            if match and match["mime"].startswith(f"{kind}/"):
                with contextlib.suppress(binascii.Error, ValueError):
                    base64.b64decode(match["data"], validate=True)
                    return None
            return f"{kind}_load_error", f"Failed to load the {kind}. Please check the data URI."
        parsed = URL(url)
        own = URL(self._base)
        if parsed.host == own.host and parsed.port == own.port:
            parts = parsed.path.split("/")
            if len(parts) > 2 and parts[1] == "files" and parts[2] in self.files:
                return None
        elif parsed.host in self.allowed_media_hosts:
            return None
        return (
            "file_download_error",
            "Failed to download the file. Please check if the URL is accessible.",
        )

    # --- storage ---------------------------------------------------------------------------

    def _initiate(self, request: web.Request, parsed: Any) -> web.Response:
        if not (
            isinstance(parsed, dict)
            and isinstance(parsed.get("content_type"), str)
            and isinstance(parsed.get("file_name"), str)
        ):
            return self._json(
                422,
                {
                    "detail": [
                        {
                            "loc": ["body"],
                            "msg": "content_type and file_name required",
                            "type": "missing",
                        }
                    ]
                },
            )
        token = uuid.uuid4().hex
        file_id = uuid.uuid4().hex
        signature = uuid.uuid4().hex
        name = parsed["file_name"] or "upload.bin"
        lifecycle = request.headers.get("X-Fal-Object-Lifecycle-Preference")
        try:
            preference = json.loads(lifecycle) if lifecycle is not None else None
        except ValueError:
            return self._json(400, {"detail": "X-Fal-Object-Lifecycle-Preference is not JSON"})
        self._uploads[token] = (file_id, name, parsed["content_type"], signature, preference)
        upload_url = f"{self._base}/storage/upload/put/{token}?X-Goog-Signature={signature}"
        file_url = f"{self._base}/files/{file_id}/{quote(name)}"
        return self._json(200, {"upload_url": upload_url, "file_url": file_url})

    def _upload(self, request: web.Request, token: str, raw: bytes) -> web.Response:
        pending = self._uploads.get(token)
        if pending is None or request.query.get("X-Goog-Signature") != pending[3]:
            return web.Response(
                status=403, text="<Error><Code>SignatureDoesNotMatch</Code></Error>"
            )
        if "Authorization" in request.headers:
            # A signed URL is its own credential; cloud storage refuses a second one.
            return web.Response(
                status=400, text="<Error><Code>InvalidAuthentication</Code></Error>"
            )
        file_id, name, _declared, _signature, preference = pending
        content_type = request.headers.get("Content-Type", "application/octet-stream")
        self.files[file_id] = StoredFile(content_type, name, raw, preference)
        return web.Response(status=200)

    def _file(self, file_id: str) -> web.Response:
        stored = self.files.get(file_id)
        if stored is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=stored.data, headers={"Content-Type": stored.content_type})


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


def _log(message: str) -> dict[str, Any]:
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"message": message, "level": "INFO", "source": "USER", "timestamp": stamp}
