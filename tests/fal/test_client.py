"""The real fal client against the fake fal server."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from bot.domain.errors import (
    AttachmentError,
    FieldProblem,
    ModelAuthError,
    ModelCancelled,
    ModelError,
    ModelInputRejected,
    ModelProtocolError,
    ModelRateLimited,
    ModelTimeout,
    ModelUnavailable,
)
from bot.domain.models import ChatMessage, ModelRequest, Progress, RequestHandle
from bot.domain.ports import ModelClient
from bot.fal import FalClient, FalSettings
from tests.fakes.fal import DEFAULT_KEY, Failure, FakeFal, Fault, ModelOutput, billable_units
from tests.fakes.fal_fixtures import FakeFalFactory, fal_settings_for
from tests.fal.helpers import FirstConnectRefused, ProgressLog, assert_secret_free

WRONG_KEY = "wrong-key-7d21e0"


@pytest.fixture(autouse=True)
def no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test here logs at DEBUG; neither key may show up in any line."""
    caplog.set_level(logging.DEBUG)
    yield
    assert DEFAULT_KEY not in caplog.text
    assert WRONG_KEY not in caplog.text


def client_for(session: aiohttp.ClientSession, fake: FakeFal, **overrides: Any) -> FalClient:
    return FalClient(session, fal_settings_for(fake, **overrides), rng=random.Random(1))


class Timings:
    """Hears the client's calls; keeps the queue and run times of the requests waited for."""

    def __init__(self) -> None:
        self.queued: list[float] = []
        self.runs: list[float] = []

    def fal_call(self, kind: str, status: str) -> None: ...

    def retry(self, kind: str) -> None: ...

    def queue_waited(self, seconds: float) -> None:
        self.queued.append(seconds)

    def ran(self, seconds: float) -> None:
        self.runs.append(seconds)


async def upload_image(client: FalClient, name: str = "cat.png") -> str:
    return await client.upload(b"\x89PNG fake", content_type="image/png", file_name=name)


# --- the normal turn -----------------------------------------------------------------------


async def test_turn_via_status_stream_costs_three_calls(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    handle = await fal_model_client.submit(ModelRequest(prompt="hello"))
    reply = await fal_model_client.wait(handle, timeout=5)

    assert reply.output == "echo: hello"
    assert reply.reasoning == "The user said: hello"
    assert reply.request_id == handle.request_id
    assert reply.messages == (
        ChatMessage("user", "hello"),
        ChatMessage("assistant", "echo: hello"),
    )
    assert reply.inference_time is not None
    assert [c.route for c in fake_fal.calls] == ["submit", "stream", "result"]
    for call in fake_fal.calls:
        assert call.headers["Authorization"] == f"Key {DEFAULT_KEY}"
    assert fake_fal.calls[1].query == {"logs": "0"}


async def test_submit_sends_the_documented_body_and_keeps_fal_urls(
    fake_fal: FakeFal, fal_http_session: aiohttp.ClientSession
) -> None:
    client = client_for(fal_http_session, fake_fal, start_timeout=30)
    image = await upload_image(client)
    earlier = (
        ChatMessage("user", [{"type": "text", "text": "before"}]),
        ChatMessage("assistant", "ok"),
    )
    request = ModelRequest(
        prompt="what is this?",
        messages=earlier,
        image_urls=(image,),
        system_prompt="be brief",
        thinking="disabled",
        reasoning_effort="low",
        max_completion_tokens=100,
        temperature=0.5,
        top_p=0.9,
    )

    handle = await client.submit(request)
    reply = await client.wait(handle, timeout=5)

    submit = fake_fal.calls_to("submit")[0]
    assert submit.json == {
        "prompt": "what is this?",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "before"}]},
            {"role": "assistant", "content": "ok"},
        ],
        "image_urls": [image],
        "system_prompt": "be brief",
        "thinking": "disabled",
        "reasoning_effort": "low",
        "max_completion_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
    }
    assert submit.headers["Content-Type"] == "application/json"
    assert submit.headers["X-Fal-Request-Timeout"] == "30.0"
    fake_request = fake_fal.requests[handle.request_id]
    assert handle.response_url == fake_fal.request_url(fake_request)
    assert handle.status_url == f"{handle.response_url}/status"
    assert handle.cancel_url == f"{handle.response_url}/cancel"
    assert reply.reasoning is None  # thinking disabled
    assert reply.messages[:2] == earlier
    assert reply.messages[2] == ChatMessage(
        "user",
        [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": image}},
        ],
    )


