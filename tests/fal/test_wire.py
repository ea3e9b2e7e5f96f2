"""Pure parts of the fal client: wire conversions, error mapping, retry decisions, settings."""

from __future__ import annotations

import json
import random
from types import MappingProxyType
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from bot.domain.conversation import new_history_messages
from bot.domain.errors import (
    ConfigError,
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
from bot.domain.models import ChatMessage, ModelRequest, RawJson
from bot.fal import FalSettings, app_path, wire
from bot.fal.http import (
    Response,
    backoff_delay,
    retryable_exception,
    retryable_status,
    transient_status,
)


def response(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(status, CIMultiDictProxy(CIMultiDict(headers or {})), b"", "application/json")


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("fal-ai/bytedance/seed/v2/mini", "fal-ai/bytedance"),
        ("fal-ai/flux", "fal-ai/flux"),
        ("workflows/someone/flow/extra", "workflows/someone/flow"),
        ("comfy/someone/graph", "comfy/someone/graph"),
    ],
)
def test_app_path_keeps_owner_and_app_only(endpoint: str, expected: str) -> None:
    assert app_path(endpoint) == expected


def test_submit_body_leaves_out_unset_fields_and_keeps_content() -> None:
    parts = ({"type": "text", "text": "hi"},)
    body = wire.submit_body(
        ModelRequest(
            prompt="p",
            messages=(ChatMessage("user", parts), ChatMessage("assistant", "a")),
            temperature=0.0,
        )
    )
    assert body == {
        "prompt": "p",
        "messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "a"}],
        "temperature": 0.0,
    }
    # frozen containers a store may hand back serialise as plain JSON
    frozen = ChatMessage("user", (MappingProxyType({"type": "text", "text": "hi"}),))
    assert wire.dumps(wire.submit_body(ModelRequest(prompt="p", messages=(frozen,)))) == (
        b'{"prompt":"p","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}'
    )


def test_stored_history_is_sent_as_its_json_text() -> None:
    stored = RawJson('[{"type":"text","text":"ünï \\"q\\""},{"z":1,"a":2}]')
    request = ModelRequest(prompt="p", messages=(ChatMessage("user", stored),))
    body = wire.dumps(wire.submit_body(request))
    assert body == (
        b'{"prompt":"p","messages":[{"role":"user","content":' + stored.text.encode() + b"}]}"
    )
    # Compact UTF-8, keys in their order, as the standard library would write it.
    decoded = json.loads(body)
    assert body == json.dumps(decoded, ensure_ascii=False, separators=(",", ":")).encode()


def test_parse_status_reads_the_status_field() -> None:
    assert wire.parse_status({"status": "IN_QUEUE", "queue_position": 3}, "r") == wire.QueueStatus(
        "IN_QUEUE", queue_position=3
    )
    assert wire.parse_status({"status": "IN_QUEUE"}, "r").queue_position is None
    done = wire.parse_status(
        {"status": "COMPLETED", "metrics": {"inference_time": 1.5}, "error": None}, "r"
    )
    assert done == wire.QueueStatus("COMPLETED", inference_time=1.5)
    with pytest.raises(ModelProtocolError):
        wire.parse_status({"status": "FAILED"}, "r")
    with pytest.raises(ModelProtocolError):
        wire.parse_status(["COMPLETED"], "r")


@pytest.mark.parametrize(
    "payload",
    [
        {"messages": []},
        {"output": "x"},
        {"output": "x", "messages": [{"content": "no role"}]},
        "text",
    ],
)
def test_parse_reply_rejects_malformed_results(payload: Any) -> None:
    with pytest.raises(ModelProtocolError) as caught:
        wire.parse_reply(wire.dumps(payload), "rid", None)
    assert caught.value.request_id == "rid"


