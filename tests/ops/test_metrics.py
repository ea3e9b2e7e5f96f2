"""The metrics facade on its own: failure kinds as labels, the one-hour window of active
conversations, in-flight turns, and the exposition's names."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.domain import errors
from bot.ops.metrics import Metrics, failure_kind, sample


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (errors.ModelTimeout("late"), "timeout"),
        (errors.ModelUnavailable("down"), "fal_unavailable"),
        (errors.ModelInputRejected("no"), "input_rejected"),
        (errors.ModelError("odd"), "model"),
        (errors.AttachmentError("a.png", "too big"), "attachment"),
        (errors.DeliveryError("gone"), "delivery"),
        (errors.StorageUnavailable("busy"), "storage"),
        (errors.QuotaExceeded("user", datetime.now(UTC)), "other"),
        (ValueError("a bug"), "other"),
    ],
)
def test_failure_kinds(error: Exception, kind: str) -> None:
    assert failure_kind(error) == kind


def test_turns_in_flight_and_conversations_active_in_the_last_hour() -> None:
    clock = Clock()
    metrics = Metrics(clock=clock)
    metrics.turn_started(1)
    metrics.turn_started(2)
    assert sample(metrics, "seed_bot_turns_in_flight") == 2
    metrics.turn_ended()
    metrics.turn_failed(errors.ModelTimeout("late"))
    metrics.turn_ended()
    assert sample(metrics, "seed_bot_turns_in_flight") == 0
    assert sample(metrics, "seed_bot_turns_total", {"outcome": "failed", "kind": "timeout"}) == 1
    assert sample(metrics, "seed_bot_conversations_active") == 2
    clock.now += 1800
    metrics.turn_started(2)  # conversation 2 active again
    metrics.turn_ended()
    clock.now += 1801  # conversation 1's last turn is now over an hour old
    assert sample(metrics, "seed_bot_conversations_active") == 1


def test_exposition_names_follow_prometheus_conventions() -> None:
    metrics = Metrics()
    metrics.fal_call("submit", "200")
    metrics.retry("status")
    metrics.turn_refused("access")
    metrics.watch_gateway(lambda: [(0, 0.05), (1, float("inf"))])
    text = metrics.render().decode()
    assert 'seed_bot_fal_calls_total{kind="submit",status="200"} 1.0' in text
    assert 'seed_bot_retries_total{kind="status"} 1.0' in text
    assert 'seed_bot_turns_total{kind="access",outcome="refused"} 1.0' in text
    assert 'seed_bot_gateway_latency_seconds{shard="0"} 0.05' in text
    assert 'shard="1"' not in text  # no heartbeat acknowledged yet: no value
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    for name in names:
        assert name.startswith("seed_bot_"), name


def test_conversations_an_hour_old_leave_without_a_scrape() -> None:
    # Nobody scrapes a bot whose metrics endpoint is off: the window still holds only
    # about the last hour's conversations.
    clock = Clock()
    metrics = Metrics(clock=clock)
    for n in range(20_000):
        metrics.turn_started(n)
        metrics.turn_ended()
        clock.now += 1.0  # one conversation a second: 3,600 in the window
    assert len(metrics._active) <= 2 * 3600
