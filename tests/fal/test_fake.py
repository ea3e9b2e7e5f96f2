"""The fake fal server itself, spoken to with raw HTTP: the protocol facts it must honour
(fal-protocol.md §13), so the client tests rest on a faithful fake."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from tests.fakes.fal import DEFAULT_ENDPOINT, DEFAULT_KEY, FakeFal, Fault
from tests.fakes.fal_fixtures import FakeFalFactory

AUTH = {"Authorization": f"Key {DEFAULT_KEY}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    async with http.request(
        method, url, headers=AUTH if headers is None else headers, **kwargs
    ) as r:
        text = await r.text()
        body = json.loads(text) if r.content_type == "application/json" else text
        return r.status, body, r.headers


async def submit(http: aiohttp.ClientSession, fake: FakeFal, **kwargs: Any) -> dict[str, Any]:
    status, body, _ = await call(
        http, "POST", f"{fake.base_url}/{DEFAULT_ENDPOINT}", json={"prompt": "hi"}, **kwargs
    )
    assert status == 200
    assert isinstance(body, dict)
    return body


async def test_submit_status_and_result_shapes(
    fake_fal_factory: FakeFalFactory, http: aiohttp.ClientSession
) -> None:
    fake = await fake_fal_factory(concurrency=1)
    fake.hold()
    first = await submit(http, fake)
    second = await submit(http, fake)
    rid = second["request_id"]
    base = f"{fake.base_url}/fal-ai/bytedance/requests/{rid}"

    assert second == {
        "status": "IN_QUEUE",
        "request_id": rid,
        "response_url": base,
        "status_url": f"{base}/status",
        "cancel_url": f"{base}/cancel",
        "queue_position": 0,  # requests ahead in the queue; the running one is not
    }
    status, body, headers = await call(http, "GET", f"{base}/status", params={"logs": "1"})
    assert (status, body["status"], body["queue_position"]) == (202, "IN_QUEUE", 0)
    assert headers["x-fal-request-id"] == rid
    assert headers["Content-Type"].startswith("application/json")

    await fake.release(first["request_id"])
    status, body, _ = await call(http, "GET", f"{base}/status", params={"logs": "true"})
    assert (status, body["status"]) == (202, "IN_PROGRESS")
    assert [entry["level"] for entry in body["logs"]] == ["INFO"]
    status, body, _ = await call(http, "GET", f"{base}/status", params={"logs": "0"})
    assert body["logs"] is None
    status, body, _ = await call(http, "GET", base)
    assert (status, body) == (400, {"detail": "Request is still in progress"})

    await fake.release(rid)
    status, body, _ = await call(http, "GET", f"{base}/status", params={"logs": "false"})
    assert (status, body["status"], body["logs"]) == (200, "COMPLETED", None)
    assert body["metrics"]["inference_time"] >= 0
    assert "error" not in body
    for url in (base, f"{base}/response", f"{fake.base_url}/{DEFAULT_ENDPOINT}/requests/{rid}"):
        status, body, headers = await call(http, "GET", url)
        assert status == 200
        assert body["output"] == "echo: hi"
        assert headers["x-fal-request-id"] == rid
    status, body, _ = await call(
        http, "GET", f"{fake.base_url}/{DEFAULT_ENDPOINT}/requests/{rid}/status"
    )
    assert (status, body["status"]) == (200, "COMPLETED")


async def test_unknown_requests_and_foreign_keys_are_not_found(
    fake_fal_factory: FakeFalFactory, http: aiohttp.ClientSession
) -> None:
    fake = await fake_fal_factory(keys=[DEFAULT_KEY, "other"])
    rid = (await submit(http, fake))["request_id"]
    base = f"{fake.base_url}/fal-ai/bytedance/requests"

    for method, url in (
        ("GET", f"{base}/nope/status"),
        ("GET", f"{base}/nope"),
        ("PUT", f"{base}/nope/cancel"),
        ("GET", f"{base}/{rid}/status"),
    ):
        headers = {"Authorization": "Key other"} if rid in url else AUTH
        assert (await call(http, method, url, headers=headers))[:2] == (
            404,
            {"status": "NOT_FOUND"},
        )


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Key nope"}, {"Authorization": "Bearer x"}]
)
async def test_bad_credentials_are_401(
    fake_fal: FakeFal, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    status, body, _ = await call(
        http, "POST", f"{fake_fal.base_url}/{DEFAULT_ENDPOINT}", json={}, headers=headers
    )
    assert status == 401
    assert isinstance(body["detail"], str)
    assert fake_fal.requests == {}


async def test_cancel_codes(fake_fal_factory: FakeFalFactory, http: aiohttp.ClientSession) -> None:
    fake = await fake_fal_factory(concurrency=1)
    fake.hold()
    running = await submit(http, fake)
    queued = await submit(http, fake)

    assert (await call(http, "PUT", queued["cancel_url"]))[:2] == (
        202,
        {"status": "CANCELLATION_REQUESTED"},
    )
    status, body, headers = await call(http, "GET", queued["response_url"])
    assert (status, body["error_type"]) == (499, "client_cancelled")
    assert headers["X-Fal-Error-Type"] == "client_cancelled"
    _, state, _ = await call(http, "GET", queued["status_url"])
    assert (state["status"], state["error_type"]) == ("COMPLETED", "client_cancelled")

    await fake.release(running["request_id"])
    assert (await call(http, "PUT", running["cancel_url"]))[:2] == (
        400,
        {"status": "ALREADY_COMPLETED"},
    )


async def test_max_queue_length_and_webhook(
    fake_fal_factory: FakeFalFactory, http: aiohttp.ClientSession
) -> None:
    fake = await fake_fal_factory(concurrency=1)
    fake.hold()
    await submit(http, fake)
    await submit(http, fake)
    status, _, _ = await call(
        http,
        "POST",
        f"{fake.base_url}/{DEFAULT_ENDPOINT}",
        json={"prompt": "x"},
        params={"fal_max_queue_length": "0"},
    )
    assert status == 429

    hooked = await submit(http, fake, params={"fal_webhook": "https://hook.test/x"})
    assert hooked["gateway_request_id"] == hooked["request_id"]
    assert fake.requests[hooked["request_id"]].webhook == "https://hook.test/x"


async def test_start_timeout_fails_a_request_still_queued(
    fake_fal_factory: FakeFalFactory, http: aiohttp.ClientSession
) -> None:
    fake = await fake_fal_factory(concurrency=1)
    fake.hold()
    await submit(http, fake)
    late = await submit(http, fake, headers={**AUTH, "X-Fal-Request-Timeout": "0.05"})

    await fake.wait_for_state(late["request_id"], "COMPLETED")
    status, body, headers = await call(http, "GET", late["response_url"])
    assert (status, body["error_type"]) == (504, "request_timeout")
    assert headers["X-Fal-Request-Timeout-Type"] == "user"


async def test_status_stream_events_pings_and_close(
    fake_fal: FakeFal, http: aiohttp.ClientSession
) -> None:
    fake_fal.hold()
    request = await submit(http, fake_fal)
    await fake_fal.wait_for_state(request["request_id"], "IN_PROGRESS")
    lines: list[str] = []
    async with http.get(f"{request['status_url']}/stream", headers=AUTH) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            lines.append(line)
            if line == ": ping":
                await fake_fal.release(request["request_id"])
    events = [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]

    assert [e["status"] for e in events] == ["IN_PROGRESS", "COMPLETED"]
    assert ": ping" in lines
    assert events[-1]["metrics"]["inference_time"] >= 0


async def test_model_validation_and_media(fake_fal: FakeFal, http: aiohttp.ClientSession) -> None:
    fake_fal.allowed_media_hosts.add("cdn.discordapp.com")
    arguments = {
        "image_urls": [
            "https://cdn.discordapp.com/a.png",
            "data:image/png;base64,iVBORw0KGgo=",
            "data:image/png;base64,@@@",
            "https://invalid.test/x.png",
            *["https://cdn.discordapp.com/b.png"] * 3,
            "https://invalid.test/seventh-is-ignored.png",
        ],
        "thinking": "maybe",
    }
    _, queued, _ = await call(
        http, "POST", f"{fake_fal.base_url}/{DEFAULT_ENDPOINT}", json=arguments
    )
    await fake_fal.wait_for_state(queued["request_id"], "COMPLETED")

    status, body, _ = await call(http, "GET", queued["response_url"])

    assert status == 422
    assert [(d["loc"], d["type"]) for d in body["detail"]] == [
        (["body", "prompt"], "missing"),
        (["body", "thinking"], "enum"),
        (["body", "image_urls", 2], "image_load_error"),
        (["body", "image_urls", 3], "file_download_error"),
    ]


async def test_storage_round_trip_and_signed_url_rules(
    fake_fal: FakeFal, http: aiohttp.ClientSession
) -> None:
    _, urls, _ = await call(
        http,
        "POST",
        f"{fake_fal.base_url}/storage/upload/initiate",
        params={"storage_type": "fal-cdn-v3"},
        json={"content_type": "text/plain", "file_name": "a b.txt"},
    )
    assert (await call(http, "PUT", urls["upload_url"], data=b"hello"))[0] == 400  # has auth
    forged = urls["upload_url"].split("?")[0] + "?X-Goog-Signature=forged"
    assert (await call(http, "PUT", forged, data=b"hello", headers={}))[0] == 403
    put = await call(
        http, "PUT", urls["upload_url"], data=b"hello", headers={"Content-Type": "text/plain"}
    )
    assert put[0] == 200

    status, body, _ = await call(http, "GET", urls["file_url"], headers={})
    assert (status, body) == (200, "hello")
    assert urls["file_url"].endswith("/a%20b.txt")


async def test_faults_target_routes_and_call_numbers(
    fake_fal: FakeFal, http: aiohttp.ClientSession
) -> None:
    fake_fal.add_fault(Fault.ingress(502, "submit", times=None)).calls = {2}
    url = f"{fake_fal.base_url}/{DEFAULT_ENDPOINT}"

    first = await call(http, "POST", url, json={"prompt": "a"})
    second = await call(http, "POST", url, json={"prompt": "b"})
    third = await call(http, "POST", url, json={"prompt": "c"})

    assert [first[0], second[0], third[0]] == [200, 502, 200]
    assert "nginx" in second[1]
    assert "x-fal-request-id" not in second[2]
    assert "x-fal-request-id" in first[2]
    assert len(fake_fal.requests) == 2


async def test_seeded_fault_storm_is_reproducible(
    fake_fal_factory: FakeFalFactory, http: aiohttp.ClientSession
) -> None:
    async def pattern(seed: int) -> list[int]:
        fake = await fake_fal_factory(seed=seed)
        fake.add_fault(Fault.ingress(503, "submit", times=None)).probability = 0.5
        url = f"{fake.base_url}/{DEFAULT_ENDPOINT}"
        return [(await call(http, "POST", url, json={"prompt": "x"}))[0] for _ in range(12)]

    first, again, other = await asyncio.gather(pattern(5), pattern(5), pattern(6))
    assert first == again
    assert first != other
    assert set(first) == {200, 503}