@pytest.mark.parametrize(
    ("status", "headers", "body", "error", "fragment"),
    [
        (401, {}, {"detail": "No user found"}, ModelAuthError, "HTTP 401"),
        (403, {}, {"detail": "scope"}, ModelAuthError, "HTTP 403"),
        (429, {}, {"detail": "slow down"}, ModelRateLimited, "rate limiting"),
        (499, {}, {"detail": "cancelled"}, ModelCancelled, "cancelled"),
        (500, {}, {"detail": "x", "error_type": "client_cancelled"}, ModelCancelled, "cancelled"),
        (
            504,
            {},
            {"detail": "t", "error_type": "startup_timeout"},
            ModelTimeout,
            "startup_timeout",
        ),
        (503, {"X-Fal-Error-Type": "runner_disconnected"}, None, ModelUnavailable, "runner_disc"),
        (502, {}, None, ModelUnavailable, "HTTP 502"),
        (409, {}, None, ModelUnavailable, "HTTP 409"),
        (404, {}, {"status": "NOT_FOUND"}, ModelUnavailable, "no longer knows"),
        (400, {}, {"detail": "Request is still in progress"}, ModelProtocolError, "HTTP 400"),
        (422, {}, None, ModelProtocolError, "without saying why"),
        (302, {}, None, ModelProtocolError, "HTTP 302"),
    ],
)
def test_error_mapping(
    status: int,
    headers: dict[str, str],
    body: Any,
    error: type[ModelError],
    fragment: str,
) -> None:
    mapped = wire.error_for(status, headers, body, request_id="rid")
    assert type(mapped) is error
    assert mapped.request_id == "rid"
    assert fragment in mapped.message


def test_user_timeout_wins_over_status() -> None:
    mapped = wire.error_for(504, {}, None, request_id=None, timeout_type_user=True)
    assert isinstance(mapped, ModelTimeout)


def test_422_detail_list_becomes_field_problems() -> None:
    detail = [
        {
            "loc": ["body", "image_urls", 2],
            "msg": "Failed to download",
            "type": "file_download_error",
        },
        {"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"},
        {"loc": ["body"], "msg": "Bad input", "type": "value_error"},
        {"loc": ["body", "messages", True], "msg": "odd", "type": "x"},
        {},
    ]
    mapped = wire.error_for(422, {}, {"detail": detail}, request_id="rid")
    assert isinstance(mapped, ModelInputRejected)
    assert mapped.problems == (
        FieldProblem("image_urls", 2, "file_download_error", "Failed to download"),
        FieldProblem("prompt", None, "missing", "Field required"),
        FieldProblem("body", None, "value_error", "Bad input"),
        FieldProblem("messages", None, "x", "odd"),
        FieldProblem("body", None, "unknown", ""),
    )
    assert mapped.message.startswith("The model rejected the input: image_urls[2]: Failed")


def test_bad_request_with_string_detail_is_input_rejected() -> None:
    mapped = wire.error_for(
        400, {}, {"detail": "Unsupported", "error_type": "bad_request"}, request_id=None
    )
    assert isinstance(mapped, ModelInputRejected)
    assert mapped.problems == (FieldProblem("body", None, "bad_request", "Unsupported"),)


@pytest.mark.parametrize(
    ("status", "headers", "retry"),
    [
        (408, {}, True),
        (409, {}, True),
        (429, {"x-fal-request-id": "r"}, True),
        (502, {}, True),
        (503, {}, True),
        (504, {}, True),
        (502, {"x-fal-request-id": "r"}, False),
        (503, {"x-fal-request-id": "r"}, False),
        (504, {"X-Fal-Request-Timeout-Type": "user"}, False),
        (500, {}, True),  # the ingress: no request id, the request never got queued
        (500, {"x-fal-request-id": "r"}, False),
        (422, {}, False),
        (401, {}, False),
        (404, {}, False),
    ],
)
def test_retryable_statuses(status: int, headers: dict[str, str], retry: bool) -> None:
    assert retryable_status(response(status, headers)) is retry


@pytest.mark.parametrize(
    ("status", "headers", "retry"),
    [
        (429, {}, True),
        (500, {"x-fal-request-id": "r"}, True),
        (503, {"x-fal-request-id": "r"}, True),
        (504, {"X-Fal-Request-Timeout-Type": "user"}, False),
        (404, {}, False),
        (401, {}, False),
        (403, {}, False),
        (400, {}, False),
    ],
)
def test_transient_statuses_of_a_known_request(
    status: int, headers: dict[str, str], retry: bool
) -> None:
    """A GET on a known request id: any 5xx (id or not), 408/409/429 pass; a definite
    answer (404, an account refusal, fal's start-timeout verdict) does not."""
    assert transient_status(response(status, headers)) is retry


