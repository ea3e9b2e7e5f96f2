"""Waiting on a queued request never gives up early; failures say what they are.

The real client against the fake fal: status, stream and result calls on a known request id
are retried past ``max_attempts`` until the turn's deadline; only a definite answer ends the
wait. Submits whose fate is unknown, account problems and the two kinds of timeout are told
apart.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import aiohttp
import pytest

from bot.domain.errors import (
    ModelAuthError,
    ModelSubmitUnknown,
    ModelTimeout,
    ModelUnavailable,
)
from bot.domain.models import ModelRequest
from bot.fal import FalClient
from tests.fakes.fal import Failure, FakeFal, Fault, Route
from tests.fakes.fal_fixtures import FakeFalFactory, fal_settings_for

pytestmark = pytest.mark.timeout(30)


def client_for(session: aiohttp.ClientSession, fake: FakeFal, **overrides: Any) -> FalClient:
    return FalClient(session, fal_settings_for(fake, **overrides), rng=random.Random(3))


# A GET on a known request id fails this many times in a row: more than max_attempts (5).
STREAK = 9


@pytest.mark.parametrize(
    ("make", "route", "overrides"),
    [
        (lambda r: Fault.server_error(500, r, error_type="internal_error"), "status", {}),
        (lambda r: Fault.server_error(503, r), "result", {}),
        (lambda r: Fault.ingress(502, r), "status", {}),
        (lambda r: Fault.ingress(500, r), "result", {}),
        (lambda r: Fault.rate_limited(r), "status", {}),
        (lambda r: Fault.reset(r), "status", {}),
        (lambda r: Fault.reset(r), "result", {}),
        (lambda r: Fault.slow(3.0, r), "status", {"request_timeout": 0.1}),
    ],
    ids=[
        "500",
        "503-result",
        "ingress-502",
        "ingress-500-result",
        "429",
        "reset",
        "reset-result",
        "timeout",
    ],
)
async def test_calls_on_a_known_request_are_retried_past_max_attempts(
    fake_fal: FakeFal,
    fal_http_session: aiohttp.ClientSession,
    make: Any,
    route: Route,
    overrides: dict[str, Any],
) -> None:
    client = client_for(fal_http_session, fake_fal, use_status_stream=False, **overrides)
    fault = fake_fal.add_fault(make(route))
    fault.times = STREAK

    reply = await client.wait(await client.submit(ModelRequest(prompt="hi")), timeout=20)

    assert reply.output == "echo: hi"
    assert fault.hits == STREAK
    assert len(fake_fal.requests) == 1


async def test_a_dropped_stream_then_failing_polls_still_get_the_answer(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    fake_fal.hold()
    fake_fal.add_fault(Fault.stream_drop())
    polls = fake_fal.add_fault(Fault.ingress(503, "status"))
    polls.times = STREAK
    handle = await fal_model_client.submit(ModelRequest(prompt="hi"))
    waiting = fal_model_client.wait(handle, timeout=20)

    async def release_when_polls_failed() -> None:
        await fake_fal.wait_for(lambda: polls.hits >= STREAK, timeout=15)
        await fake_fal.release(handle.request_id)

    reply, _ = await asyncio.gather(waiting, release_when_polls_failed())
    assert reply.output == "echo: hi"
    assert [c.route for c in fake_fal.calls][:2] == ["submit", "stream"]


async def test_a_failed_request_is_a_definite_answer_not_retried(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    fake_fal.hold()
    handle = await fal_model_client.submit(ModelRequest(prompt="hi"))
    await fake_fal.release(
        handle.request_id, Failure.infra(503, "runner_disconnected", "Runner disconnected")
    )

    with pytest.raises(ModelUnavailable) as caught:
        await fal_model_client.wait(handle, timeout=10)

    assert "runner_disconnected" in caught.value.message
    assert len(fake_fal.calls_to("result")) == 1


async def test_an_unknown_request_id_ends_the_wait_at_once(
    fake_fal: FakeFal, fal_http_session: aiohttp.ClientSession
) -> None:
    client = client_for(fal_http_session, fake_fal)
    rid = "00000000-0000-4000-8000-000000000000"

    with pytest.raises(ModelUnavailable):
        await client.wait(client.handle_for(rid), timeout=10)
    assert len(fake_fal.calls_to("status")) == 1


async def test_fal_failing_until_the_deadline_is_a_queue_timeout_and_cancels(
    fake_fal_factory: FakeFalFactory, fal_http_session: aiohttp.ClientSession
) -> None:
    fake = await fake_fal_factory(concurrency=0)  # nothing ever runs
    client = client_for(fal_http_session, fake, use_status_stream=False)
    handle = await client.submit(ModelRequest(prompt="hi"))
    fake.add_fault(Fault.ingress(503, "status", times=None))

    with pytest.raises(ModelTimeout) as caught:
        await client.wait(handle, timeout=0.5)

    assert caught.value.phase == "queue"
    assert caught.value.silent_for is None  # too short a wait to blame fal (under 1 s)
    assert caught.value.request_id == handle.request_id
    assert len(fake.calls_to("status")) > 5  # kept trying right up to the deadline
    assert fake.requests[handle.request_id].cancel_requested


async def test_fal_failing_for_the_second_half_of_the_wait_is_said(
    fake_fal: FakeFal, fal_http_session: aiohttp.ClientSession
) -> None:
    client = client_for(fal_http_session, fake_fal, use_status_stream=False)
    fake_fal.hold()
    handle = await client.submit(ModelRequest(prompt="hi"))
    await fake_fal.wait_for_state(handle.request_id, "IN_PROGRESS")
    fake_fal.add_fault(Fault.reset("status", times=None))

    with pytest.raises(ModelTimeout) as caught:
        await client.wait(handle, timeout=2.0)

    assert caught.value.silent_for is not None and caught.value.silent_for >= 1.0


async def test_a_running_request_past_the_deadline_is_a_run_timeout(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    fake_fal.hold()
    handle = await fal_model_client.submit(ModelRequest(prompt="hi"))
    await fake_fal.wait_for_state(handle.request_id, "IN_PROGRESS")

    with pytest.raises(ModelTimeout) as caught:
        await fal_model_client.wait(handle, timeout=0.3)
    assert caught.value.phase == "run"


async def test_fal_start_timeout_is_a_queue_timeout(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    fake_fal.hold()
    handle = await fal_model_client.submit(ModelRequest(prompt="hi"))
    fake_fal.complete_now(handle.request_id, Failure.start_timeout())

    with pytest.raises(ModelTimeout) as caught:
        await fal_model_client.wait(handle, timeout=5)
    assert caught.value.phase == "queue"


async def test_a_submit_lost_after_sending_is_an_unknown_fate(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    fake_fal.add_fault(Fault.reset_after("submit"))

    with pytest.raises(ModelSubmitUnknown):
        await fal_model_client.submit(ModelRequest(prompt="hi"))
    assert len(fake_fal.requests) == 1


async def test_submit_unavailable_says_how_long_it_tried(
    fake_fal: FakeFal, fal_http_session: aiohttp.ClientSession
) -> None:
    client = client_for(fal_http_session, fake_fal, retry_base_delay=0.05, retry_max_delay=0.1)
    fake_fal.add_fault(Fault.ingress(502, "submit", times=None))

    with pytest.raises(ModelUnavailable) as caught:
        await client.submit(ModelRequest(prompt="hi"))

    assert not isinstance(caught.value, ModelSubmitUnknown)
    assert caught.value.tried_for is not None and caught.value.tried_for > 0.1
    assert fake_fal.requests == {}


@pytest.mark.parametrize(
    ("fault", "condition"),
    [
        (Fault.account_locked(), "out_of_credit"),
        (Fault.account_locked(reason="TOP_UP."), "out_of_credit"),
        (
            Fault.account_locked(reason="Admin lock. Please contact support@fal.ai."),
            "account_locked",
        ),
        (Fault.key_refused(), "key_refused"),
        (Fault("submit", status=403, body={"detail": "Access denied"}), "no_permission"),
    ],
    ids=["exhausted-balance", "top-up", "admin-lock", "401", "403-scope"],
)
async def test_account_problems_are_named_and_logged_once_at_error(
    fake_fal: FakeFal,
    fal_model_client: FalClient,
    caplog: pytest.LogCaptureFixture,
    fault: Fault,
    condition: str,
) -> None:
    fault.route, fault.times = "submit", 3
    fake_fal.add_fault(fault)

    for _ in range(3):
        with pytest.raises(ModelAuthError) as caught:
            await fal_model_client.submit(ModelRequest(prompt="hi"))
        assert caught.value.condition == condition
    errors = [r for r in caught_records(caplog) if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert condition.replace("_", " ") in errors[0].getMessage()

    await fal_model_client.submit(ModelRequest(prompt="hi"))  # fixed: logged again next time
    fake_fal.add_fault(Fault(**{**vars_of(fault), "hits": 0, "times": 1}))
    with pytest.raises(ModelAuthError):
        await fal_model_client.submit(ModelRequest(prompt="hi"))
    assert len([r for r in caught_records(caplog) if r.levelno == logging.ERROR]) == 2


def caught_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bot.fal.client"]


def vars_of(fault: Fault) -> dict[str, Any]:
    return {name: getattr(fault, name) for name in Fault.__dataclass_fields__}
