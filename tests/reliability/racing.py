"""Race OS processes on one PostgreSQL database: ``postgres_url`` (a fresh, migrated database
per test), and ``race``: start each worker script, wait until every one has connected (it
prints ``ready``), release them together, and collect the JSON object each prints last."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.storage.migrate import upgrade
from tests.storage.conftest import POSTGRES_ENV, fresh_postgres_database, postgres_base_url

ROOT = Path(__file__).resolve().parents[2]

needs_postgres = pytest.mark.skipif(
    postgres_base_url() is None, reason=f"needs {POSTGRES_ENV} (a PostgreSQL to create dbs in)"
)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    base = postgres_base_url()
    assert base is not None
    async with fresh_postgres_database(base) as url:
        await upgrade(url)
        yield url


async def race(worker: str, argvs: Sequence[Sequence[str]], timeout: float = 30) -> list[Any]:
    """Run ``python -c worker *argv`` once per ``argvs`` entry, all released at once."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            worker,
            *argv,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for argv in argvs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
            assert line == b"ready\n", line
        for proc in procs:  # all connected: start them together
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        outputs = [await asyncio.wait_for(p.communicate(), timeout) for p in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    results = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results
