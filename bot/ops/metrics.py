"""The bot's Prometheus metrics: one registry per running bot and the typed facade the rest
of the code calls (it implements the domain's ``TurnObserver`` and ``CallObserver``).

Names follow Prometheus conventions (``seed_bot_…_total`` counters, ``_seconds``
histograms). Labels hold outcomes, kinds, statuses and shard numbers only: never message
content, a user name or a secret.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bot.domain import errors
from bot.domain.models import Cost
from bot.domain.observer import RefusalReason
from bot.domain.outage import Outage
from bot.domain.preparation import MediaPreparer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ACTIVE_WINDOW_SECONDS = 3600.0
# The window is pruned when it has doubled since its last pruning (amortised O(1) a turn).
ACTIVE_PRUNE_FLOOR = 1024

# Seconds: from a fraction of a second (database, Discord) to fal's slowest turns.
_LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
_FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

# A failure's kind, by its class (most specific first): a small, fixed set of label values.
_FAILURE_KINDS: tuple[tuple[type[Exception], str], ...] = (
    (errors.ModelTimeout, "timeout"),
    (errors.ModelInputRejected, "input_rejected"),
    (errors.ModelRateLimited, "fal_rate_limited"),
    (errors.ModelAuthError, "fal_auth"),
    (errors.ModelUnavailable, "fal_unavailable"),
    (errors.ModelCancelled, "cancelled"),
    (errors.ModelProtocolError, "fal_protocol"),
    (errors.ModelError, "model"),
    (errors.AttachmentError, "attachment"),
    (errors.DeliveryError, "delivery"),
    (errors.StorageError, "storage"),
)


def failure_kind(error: Exception) -> str:
    for cls, kind in _FAILURE_KINDS:
        if isinstance(error, cls):
            return kind
    return "other"


class _GatewayCollector(Collector):
    """``seed_bot_gateway_latency_seconds{shard}``, read from the client at each scrape."""

    def __init__(self, source: Callable[[], Iterable[tuple[int, float]]]) -> None:
        self._source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "seed_bot_gateway_latency_seconds",
            "Time between a gateway heartbeat and its acknowledgement, per shard.",
            labels=["shard"],
        )
        for shard_id, latency in self._source():
            if math.isfinite(latency):
                family.add_metric([str(shard_id)], latency)
        yield family


class Metrics:
    """Every metric of one bot process, and the methods that record them."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.registry = CollectorRegistry()
        r = self.registry
        self._turns = Counter(
            "seed_bot_turns",
            "Turns by outcome (answered, failed, stopped, refused) and kind (why it failed "
            "or was refused).",
            ["outcome", "kind"],
            registry=r,
        )
        self._turn_seconds = Histogram(
            "seed_bot_turn_duration_seconds",
            "From taking a message up to its answer being posted (answered turns).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._delivery_seconds = Histogram(
            "seed_bot_delivery_delay_seconds",
            "From the model's answer arriving to it being posted on Discord.",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self._queue_wait = Histogram(
            "seed_bot_fal_queue_wait_seconds",
            "Time a request waited in fal's queue before it started running.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._run_seconds = Histogram(
            "seed_bot_fal_run_seconds",
            "Time a request ran at fal, from starting to its answer.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._fal_calls = Counter(
            "seed_bot_fal_calls",
            "HTTP calls to fal by kind (submit, status, result, cancel, upload…) and status.",
            ["kind", "status"],
            registry=r,
        )
        self._retries = Counter(
            "seed_bot_retries", "Calls tried again, by kind.", ["kind"], registry=r
        )
        self._in_flight = Gauge(
            "seed_bot_turns_in_flight", "Turns running in this process.", registry=r
        )
        self._db_seconds = Histogram(
            "seed_bot_db_transaction_seconds",
            "Database transactions, from BEGIN to COMMIT or ROLLBACK (each attempt).",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self._discord_requests = Counter(
            "seed_bot_discord_requests",
            "REST requests to Discord by method and HTTP status (each attempt: a 429 is "
            "counted, then discord.py's retry of it).",
            ["method", "status"],
            registry=r,
        )
        self._cost_usd = Counter(
            "seed_bot_cost_usd",
            "What turns cost at fal, in dollars: billed units priced, or estimated "
            "(estimated=true) when fal reported none.",
            ["estimated"],
            registry=r,
        )
        self._active: dict[int, float] = {}
        self._prune_at = ACTIVE_PRUNE_FLOOR
        self._gauge(
            "seed_bot_conversations_active",
            "Conversations with a turn in this process in the last hour.",
            self._count_active,
        )

    def _gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A gauge whose value ``read`` gives at each scrape."""
        Gauge(name, doc, registry=self.registry).set_function(read)

    # -- exposition ------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    # -- turns (TurnObserver) --------------------------------------------------------------

    def turn_started(self, conversation_id: int) -> None:
        self._in_flight.inc()
        self._active[conversation_id] = self.clock()
        if len(self._active) >= self._prune_at:
            # Not only when scraped: with the endpoint off nobody reads the gauge, and the
            # window would keep every conversation ever seen.
            self._count_active()
            self._prune_at = max(ACTIVE_PRUNE_FLOOR, 2 * len(self._active))

    def turn_ended(self) -> None:
        self._in_flight.dec()

    def turn_answered(self, *, seconds: float, delivery_seconds: float) -> None:
        self._turns.labels("answered", "").inc()
        self._turn_seconds.observe(seconds)
        self._delivery_seconds.observe(delivery_seconds)

    def turn_failed(self, error: Exception) -> None:
        self._turns.labels("failed", failure_kind(error)).inc()

    def turn_stopped(self) -> None:
        self._turns.labels("stopped", "").inc()

    def turn_refused(self, reason: RefusalReason) -> None:
        self._turns.labels("refused", reason).inc()

    def _count_active(self) -> float:
        horizon = self.clock() - ACTIVE_WINDOW_SECONDS
        for key in [k for k, seen in self._active.items() if seen < horizon]:
            del self._active[key]
        return float(len(self._active))

    # -- calls (CallObserver) --------------------------------------------------------------

    def fal_call(self, kind: str, status: str) -> None:
        self._fal_calls.labels(kind, status).inc()

    def retry(self, kind: str) -> None:
        self._retries.labels(kind).inc()

    # -- fal's queue -----------------------------------------------------------------------

    def queue_waited(self, seconds: float) -> None:
        self._queue_wait.observe(seconds)

    def ran(self, seconds: float) -> None:
        self._run_seconds.observe(seconds)

    # -- sources read at scrape time or hooked in at start-up ------------------------------

    def watch_gateway(self, latencies: Callable[[], Iterable[tuple[int, float]]]) -> None:
        """Report each shard's heartbeat latency (``(shard_id, seconds)`` pairs)."""
        self.registry.register(_GatewayCollector(latencies))

    def watch_outage(self, outage: Outage) -> None:
        """Count the database's outages and show the store calls waiting on one."""
        outages = Counter(
            "seed_bot_database_outages",
            "Times the database became unreachable (store calls then wait for it).",
            registry=self.registry,
        )
        outages.inc(0)
        self._gauge(
            "seed_bot_database_waiting",
            "Store calls waiting now for the database to come back.",
            lambda: outage.holding,
        )

        def changed(down: bool) -> None:
            if down:
                outages.inc()

        outage.listeners.append(changed)

    def watch_slots(self, waiting: Callable[[], int]) -> None:
        """Show the turns waiting for an in-flight slot (``limits.max_in_flight``)."""
        self._gauge(
            "seed_bot_turns_waiting",
            "Turns waiting for an in-flight slot (counted in seed_bot_turns_in_flight too).",
            lambda: float(waiting()),
        )

    def discord_trace(self) -> aiohttp.TraceConfig:
        """Counts the Discord client's REST requests (``seed_bot_discord_requests_total``)
        from its HTTP session; the gateway's WebSocket upgrade (101) is not a REST call."""
        trace = aiohttp.TraceConfig()
        requests = self._discord_requests

        async def ended(
            _session: aiohttp.ClientSession, _context: Any, params: aiohttp.TraceRequestEndParams
        ) -> None:
            status = params.response.status
            if status != 101:
                requests.labels(params.method, str(status)).inc()

        async def failed(
            _session: aiohttp.ClientSession,
            _context: Any,
            params: aiohttp.TraceRequestExceptionParams,
        ) -> None:
            requests.labels(params.method, "error").inc()

        trace.on_request_end.append(ended)
        trace.on_request_exception.append(failed)
        return trace

    def cost_settled(self, cost: Cost) -> None:
        """A turn's cost is settled (``Budgets.observers``)."""
        self._cost_usd.labels("true" if cost.estimated else "false").inc(max(0.0, cost.usd))

    def watch_media(self, preparer: Callable[[], MediaPreparer]) -> None:
        """Show the attachments being prepared and waiting for room (``preparer`` gives the
        service's current one: a reload may replace it)."""
        self._gauge(
            "seed_bot_attachments_waiting",
            "Attachments waiting for room to be downloaded and uploaded (the in-flight bounds).",
            lambda: preparer().waiting,
        )
        self._gauge(
            "seed_bot_attachment_bytes_in_flight",
            "Bytes (by the sizes Discord reports) of the attachments being prepared now.",
            lambda: preparer().bytes.capacity - preparer().bytes.free,
        )

    def transaction_took(self, seconds: float) -> None:
        """One database transaction's time on its connection (``Database.timers``)."""
        self._db_seconds.observe(seconds)


def sample(metrics: Metrics, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The current value of one sample (0 when absent): for tests and the smoke check."""
    value: Any = metrics.registry.get_sample_value(name, dict(labels or {}))
    return float(value or 0.0)
