"""The submission journal as an append-only local file (``bot.domain.submission``).

Why a file beside the database: fal's answer to a submit is the one fact a crash must not
lose (the request is queued and billed; without its id a restart would submit it again).
The database commit of that id waits on a connection and on other transactions; a single
``os.write`` to a file opened with ``O_APPEND`` takes microseconds and needs no await, so
the id is in the kernel's page cache before anything else happens, and ``kill -9`` (or any
crash of the process) keeps it. What it does not survive is the machine losing power before
the kernel writes the page out (no fsync: it would cost milliseconds on every submit); the
database commit, a few milliseconds later, covers that case in all but that window.

One record a line: ``B <turn>`` (submit about to be sent), ``A <turn> <handle json>`` (fal
answered), ``D <turn>`` (settled: stored, or definitely failed). The first line names the
database (a hash of its URL), so a journal is never replayed into another database. The
file is rewritten with only the unsettled records at start-up and whenever it grows past
``compact_bytes``. A lock file keeps a second bot process away from the same journal (it
runs without one, and says so).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from bot.domain.models import RequestHandle

log = logging.getLogger(__name__)

_COMPACT_BYTES = 1 << 20


def database_tag(url: str) -> str:
    """A short, secret-free name of a database URL (the URL may carry a password)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


class FileJournal:
    """``SubmissionJournal`` on a local file. Open it before the first submit; reading what
    a previous run left happens once, at construction."""

    def __init__(self, path: Path, database: str, *, compact_bytes: int = _COMPACT_BYTES):
        self.path = path
        self._header = f"# seed-bot submission journal, database {database_tag(database)}\n"
        self._compact_bytes = compact_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(f"{path}.lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise
        self._previous = self._read()
        self._open: dict[int, RequestHandle | None] = {}
        self._fd = -1
        self._written = 0
        self._rewrite(self._previous)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        os.close(self._lock_fd)

    # --- SubmissionJournal --------------------------------------------------------------

    def begin(self, turn_id: int) -> None:
        self._open[turn_id] = None
        self._append(f"B {turn_id}\n")

    def answered(self, turn_id: int, handle: RequestHandle) -> None:
        self._open[turn_id] = handle
        self._append(f"A {turn_id} {_dump(handle)}\n")

    def done(self, turn_id: int) -> None:
        self._open.pop(turn_id, None)
        self._append(f"D {turn_id}\n")
        if self._fd >= 0 and self._written > self._compact_bytes:
            try:
                self._rewrite({**self._previous, **self._open})
            except OSError as exc:
                log.warning("submission journal %s not compacted: %s", self.path, exc.strerror)

    def left_open(self) -> Mapping[int, RequestHandle | None]:
        return dict(self._previous)

    def compact(self, keep: Mapping[int, RequestHandle | None]) -> None:
        self._previous = dict(keep)
        if self._fd < 0:
            return
        try:
            self._rewrite({**self._previous, **self._open})
        except OSError as exc:
            log.warning("submission journal %s not compacted: %s", self.path, exc.strerror)

    # --- the file -----------------------------------------------------------------------

    def _append(self, line: str) -> None:
        # Never raises: a journal that cannot be written (disk full) must not fail a turn;
        # request ids are then durable once the database has them, as without a journal.
        if self._fd < 0:
            return
        data = line.encode()
        try:
            os.write(self._fd, data)
        except OSError as exc:
            log.error(
                "submission journal %s cannot be written (%s): continuing without it",
                self.path,
                exc.strerror or type(exc).__name__,
            )
            os.close(self._fd)
            self._fd = -1
            return
        self._written += len(data)

    def _read(self) -> dict[int, RequestHandle | None]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return {}
        lines = text.splitlines(keepends=True)
        if not lines or lines[0] != self._header:
            if lines:
                log.warning("%s belongs to another database; its records are ignored", self.path)
            return {}
        entries: dict[int, RequestHandle | None] = {}
        for line in lines[1:]:
            if not line.endswith("\n"):
                break  # a record cut short by the crash: the last one, never completed
            kind, _, rest = line.rstrip("\n").partition(" ")
            turn, _, payload = rest.partition(" ")
            with contextlib.suppress(ValueError):
                turn_id = int(turn)
                if kind == "B":
                    entries[turn_id] = None
                elif kind == "A":
                    entries[turn_id] = _load(payload)
                elif kind == "D":
                    entries.pop(turn_id, None)
        return entries

    def _rewrite(self, entries: Mapping[int, RequestHandle | None]) -> None:
        """Replace the file by one holding just ``entries`` (atomically: a crash leaves the
        old file or the new one), and append to the new one from now on."""
        lines = [self._header]
        for turn_id, handle in entries.items():
            lines.append(f"B {turn_id}\n")
            if handle is not None:
                lines.append(f"A {turn_id} {_dump(handle)}\n")
        temporary = self.path.with_name(self.path.name + ".new")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, "".join(lines).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._written = 0


def _dump(handle: RequestHandle) -> str:
    return json.dumps(
        {
            "request_id": handle.request_id,
            "status_url": handle.status_url,
            "response_url": handle.response_url,
            "cancel_url": handle.cancel_url,
        },
        separators=(",", ":"),
    )


def _load(payload: str) -> RequestHandle:
    data = json.loads(payload)
    if not isinstance(data, dict) or not isinstance(data.get("request_id"), str):
        raise ValueError("not a request handle")

    def url(name: str) -> str | None:
        value = data.get(name)
        return value if isinstance(value, str) else None

    return RequestHandle(
        request_id=data["request_id"],
        status_url=url("status_url"),
        response_url=url("response_url"),
        cancel_url=url("cancel_url"),
    )


def open_journal(path: Path, database: str) -> FileJournal | None:
    """The journal at ``path``, or ``None`` (with one warning) when it cannot be used: then
    request ids are durable only once the database has them."""
    try:
        return FileJournal(path, database)
    except OSError as exc:
        log.warning(
            "submission journal %s unusable (%s; another bot process on it?): running without it",
            path,
            exc.strerror or type(exc).__name__,
        )
        return None
