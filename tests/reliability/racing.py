"""Race OS processes: start each worker script, wait until every one has connected (it prints
``ready``), release them together, and collect the JSON object each prints last."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


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
