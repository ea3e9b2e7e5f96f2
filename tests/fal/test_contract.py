"""Contract test: fal's official Python client and ours, against the same fake, agree.

The official client reads ``FAL_QUEUE_RUN_HOST`` when it is imported and speaks https only
(fal-protocol.md §1), so it runs in a subprocess pointed at the fake served over TLS with a
throwaway CA (``SSL_CERT_FILE``). What it gets back must be what our client gets.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import aiohttp
import pytest

from bot.domain.models import ModelRequest
from bot.fal import FalClient
from tests.fakes.fal import DEFAULT_KEY, FakeFal
from tests.fakes.fal_fixtures import FakeFalFactory, FalTls, fal_settings_for

pytest.importorskip("fal_client", reason="the contract test needs fal-client (test extra)")

OFFICIAL = """
import asyncio, json, os, sys
import fal_client

async def main() -> None:
    client = fal_client.AsyncClient(key=os.environ["FAL_KEY"])
    updates = []
    result = await client.subscribe(
        "fal-ai/bytedance/seed/v2/mini",
        arguments=json.loads(sys.argv[1]),
        with_logs=True,
        on_queue_update=lambda status: updates.append(type(status).__name__),
    )
    print(json.dumps({"result": result, "updates": updates}))

asyncio.run(main())
"""


async def run_official(fake: FakeFal, tls: FalTls, arguments: dict[str, Any]) -> dict[str, Any]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("http_proxy", "https_proxy", "all_proxy") and not k.startswith("FAL_")
    }
    env.update(
        FAL_KEY=DEFAULT_KEY,
        FAL_QUEUE_RUN_HOST=f"127.0.0.1:{fake.port}",
        SSL_CERT_FILE=str(tls.ca_pem),
        NO_PROXY="127.0.0.1,localhost",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        OFFICIAL,
        json.dumps(arguments),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 45)
    assert process.returncode == 0, stderr.decode(errors="replace")
    parsed: dict[str, Any] = json.loads(stdout)
    return parsed


async def test_official_client_gets_what_ours_gets(
    fake_fal_factory: FakeFalFactory, fal_tls: FalTls
) -> None:
    fake = await fake_fal_factory(ssl_context=fal_tls.server_context, concurrency=1)
    connector = aiohttp.TCPConnector(ssl=fal_tls.client_context)
    async with aiohttp.ClientSession(connector=connector) as session:
        ours = FalClient(session, fal_settings_for(fake))
        image = await ours.upload(b"\x89PNG", content_type="image/png", file_name="a.png")
        request = ModelRequest(
            prompt="describe",
            image_urls=(image,),
            system_prompt="terse",
            thinking="enabled",
            reasoning_effort="low",
        )
        reply = await ours.wait(await ours.submit(request), timeout=10)
        arguments = fake.calls_to("submit")[0].json
        first_official_call = len(fake.calls)

        # Walk the official client through every state: queued behind a held request,
        # then running (held), then completed.
        fake.hold()
        blocker = await ours.submit(ModelRequest(prompt="blocker"))
        official_run = asyncio.create_task(run_official(fake, fal_tls, arguments))
        official_id = (await fake.wait_for_submissions(3, timeout=30))[-1]

        def status_calls() -> int:
            return sum(1 for c in fake.calls_to("status") if official_id in c.path)

        await fake.wait_for(lambda: status_calls() >= 1)
        await fake.release(blocker.request_id)
        await fake.wait_for_state(official_id, "IN_PROGRESS")
        seen = status_calls()
        await fake.wait_for(lambda: status_calls() > seen)
        await fake.release(official_id)
        official = await official_run

    assert official["result"] == {
        "output": reply.output,
        "reasoning_content": reply.reasoning,
        "messages": [{"role": m.role, "content": m.content} for m in reply.messages],
    }
    assert official["updates"][0] == "Queued"
    assert "InProgress" in official["updates"]
    assert official["updates"][-1] == "Completed"
    calls = [
        c
        for c in fake.calls[first_official_call:]
        if c.headers.get("User-Agent", "").startswith("fal-client/")
    ]
    routes = [c.route for c in calls]
    assert routes[0] == "submit"
    assert calls[0].json == arguments
    assert routes[-1] == "result"
    assert set(routes[1:-1]) == {"status"}  # fal-client 1.0.3 polls, never streams
    assert all(c.headers["Authorization"] == f"Key {DEFAULT_KEY}" for c in calls)
