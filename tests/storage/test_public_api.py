"""The storage suite on the public API: what the bot does when a library's probe fails
(bot/internals.py). A representative part of it runs again in a process with
``SEED_BOT_FORCE_PUBLIC_API`` set: every kind of statement a unit of work runs (rows,
values, scalars, inserts returning ids, inserts of many rows), failures and cancellations,
constraints, and the races between processes, on every backend the suite runs on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.internals import FORCE_PUBLIC_API_ENV, forced_public

ROOT = Path(__file__).resolve().parents[2]
SUBSET = (
    "tests/storage/test_unit.py",
    "tests/storage/test_concurrency.py",
    "tests/storage/test_usage.py",
    "tests/storage/test_costs.py",
    "tests/storage/test_history_read.py",
)


@pytest.mark.timeout(600)
def test_the_storage_suite_passes_on_the_public_api() -> None:
    if forced_public():
        pytest.skip("this run is on the public API already")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUBSET],
        cwd=ROOT,
        env={**os.environ, FORCE_PUBLIC_API_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # test_unit.py checks in there that the units of work took the public API.
    assert " passed" in result.stdout