def test_transport_retries_depend_on_whether_the_request_was_sent() -> None:
    key: Any = None
    refused = aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))
    connect_timeout = aiohttp.ConnectionTimeoutError("connect timed out")
    after_send: list[Exception] = [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientOSError(104, "Connection reset by peer"),
        aiohttp.SocketTimeoutError("read timed out"),
        TimeoutError(),
        aiohttp.ClientPayloadError("truncated"),
    ]
    for never_sent in (refused, connect_timeout):
        assert retryable_exception(never_sent, idempotent=False)
        assert retryable_exception(never_sent, idempotent=True)
    for maybe_sent in after_send:
        assert not retryable_exception(maybe_sent, idempotent=False)
        assert retryable_exception(maybe_sent, idempotent=True)
    tls = aiohttp.ClientConnectorSSLError(key, OSError(1, "bad handshake"))
    assert not retryable_exception(tls, idempotent=True)
    assert not retryable_exception(aiohttp.InvalidURL("x"), idempotent=True)


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    settings = FalSettings(key="k", retry_base_delay=0.25, retry_max_delay=2.0)
    rng = random.Random(3)
    delays = [backoff_delay(n, settings, rng) for n in range(1, 9)]
    assert 0.125 <= delays[0] <= 0.375
    assert 0.25 <= delays[1] <= 0.75
    assert all(d <= 2.0 for d in delays)
    assert max(delays[4:]) > 1.0


def test_settings_list_every_problem_and_hide_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        FalSettings(
            key=" ",
            endpoint="single",
            queue_base="ftp://x",
            request_timeout=0,
            max_attempts=0,
            start_timeout=1,
        )
    assert len(caught.value.problems) == 6
    settings = FalSettings(key="very-secret")
    assert "very-secret" not in repr(settings)
    assert settings.queue_base == "https://queue.fal.run"
    assert settings.rest_base == "https://rest.fal.ai"
    assert settings.endpoint == "fal-ai/bytedance/seed/v2/mini"


def test_a_result_that_is_not_json_is_a_protocol_error() -> None:
    with pytest.raises(ModelProtocolError) as caught:
        wire.parse_reply(b"<html>Bad gateway</html>", "rid", None)
    assert caught.value.request_id == "rid"


def _result_body(messages: list[dict[str, Any]]) -> bytes:
    return wire.dumps({"output": "a", "reasoning_content": "r", "messages": messages})


def test_a_reply_decodes_only_the_messages_past_those_sent() -> None:
    returned: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "old q"}]},
        {"role": "assistant", "content": "old a"},
        {"role": "user", "content": [{"type": "text", "text": "new q"}]},
        {"role": "assistant", "content": "new a", "extra": 1},
    ]
    reply = wire.parse_reply(_result_body(returned), "rid", None, sent=2)
    assert reply.skipped == 2
    assert reply.messages == (
        ChatMessage("user", [{"type": "text", "text": "new q"}]),
        ChatMessage("assistant", "new a"),
    )
    assert (reply.output, reply.reasoning) == ("a", "r")
    # Unknown (a resumed request) or nothing sent: every message.
    for sent in (None, 0):
        whole = wire.parse_reply(_result_body(returned), "rid", None, sent=sent)
        assert whole.skipped == 0
        assert [m.role for m in whole.messages] == [m["role"] for m in returned]


@pytest.mark.parametrize("seed", range(40))
def test_what_a_reply_adds_to_the_history_is_the_same_decoded_in_part(seed: int) -> None:
    """Skipping what was sent changes no stored message, whatever fal returns: fewer
    messages than sent (the fallback to the last user message), system messages anywhere,
    a missing content."""
    shuffle = random.Random(seed)
    returned: list[dict[str, Any]] = []
    for n in range(shuffle.randrange(0, 9)):
        role = shuffle.choice(["system", "user", "assistant", "user", "assistant"])
        message: dict[str, Any] = {"role": role, "content": f"m{n}"}
        if shuffle.random() < 0.1:
            del message["content"]
        returned.append(message)
    body = _result_body(returned)
    whole = wire.parse_reply(body, "rid", None)
    for sent in (None, *range(0, 10)):
        part = wire.parse_reply(body, "rid", None, sent=sent)
        assert new_history_messages(part.messages, sent, part.skipped) == new_history_messages(
            whole.messages, sent
        ), (returned, sent)
