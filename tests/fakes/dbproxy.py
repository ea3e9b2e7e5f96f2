"""Database outages a test can start and end for real (``cut()`` / ``restore()``).

:class:`DatabaseProxy`: a loopback TCP proxy in front of a database server (the test
PostgreSQL), as a network partition or a server restart meets the bot. ``cut()`` resets
every connection through the proxy (RST, as a peer gone away) and stops listening, so new
connections are refused; ``restore()`` listens again on the same port. ``url(database_url)``
is the same URL pointed at the proxy.

:class:`SqliteLock`: another connection holding a SQLite file's write lock (as another
process would) from ``cut()`` to ``restore()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import struct
from pathlib import Path

from sqlalchemy.engine import make_url

_CHUNK = 65536


class DatabaseProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.cuts = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    @classmethod
    def for_url(cls, database_url: str) -> DatabaseProxy:
        parsed = make_url(database_url)
        return cls(parsed.host or "127.0.0.1", parsed.port or 5432)

    def url(self, database_url: str) -> str:
        """``database_url`` going through this proxy."""
        parsed = make_url(database_url).set(host="127.0.0.1", port=self.port)
        return parsed.render_as_string(hide_password=False)

    @property
    def is_cut(self) -> bool:
        return self._server is None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        self.cuts += 1
        for writer in list(self._open):
            _reset(writer)
        self._open.clear()

    async def restore(self) -> None:
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        await self.cut()
        for task in list(self._pipes):
            task.cancel()
        for task in list(self._pipes):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cuts = self.cuts
        if self._server is None:
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        if self.cuts != cuts:  # cut while connecting upstream
            _reset(writer)
            _reset(up_writer)
            return
        self.connections += 1
        self._open.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink, (writer, up_writer)))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await source.read(_CHUNK):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side ended: end the other (as a plain TCP close, not a reset).
            for writer in pair:
                self._open.discard(writer)
                if not writer.is_closing():
                    writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a connection lost to a crash or a partition."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class SqliteLock:
    """Another connection holding a SQLite database's write lock while cut."""

    def __init__(self, path: Path) -> None:
        # Created owner-only, as the bot creates its own (a wider file is tightened and warned of).
        path.touch(mode=0o600, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    async def cut(self) -> None:
        # In a thread: the bot, on this event loop, may be finishing a write meanwhile.
        await asyncio.to_thread(self._conn.execute, "BEGIN EXCLUSIVE")

    async def restore(self) -> None:
        await asyncio.to_thread(self._conn.execute, "ROLLBACK")

    def close(self) -> None:
        self._conn.close()
