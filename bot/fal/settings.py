"""Settings of the fal client: one frozen value, built by the config layer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bot.domain.errors import ConfigError
from bot.urls import http_url_problem

DEFAULT_ENDPOINT = "fal-ai/bytedance/seed/v2/mini"
DEFAULT_QUEUE_BASE = "https://queue.fal.run"
DEFAULT_REST_BASE = "https://rest.fal.ai"
DEFAULT_CONNECT_TIMEOUT = 10.0
# fal keeps request and response payloads for 30 days unless told not to (fal-protocol §3).
DEFAULT_STORE_IO = False

# fal's status stream sends a keep-alive comment every 15 s (fal-protocol.md §4.2); a little
# more than that tells a dead stream from a quiet one.
_FAL_KEEPALIVE_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class FalSettings:
    """How to reach fal and how patient to be with it.

    ``key`` is the fal API key (``FAL_KEY``, or ``<id>:<secret>``); it is left out of
    ``repr`` and never logged. Base URLs are settings so a proxy or a loopback fake can stand
    in for fal. Times are in seconds.

    * ``connect_timeout``: TCP/TLS connect of one HTTP call.
    * ``request_timeout``: one whole HTTP call (headers and body) other than the status
      stream and the upload PUT.
    * ``upload_timeout``: the PUT of an attachment's bytes to fal storage.
    * ``poll_interval`` → ``poll_interval_max``: polling the status URL (only when the status
      stream is unusable) starts at the first and grows by ``poll_backoff`` up to the second;
      it drops back to the first whenever the status changes.
    * ``max_attempts``: tries of one HTTP call, the first included; between tries a jittered
      exponential delay from ``retry_base_delay`` up to ``retry_max_delay``.
    * ``stream_idle_timeout``: silence on the status stream (no event, no keep-alive) after
      which the client gives the stream up and polls instead.
    * ``use_status_stream``: wait on the status stream first (fewest calls, fastest delivery).
    * ``start_timeout``: fal's server-side time-to-start deadline (header
      ``X-Fal-Request-Timeout``, more than 1 s); ``None`` leaves fal's default.
    * ``cancel_timeout``: how long the best-effort cancel after a deadline may take.
    * ``store_io``: let fal store each request's payloads; ``False`` sends
      ``X-Fal-Store-IO: 0`` with every submit.
    * ``upload_lifetime``: seconds fal's CDN keeps an uploaded attachment (header
      ``X-Fal-Object-Lifecycle-Preference``); ``None`` sends no header (fal's default).
    """

    key: str = field(repr=False)
    endpoint: str = DEFAULT_ENDPOINT
    queue_base: str = DEFAULT_QUEUE_BASE
    rest_base: str = DEFAULT_REST_BASE
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    request_timeout: float = 30.0
    upload_timeout: float = 120.0
    poll_interval: float = 0.25
    poll_interval_max: float = 2.0
    poll_backoff: float = 1.5
    max_attempts: int = 5
    retry_base_delay: float = 0.25
    retry_max_delay: float = 4.0
    stream_idle_timeout: float = _FAL_KEEPALIVE_SECONDS + 5.0
    use_status_stream: bool = True
    start_timeout: float | None = None
    cancel_timeout: float = 5.0
    user_agent: str = "seed-bot (fal queue client)"
    store_io: bool = DEFAULT_STORE_IO
    upload_lifetime: int | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.key.strip():
            problems.append("fal key is empty (set FAL_KEY)")
        segments = self.endpoint.strip("/").split("/")
        if len(segments) < 2 or not all(segments):
            problems.append(f"fal endpoint {self.endpoint!r} is not of the form owner/app[/path]")
        for name in ("queue_base", "rest_base"):
            if (problem := http_url_problem(getattr(self, name))) is not None:
                problems.append(f"fal {name} {problem}")
        for name in (
            "connect_timeout",
            "request_timeout",
            "upload_timeout",
            "poll_interval",
            "poll_interval_max",
            "retry_base_delay",
            "retry_max_delay",
            "stream_idle_timeout",
            "cancel_timeout",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"fal {name} must be a positive number of seconds")
        if self.poll_backoff < 1:
            problems.append("fal poll_backoff must be at least 1")
        if self.max_attempts < 1:
            problems.append("fal max_attempts must be at least 1")
        # Both official clients refuse start timeouts of 1 s or less (fal-protocol.md §3).
        if self.start_timeout is not None and not self.start_timeout > 1:
            problems.append("fal start_timeout must be more than 1 second")
        if self.upload_lifetime is not None and self.upload_lifetime < 1:
            problems.append("fal upload_lifetime must be at least 1 second")
        if problems:
            raise ConfigError(problems)