async def test_minimal_request_leaves_unset_fields_out(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    await fal_model_client.submit(ModelRequest(prompt="hi"))

    call = fake_fal.calls_to("submit")[0]
    assert call.json == {"prompt": "hi"}
    assert "X-Fal-Request-Timeout" not in call.headers


async def test_history_content_goes_back_unchanged(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    image = await upload_image(fal_model_client)
    first = await fal_model_client.wait(
        await fal_model_client.submit(ModelRequest(prompt="look", image_urls=(image,))),
        timeout=5,
    )
    await fal_model_client.wait(
        await fal_model_client.submit(ModelRequest(prompt="and now?", messages=first.messages)),
        timeout=5,
    )

    sent = fake_fal.calls_to("submit")[1].json["messages"]
    assert sent == [{"role": m.role, "content": m.content} for m in first.messages]


# --- waiting: stream, polling, fallbacks, progress -----------------------------------------


@pytest.mark.parametrize("use_status_stream", [True, False], ids=["stream", "polling"])
async def test_progress_reports_queue_positions_then_running_once(
    fake_fal_factory: FakeFalFactory,
    fal_http_session: aiohttp.ClientSession,
    use_status_stream: bool,
) -> None:
    fake = await fake_fal_factory(concurrency=1)
    fake.hold()
    timings = Timings()
    settings = fal_settings_for(fake, use_status_stream=use_status_stream)
    client = FalClient(fal_http_session, settings, rng=random.Random(1), observer=timings)
    first = await client.submit(ModelRequest(prompt="one"))
    second = await client.submit(ModelRequest(prompt="two"))
    third = await client.submit(ModelRequest(prompt="three"))
    progress = ProgressLog()

    waiting = asyncio.create_task(client.wait(third, on_progress=progress, timeout=10))
    await progress.wait_for(Progress("queued", 1))
    await fake.release(first.request_id)
    await progress.wait_for(Progress("queued", 0))
    await fake.release(second.request_id)
    await progress.wait_for(Progress("running"))
    await fake.release(third.request_id)
    reply = await waiting

    assert reply.output == "echo: three"
    assert progress.updates == [
        Progress("queued", 1),
        Progress("queued", 0),
        Progress("running"),
    ]
    # Timed for the metrics: one queue wait (until it ran), one run (until its answer).
    assert (len(timings.queued), len(timings.runs)) == (1, 1)
    if use_status_stream:
        assert len(fake.calls_to("stream")) == 1
        assert fake.calls_to("status") == []
    else:
        assert fake.calls_to("stream") == []


@pytest.mark.parametrize(
    "fault",
    [
        Fault("stream", status=404, body={"detail": "Not Found"}),
        Fault.ingress(503, "stream"),
        # 200 but not an event stream
        Fault("stream", status=200, body={"status": "COMPLETED"}),
        Fault.stream_drop(),
        Fault.stream_silent(),
    ],
    ids=["404", "ingress-503", "wrong-content-type", "dropped", "idle"],
)
async def test_falls_back_to_polling_when_the_stream_fails(
    fake_fal: FakeFal, fal_http_session: aiohttp.ClientSession, fault: Fault
) -> None:
    client = client_for(fal_http_session, fake_fal, stream_idle_timeout=0.2)
    fake_fal.add_fault(fault)
    fake_fal.hold()
    progress = ProgressLog()
    handle = await client.submit(ModelRequest(prompt="hi"))

    waiting = asyncio.create_task(client.wait(handle, on_progress=progress, timeout=10))
    await fake_fal.wait_for_calls("status", 1)
    await fake_fal.release(handle.request_id)
    reply = await waiting

    assert reply.output == "echo: hi"
    assert fault.hits == 1
    assert len(fake_fal.calls_to("stream")) == 1  # given up, not reconnected
    assert progress.updates == [Progress("running")]
    assert [c.route for c in fake_fal.calls][-1] == "result"


async def test_cancelling_the_waiting_task_closes_the_stream_and_leaves_fal_alone(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    fake_fal.hold()
    handle = await fal_model_client.submit(ModelRequest(prompt="hi"))
    waiting = asyncio.create_task(fal_model_client.wait(handle, timeout=10))
    await fake_fal.wait_for(lambda: fake_fal.open_streams == 1)

    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    await fake_fal.wait_for(lambda: fake_fal.open_streams == 0 and fake_fal.closed_streams == 1)
    assert fake_fal.calls_to("cancel") == []
    assert fake_fal.requests[handle.request_id].state == "IN_PROGRESS"


async def test_cancelling_while_polling_propagates(
    fake_fal: FakeFal, fal_http_session: aiohttp.ClientSession
) -> None:
    client = client_for(fal_http_session, fake_fal, use_status_stream=False)
    fake_fal.hold()
    handle = await client.submit(ModelRequest(prompt="hi"))
    waiting = asyncio.create_task(client.wait(handle, timeout=10))
    await fake_fal.wait_for_calls("status", 2)

    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert fake_fal.calls_to("cancel") == []


async def test_progress_callback_errors_propagate(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    fake_fal.hold()
    handle = await fal_model_client.submit(ModelRequest(prompt="hi"))

    async def broken(progress: Progress) -> None:
        raise aiohttp.ClientConnectionError("discord is down")

    with pytest.raises(aiohttp.ClientConnectionError):
        await fal_model_client.wait(handle, on_progress=broken, timeout=5)
    assert fake_fal.calls_to("status") == []  # not mistaken for a stream failure


# --- deadline, cancel, resume --------------------------------------------------------------


async def test_deadline_cancels_at_fal_and_raises_timeout(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    fake_fal.hold()  # stuck IN_PROGRESS forever
    handle = await fal_model_client.submit(ModelRequest(prompt="hi"))

    with pytest.raises(ModelTimeout) as caught:
        await fal_model_client.wait(handle, timeout=0.2)

    assert caught.value.request_id == handle.request_id
    assert_secret_free(caught.value)
    cancels = fake_fal.calls_to("cancel")
    assert len(cancels) == 1
    assert cancels[0].method == "PUT"
    assert cancels[0].headers["Authorization"] == f"Key {DEFAULT_KEY}"
    assert fake_fal.requests[handle.request_id].cancel_requested


async def test_deadline_still_raises_timeout_when_cancel_fails(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    fake_fal.hold()
    fake_fal.add_fault(Fault.server_error(500, "cancel"))
    handle = await fal_model_client.submit(ModelRequest(prompt="hi"))

    with pytest.raises(ModelTimeout):
        await fal_model_client.wait(handle, timeout=0.1)
    assert len(fake_fal.calls_to("cancel")) == 1


async def test_cancel_accepts_queued_finished_and_unknown_requests(
    fake_fal_factory: FakeFalFactory, fal_http_session: aiohttp.ClientSession
) -> None:
    fake = await fake_fal_factory(concurrency=1)
    fake.hold()
    client = client_for(fal_http_session, fake)
    running = await client.submit(ModelRequest(prompt="one"))
    queued = await client.submit(ModelRequest(prompt="two"))

    assert await client.cancel(queued) is None  # 202 CANCELLATION_REQUESTED
    with pytest.raises(ModelCancelled) as caught:
        await client.wait(queued, timeout=5)
    assert caught.value.request_id == queued.request_id

    await fake.release(running.request_id)
    # 400 ALREADY_COMPLETED: fal billed it, and the answer says for how much
    finished = await client.cancel(running)
    request = fake.requests[running.request_id]
    assert request.result_body is not None
    assert finished is not None and finished.output == "echo: one"
    assert finished.billable_units == billable_units(request.input, request.result_body)
    unknown = client.handle_for("00000000-0000-4000-8000-000000000000")
    assert await client.cancel(unknown) is None  # 404
    assert [c.route for c in fake.calls].count("cancel") == 3


async def test_cancel_raises_on_other_refusals(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    fake_fal.hold()
    handle = await fal_model_client.submit(ModelRequest(prompt="hi"))
    fake_fal.add_fault(Fault.server_error(500, "cancel", error_type="internal_error"))

    with pytest.raises(ModelUnavailable) as caught:
        await fal_model_client.cancel(handle)
    assert caught.value.request_id == handle.request_id


async def test_running_request_that_ignores_cancel_still_answers(
    fake_fal_factory: FakeFalFactory, fal_http_session: aiohttp.ClientSession
) -> None:
    fake = await fake_fal_factory(honour_cancel=False)
    fake.hold()
    client = client_for(fal_http_session, fake)
    handle = await client.submit(ModelRequest(prompt="hi"))
    await fake.wait_for_state(handle.request_id, "IN_PROGRESS")

    await client.cancel(handle)
    await fake.release(handle.request_id)

    assert (await client.wait(handle, timeout=5)).output == "echo: hi"


async def test_resume_by_request_id_in_a_fresh_client(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    fake_fal.hold()
    handle = await fal_model_client.submit(ModelRequest(prompt="survive a restart"))

    async with aiohttp.ClientSession() as session:
        fresh = FalClient(session, fal_settings_for(fake_fal))
        resumed = fresh.handle_for(handle.request_id)
        assert resumed == RequestHandle(
            request_id=handle.request_id,
            status_url=f"{fake_fal.base_url}/fal-ai/bytedance/requests/{handle.request_id}/status",
            response_url=f"{fake_fal.base_url}/fal-ai/bytedance/requests/{handle.request_id}",
            cancel_url=f"{fake_fal.base_url}/fal-ai/bytedance/requests/{handle.request_id}/cancel",
        )
        waiting = asyncio.create_task(fresh.wait(resumed, timeout=5))
        await fake_fal.wait_for(lambda: fake_fal.open_streams == 1)
        await fake_fal.release(handle.request_id)
        reply = await waiting

    assert reply.output == "echo: survive a restart"
    assert reply.request_id == handle.request_id
    assert [c.route for c in fake_fal.calls] == ["submit", "stream", "result"]


async def test_handle_without_urls_and_foreign_urls_use_the_queue_base(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    handle = await fal_model_client.submit(ModelRequest(prompt="hi"))
    bare = RequestHandle(handle.request_id)
    foreign = RequestHandle(
        handle.request_id,
        status_url=f"https://elsewhere.test/requests/{handle.request_id}/status",
        response_url=f"https://elsewhere.test/requests/{handle.request_id}",
        cancel_url=f"https://elsewhere.test/requests/{handle.request_id}/cancel",
    )

    assert (await fal_model_client.wait(bare, timeout=5)).output == "echo: hi"
    assert (await fal_model_client.wait(foreign, timeout=5)).output == "echo: hi"
    assert all(c.path.startswith("/fal-ai/bytedance/") for c in fake_fal.calls)


def test_handle_for_refuses_ids_that_would_change_the_path(fal_model_client: FalClient) -> None:
    with pytest.raises(ModelProtocolError):
        fal_model_client.handle_for("../../steal")


async def test_unknown_request_raises_unavailable(
    fake_fal: FakeFal, fal_http_session: aiohttp.ClientSession
) -> None:
    client = client_for(fal_http_session, fake_fal, use_status_stream=False)
    rid = "00000000-0000-4000-8000-000000000000"

    with pytest.raises(ModelUnavailable) as caught:
        await client.wait(client.handle_for(rid), timeout=5)
    assert caught.value.request_id == rid


# --- retries -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "overrides"),
    [
        (Fault.rate_limited("submit", times=2), {}),
        (Fault.ingress(502, "submit"), {}),
        (Fault.ingress(503, "submit"), {}),
        (Fault.ingress(504, "submit"), {}),
        (Fault("submit", status=408, body={"detail": "Request Timeout"}), {}),
        (Fault("submit", status=409, body={"detail": "Conflict"}), {}),
        (Fault.ingress(502, "result", times=2), {}),
        (Fault.rate_limited("result"), {}),
        (Fault.ingress(503, "status", times=2), {"use_status_stream": False}),
        (Fault.reset("result", times=2), {}),
        (Fault.reset("status", times=2), {"use_status_stream": False}),
        (Fault.slow(3.0, "result"), {"request_timeout": 0.2}),
    ],
    ids=[
        "429-submit",
        "ingress-502-submit",
        "ingress-503-submit",
        "ingress-504-submit",
        "408-submit",
        "409-submit",
        "ingress-502-result",
        "429-result",
        "ingress-503-status",
        "reset-result",
        "reset-status",
        "read-timeout-result",
    ],
)
async def test_retryable_failures_are_retried(
    fake_fal: FakeFal,
    fal_http_session: aiohttp.ClientSession,
    fault: Fault,
    overrides: dict[str, Any],
) -> None:
    client = client_for(fal_http_session, fake_fal, **overrides)
    fake_fal.add_fault(fault)

    reply = await client.wait(await client.submit(ModelRequest(prompt="hi")), timeout=10)

    assert reply.output == "echo: hi"
    assert fault.route is not None
    assert fault.hits == fault.times
    assert len(fake_fal.calls_to(fault.route)) == fault.hits + 1
    assert len(fake_fal.requests) == 1


async def test_retry_after_is_honoured_within_the_cap(
    fake_fal: FakeFal, fal_http_session: aiohttp.ClientSession
) -> None:
    client = client_for(fal_http_session, fake_fal, retry_max_delay=0.3)
    fake_fal.add_fault(Fault("submit", status=429, headers={"Retry-After": "60"}))

    await client.submit(ModelRequest(prompt="hi"))

    first, second = fake_fal.calls_to("submit")
    assert 0.29 <= second.time - first.time < 2.0


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.rate_limited("submit", times=None), ModelRateLimited),
        (Fault.ingress(503, "submit", times=None), ModelUnavailable),
    ],
    ids=["429", "ingress-503"],
)
async def test_retries_stop_after_max_attempts(
    fake_fal: FakeFal,
    fal_model_client: FalClient,
    fal_settings: FalSettings,
    fault: Fault,
    error: type[ModelError],
) -> None:
    fake_fal.add_fault(fault)

    with pytest.raises(error) as caught:
        await fal_model_client.submit(ModelRequest(prompt="hi"))

    assert len(fake_fal.calls_to("submit")) == fal_settings.max_attempts
    assert fake_fal.requests == {}
    assert_secret_free(caught.value)


async def test_submit_is_not_repeated_after_a_reset_once_sent(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    fake_fal.add_fault(Fault.reset_after("submit"))

    with pytest.raises(ModelUnavailable) as caught:
        await fal_model_client.submit(ModelRequest(prompt="hi"))

    assert "unknown whether fal received" in caught.value.message
    assert len(fake_fal.calls_to("submit")) == 1
    assert len(fake_fal.requests) == 1  # fal did queue it; a blind retry would make two
    assert_secret_free(caught.value)


async def test_submit_is_not_repeated_after_a_read_timeout(
    fake_fal: FakeFal, fal_http_session: aiohttp.ClientSession
) -> None:
    client = client_for(fal_http_session, fake_fal, request_timeout=0.2)
    fake_fal.add_fault(Fault.slow(3.0, "submit"))

    with pytest.raises(ModelUnavailable):
        await client.submit(ModelRequest(prompt="hi"))

    assert len(fake_fal.calls_to("submit")) == 1


async def test_submit_is_retried_when_the_connection_was_refused(fake_fal: FakeFal) -> None:
    resolver = FirstConnectRefused(fake_fal.port)
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            # A proxy-like base: fal's returned URLs point elsewhere, so the client builds
            # its own on this base for status and result.
            client = client_for(session, fake_fal, queue_base=f"http://fal.test:{fake_fal.port}")
            handle = await client.submit(ModelRequest(prompt="hi"))
            reply = await client.wait(handle, timeout=5)
    finally:
        await resolver.close()  # a connector closes only the resolvers it made

    assert reply.output == "echo: hi"
    assert resolver.lookups >= 2
    assert len(fake_fal.calls_to("submit")) == 1
    assert len(fake_fal.requests) == 1


async def test_fault_storm_is_weathered(
    fake_fal_factory: FakeFalFactory, fal_http_session: aiohttp.ClientSession
) -> None:
    fake = await fake_fal_factory(seed=7)
    storm = fake.add_fault(Fault.ingress(503, None, times=None))
    storm.probability = 0.3
    resets = fake.add_fault(Fault.reset("result", times=None))
    resets.probability = 0.2
    client = client_for(fal_http_session, fake)

    replies = [
        await client.wait(await client.submit(ModelRequest(prompt=f"turn {i}")), timeout=10)
        for i in range(8)
    ]

    assert [r.output for r in replies] == [f"echo: turn {i}" for i in range(8)]
    assert storm.hits > 0
    assert resets.hits > 0
    assert len(fake.requests) == 8


# --- failures that are not retried ---------------------------------------------------------


async def test_input_rejected_names_each_field_and_attachment(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    good = await upload_image(fal_model_client)
    handle = await fal_model_client.submit(
        ModelRequest(
            prompt="look",
            image_urls=(good, "https://invalid.test/missing.png"),
            video_urls=("https://invalid.test/clip.mp4",),
        )
    )

    with pytest.raises(ModelInputRejected) as caught:
        await fal_model_client.wait(handle, timeout=5)

    error = caught.value
    assert error.request_id == handle.request_id
    message = "Failed to download the file. Please check if the URL is accessible."
    assert error.problems == (
        FieldProblem("image_urls", 1, "file_download_error", message),
        FieldProblem("video_urls", 0, "file_download_error", message),
    )
    assert "image_urls[1]" in error.message
    assert "invalid.test" not in error.message
    assert len(fake_fal.calls_to("result")) == 1
    assert_secret_free(error)


async def test_input_rejected_for_bad_enum_and_string_detail(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    bad = ModelRequest(prompt="hi", thinking="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ModelInputRejected) as caught:
        await fal_model_client.wait(await fal_model_client.submit(bad), timeout=5)
    assert [(p.field, p.index, p.kind) for p in caught.value.problems] == [
        ("thinking", None, "enum")
    ]

    fake_fal.hold()
    handle = await fal_model_client.submit(ModelRequest(prompt="long"))
    fake_fal.complete_now(
        handle.request_id,
        Failure(422, {"detail": "Prompt is too long"}, "Invalid status code: 422"),
    )
    with pytest.raises(ModelInputRejected) as caught:
        await fal_model_client.wait(handle, timeout=5)
    assert caught.value.problems == (
        FieldProblem("body", None, "value_error", "Prompt is too long"),
    )


async def test_wrong_key_is_an_auth_error_without_retry(
    fake_fal: FakeFal, fal_http_session: aiohttp.ClientSession
) -> None:
    client = client_for(fal_http_session, fake_fal, key=WRONG_KEY)

    with pytest.raises(ModelAuthError) as caught:
        await client.submit(ModelRequest(prompt="hi"))
    assert len(fake_fal.calls_to("submit")) == 1
    assert_secret_free(caught.value, DEFAULT_KEY, WRONG_KEY)

    with pytest.raises(ModelAuthError):
        await client.upload(b"x", content_type="image/png", file_name="x.png")
    with pytest.raises(ModelAuthError):
        await client.cancel(client.handle_for("00000000-0000-4000-8000-000000000000"))


async def test_forbidden_is_an_auth_error(fake_fal: FakeFal, fal_model_client: FalClient) -> None:
    fake_fal.add_fault(Fault("submit", status=403, body={"detail": "Insufficient scope"}))

    with pytest.raises(ModelAuthError):
        await fal_model_client.submit(ModelRequest(prompt="hi"))
    assert len(fake_fal.calls_to("submit")) == 1


@pytest.mark.parametrize(
    ("fault", "error", "text"),
    [
        (Fault.user_timeout("result"), ModelTimeout, "request_timeout"),
        (Fault("result", status=200, body={"unexpected": True}), ModelProtocolError, "unexpected"),
        (Fault("result", status=200, body="<html>hi</html>"), ModelProtocolError, "unexpected"),
    ],
    ids=["504-user-timeout", "bad-json", "not-json"],
)
async def test_result_failures_are_mapped_without_retry(
    fake_fal: FakeFal,
    fal_model_client: FalClient,
    fault: Fault,
    error: type[ModelError],
    text: str,
) -> None:
    fake_fal.add_fault(fault)
    handle = await fal_model_client.submit(ModelRequest(prompt="hi"))

    with pytest.raises(error) as caught:
        await fal_model_client.wait(handle, timeout=5)

    assert caught.value.request_id == handle.request_id
    assert text in caught.value.message
    assert len(fake_fal.calls_to("result")) == 1
    assert_secret_free(caught.value)


async def test_user_timeout_on_submit_is_not_retried(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    fake_fal.add_fault(Fault.user_timeout("submit"))

    with pytest.raises(ModelTimeout):
        await fal_model_client.submit(ModelRequest(prompt="hi"))
    assert len(fake_fal.calls_to("submit")) == 1


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        (Failure.infra(503, "runner_disconnected", "Runner disconnected"), ModelUnavailable),
        (Failure.infra(504, "startup_timeout", "Startup timed out"), ModelTimeout),
        (Failure.start_timeout(), ModelTimeout),
        (Failure.cancelled(), ModelCancelled),
    ],
    ids=["runner-disconnected", "startup-timeout", "start-timeout", "cancelled"],
)
async def test_failed_requests_map_to_domain_errors(
    fake_fal: FakeFal, fal_model_client: FalClient, outcome: Failure, error: type[ModelError]
) -> None:
    fake_fal.hold()
    handle = await fal_model_client.submit(ModelRequest(prompt="hi"))
    await fake_fal.wait_for_state(handle.request_id, "IN_PROGRESS")
    fake_fal.complete_now(handle.request_id, outcome)

    with pytest.raises(error) as caught:
        await fal_model_client.wait(handle, timeout=5)
    assert caught.value.request_id == handle.request_id
    assert_secret_free(caught.value)


async def test_scripted_responder_and_auto_thinking(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    fake_fal.responder = lambda arguments: ModelOutput("scripted", reasoning=None)
    reply = await fal_model_client.wait(
        await fal_model_client.submit(ModelRequest(prompt="hi", thinking="auto")), timeout=5
    )
    assert (reply.output, reply.reasoning) == ("scripted", None)


# --- uploads -------------------------------------------------------------------------------


async def test_upload_round_trip(
    fake_fal: FakeFal, fal_model_client: FalClient, fal_http_session: aiohttp.ClientSession
) -> None:
    data = bytes(range(256)) * 10

    url = await fal_model_client.upload(data, content_type="video/mp4", file_name="clip.mp4")

    async with fal_http_session.get(url) as response:
        assert response.status == 200
        assert response.content_type == "video/mp4"
        assert await response.read() == data
    initiate, put, _download = fake_fal.calls
    assert initiate.route == "initiate"
    assert initiate.query == {"storage_type": "fal-cdn-v3"}
    assert initiate.json == {"content_type": "video/mp4", "file_name": "clip.mp4"}
    assert initiate.headers["Authorization"] == f"Key {DEFAULT_KEY}"
    assert put.route == "upload"
    assert put.headers["Content-Type"] == "video/mp4"
    assert "Authorization" not in put.headers
    assert put.body == data


@pytest.mark.parametrize(
    "fault",
    [
        Fault.ingress(503, "initiate", times=None),
        Fault("initiate", status=413, body={"detail": "File too large"}),
        Fault("initiate", status=200, body={"upload_url": 5}),
        Fault("upload", status=403, body="<Error>SignatureDoesNotMatch</Error>"),
        Fault.reset("upload", times=None),
    ],
    ids=["initiate-unavailable", "initiate-413", "initiate-garbage", "put-403", "put-reset"],
)
async def test_upload_failures_are_attachment_errors(
    fake_fal: FakeFal, fal_model_client: FalClient, fault: Fault
) -> None:
    fake_fal.add_fault(fault)

    with pytest.raises(AttachmentError) as caught:
        await fal_model_client.upload(b"x", content_type="image/png", file_name="cat.png")

    assert caught.value.filename == "cat.png"
    assert "X-Goog-Signature" not in str(caught.value)
    assert caught.value.__cause__ is None or "X-Goog-Signature" not in str(caught.value.__cause__)
    assert_secret_free(caught.value)


async def test_upload_put_is_retried_after_a_reset(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    fault = fake_fal.add_fault(Fault.reset("upload", times=2))

    url = await upload_image(fal_model_client)

    assert fault.hits == 2
    assert url.startswith(fake_fal.base_url)
    assert len(fake_fal.files) == 1


def chunked(data: bytes, opened: list[int]) -> Callable[[], AsyncGenerator[bytes, None]]:
    """A streamed body over ``data`` that counts how often it was opened."""

    async def body() -> AsyncGenerator[bytes, None]:
        opened.append(1)
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    return body


async def test_a_streamed_upload_announces_its_length_and_is_retried_by_reading_again(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    data = bytes(range(256)) * 40
    fault = fake_fal.add_fault(Fault.reset("upload", times=1))
    opened: list[int] = []

    url = await fal_model_client.upload_stream(
        chunked(data, opened), size=len(data), content_type="video/mp4", file_name="clip.mp4"
    )

    assert fault.hits == 1 and len(opened) == 2  # the retry read the file again
    [stored] = fake_fal.files.values()
    assert stored.data == data and url.endswith("/clip.mp4")
    put = fake_fal.calls_to("upload")[-1]
    assert put.headers["Content-Length"] == str(len(data))
    assert "Transfer-Encoding" not in put.headers and "Authorization" not in put.headers


async def test_a_streamed_body_whose_source_fails_ends_the_upload_unretried(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    opened: list[int] = []

    async def body() -> AsyncGenerator[bytes, None]:
        opened.append(1)
        yield b"x" * 1000
        raise AttachmentError("clip.mp4", "it is larger than Discord reported")

    with pytest.raises(AttachmentError, match="larger than Discord reported"):
        await fal_model_client.upload_stream(
            body, size=5000, content_type="video/mp4", file_name="clip.mp4"
        )

    assert len(opened) == 1
    assert fake_fal.files == {}


# --- secrets -------------------------------------------------------------------------------


def test_fal_client_implements_the_port(fal_model_client: FalClient) -> None:
    port: ModelClient = fal_model_client  # checked by mypy against the Protocol
    assert port is fal_model_client


def test_key_is_absent_from_reprs(fal_settings: FalSettings, fal_model_client: FalClient) -> None:
    for text in (repr(fal_settings), str(fal_settings), repr(fal_model_client)):
        assert DEFAULT_KEY not in text
    assert "queue_base" in repr(fal_model_client)
