"""What fal is told to keep: ``X-Fal-Store-IO`` on submits, a lifetime on uploads."""

from __future__ import annotations

import json

import aiohttp

from bot.domain.models import ModelRequest
from bot.fal import FalClient
from tests.fakes.fal import FakeFal
from tests.fakes.fal_fixtures import fal_settings_for


async def test_by_default_fal_is_asked_not_to_store_payloads(
    fake_fal: FakeFal, fal_http_session: aiohttp.ClientSession
) -> None:
    client = FalClient(fal_http_session, fal_settings_for(fake_fal))
    handle = await client.submit(ModelRequest(prompt="private"))
    await client.wait(handle, timeout=5)
    assert fake_fal.requests[handle.request_id].headers.get("X-Fal-Store-IO") == "0"
    # Only the submit carries it: status and result calls store nothing at fal.
    others = [c for c in fake_fal.calls if c.route != "submit"]
    assert others and all("X-Fal-Store-IO" not in c.headers for c in others)


async def test_storing_payloads_allowed_sends_no_header(
    fake_fal: FakeFal, fal_http_session: aiohttp.ClientSession
) -> None:
    client = FalClient(fal_http_session, fal_settings_for(fake_fal, store_io=True))
    handle = await client.submit(ModelRequest(prompt="keep it"))
    assert "X-Fal-Store-IO" not in fake_fal.requests[handle.request_id].headers


async def test_an_upload_carries_the_retention_as_its_lifetime(
    fake_fal: FakeFal, fal_http_session: aiohttp.ClientSession
) -> None:
    client = FalClient(fal_http_session, fal_settings_for(fake_fal, upload_lifetime=7 * 86400))
    url = await client.upload(b"\x89PNG", content_type="image/png", file_name="cat.png")
    [stored] = fake_fal.files.values()
    assert stored.lifecycle == {"expiration_duration_seconds": 604800}
    assert url.endswith("/cat.png")
    [initiate] = fake_fal.calls_to("initiate")
    assert json.loads(initiate.headers["X-Fal-Object-Lifecycle-Preference"]) == {
        "expiration_duration_seconds": 604800
    }
    # The signed PUT carries nothing but the bytes and their type.
    [put] = fake_fal.calls_to("upload")
    assert "X-Fal-Object-Lifecycle-Preference" not in put.headers


async def test_an_upload_kept_forever_sends_no_lifetime(
    fake_fal: FakeFal, fal_http_session: aiohttp.ClientSession
) -> None:
    client = FalClient(fal_http_session, fal_settings_for(fake_fal))
    await client.upload(b"\x89PNG", content_type="image/png", file_name="cat.png")
    [stored] = fake_fal.files.values()
    assert stored.lifecycle is None
    assert all("X-Fal-Object-Lifecycle-Preference" not in c.headers for c in fake_fal.calls)
