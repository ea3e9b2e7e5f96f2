"""fal's official client (``fal_client.AsyncClient.subscribe``) against the same fake.

It reads ``FAL_QUEUE_RUN_HOST`` when imported and speaks https only, so it runs in a
subprocess pointed at the fake served over TLS (``SSL_CERT_FILE`` names the throwaway CA),
as ``tests/fal/test_contract.py`` does. The script prints, per request, the
``time.monotonic()`` at which ``subscribe`` returned (the same clock as the fake's
``completed_at`` on Linux, where CLOCK_MONOTONIC is system-wide).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from tests.fakes.fal import DEFAULT_KEY, FakeFal

SCRIPT = """
import asyncio, json, os, sys, time
import fal_client

async def one(client, token, delay):
    await asyncio.sleep(delay)
    result = await client.subscribe(
        "fal-ai/bytedance/seed/v2/mini", arguments={"prompt": f"official {token}"}
    )
    return {"token": token, "done": time.monotonic(), "ok": token in result["output"]}

async def main():
    prefix, count, stagger = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    client = fal_client.AsyncClient(key=os.environ["FAL_KEY"])
    jobs = [one(client, f"{prefix}{i}", i * stagger) for i in range(count)]
    print(json.dumps(await asyncio.gather(*jobs)))

asyncio.run(main())
"""


async def run_official(
    fal: FakeFal, ca_pem: str, prefix: str, count: int, stagger: float, timeout: float
) -> list[dict[str, Any]]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("http_proxy", "https_proxy", "all_proxy") and not k.startswith("FAL_")
    }
    env.update(
        FAL_KEY=DEFAULT_KEY,
        FAL_QUEUE_RUN_HOST=f"127.0.0.1:{fal.port}",
        SSL_CERT_FILE=ca_pem,
        NO_PROXY="127.0.0.1,localhost",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SCRIPT,
        prefix,
        str(count),
        str(stagger),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    if process.returncode != 0:
        raise RuntimeError("official client failed: " + stderr.decode(errors="replace")[-2000:])
    parsed: list[dict[str, Any]] = json.loads(stdout)
    return parsed
