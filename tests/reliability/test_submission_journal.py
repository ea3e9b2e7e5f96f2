"""The submission journal file: what a previous run left unsettled is read back, including
after the writing process was killed with SIGKILL; nothing of another database is."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from bot.domain.models import RequestHandle
from bot.journal import FileJournal, open_journal
from tests.reliability.botproc import ROOT

DB = "sqlite+aiosqlite:///data/bot.db"
HANDLE = RequestHandle(
    "764cabcf-b745-4b3e-ae38-1200304cf45b",
    status_url="https://queue.fal.run/fal-ai/bytedance/requests/764c/status",
    response_url="https://queue.fal.run/fal-ai/bytedance/requests/764c",
    cancel_url="https://queue.fal.run/fal-ai/bytedance/requests/764c/cancel",
)


def reopen(path: Path, database: str = DB) -> dict[int, RequestHandle | None]:
    journal = FileJournal(path, database)
    try:
        return dict(journal.left_open())
    finally:
        journal.close()


def test_unsettled_submits_are_read_back(tmp_path: Path) -> None:
    path = tmp_path / "bot.db.submissions"
    journal = FileJournal(path, DB)
    journal.begin(1)  # sent, no answer yet
    journal.begin(2)
    journal.answered(2, HANDLE)  # answered, not yet stored
    journal.begin(3)
    journal.answered(3, RequestHandle("r3"))
    journal.done(3)  # stored
    journal.begin(4)
    journal.done(4)  # failed for sure
    journal.close()

    assert reopen(path) == {1: None, 2: HANDLE}


def test_a_journal_of_another_database_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = FileJournal(path, DB)
    journal.begin(1)
    journal.close()

    assert reopen(path, "postgresql+asyncpg://elsewhere/db") == {}


def test_a_record_cut_short_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = FileJournal(path, DB)
    journal.begin(1)
    journal.close()
    with path.open("a") as f:
        f.write('A 1 {"request_id":"r1"')  # the crash came mid-line

    assert reopen(path) == {1: None}


def test_compaction_keeps_only_what_is_unsettled(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = FileJournal(path, DB, compact_bytes=200)
    journal.compact({})
    journal.begin(7)
    journal.answered(7, HANDLE)
    for turn in range(100, 140):
        journal.begin(turn)
        journal.done(turn)
    journal.close()

    assert path.stat().st_size < 600  # rewritten along the way
    assert reopen(path) == {7: HANDLE}


def test_a_second_process_on_the_same_journal_runs_without_one(tmp_path: Path) -> None:
    path = tmp_path / "j"
    first = FileJournal(path, DB)
    try:
        assert open_journal(path, DB) is None
    finally:
        first.close()
    again = open_journal(path, DB)
    assert again is not None
    again.close()


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from bot.domain.models import RequestHandle
    from bot.journal import FileJournal

    journal = FileJournal(Path(sys.argv[1]), sys.argv[2])
    journal.begin(5)
    journal.answered(5, RequestHandle("764cabcf-b745-4b3e-ae38-1200304cf45b"))
    journal.begin(6)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no flush, no exit handlers
    """
)


@pytest.mark.timeout(30)
async def test_records_survive_sigkill_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "j"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_WRITER, str(path), DB, cwd=ROOT
    )
    assert await proc.wait() == -signal.SIGKILL

    assert reopen(path) == {5: RequestHandle("764cabcf-b745-4b3e-ae38-1200304cf45b"), 6: None}
