"""``seed-bot run`` as a subprocess against the in-test fake Discord and fake fal: start it,
wait until it is connected, signal it, kill it, read its log."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tests.chat.conftest import harness_env
from tests.fakes.discord.events import Event, GatewayIdentified
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.fal import FakeFal

ROOT = Path(__file__).resolve().parents[2]


class BotProcess:
    """One ``python -m bot run``. Its output (stdout and stderr) is read as it comes, so a
    test can wait for a log line, and no pipe fills up and stalls the bot."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name="bot-output")

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()
        self._changed.set()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    async def wait_for_log(self, text: str, *, since: int = 0, timeout: float = 10.0) -> str:
        """The first line (from line ``since``) containing ``text``, waiting for it."""
        index = since
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for line in self.lines[index:]:
                        if text in line:
                            return line
                    index = len(self.lines)
                    if self._reader.done():
                        break
                    await self._changed.wait()
        except TimeoutError:
            pass
        raise AssertionError(f"the bot never logged {text!r}; its log:\n{self.log}")

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        """The exit code, waiting at most ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            await self._reader
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        await self._reader


def bot_env(fake: FakeDiscord, fal: FakeFal, tmp_path: Path, **env: str) -> dict[str, str]:
    """A clean environment (PATH only) with the harness's settings pointing at the fakes."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        **harness_env(fake, fal, tmp_path, **env),
    }


async def start_bot(
    fake: FakeDiscord,
    fal: FakeFal,
    tmp_path: Path,
    env: Mapping[str, str] | None = None,
    *,
    timeout: float = 20.0,
    args: Sequence[str] = (),
) -> BotProcess:
    """Start ``seed-bot run`` (with ``args``) and return once it has identified on the fake
    gateway and parsed everything dispatched to it (READY, GUILD_CREATE)."""
    since = fake.mark()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        *args,
        cwd=tmp_path,
        env=bot_env(fake, fal, tmp_path, **(env or {})),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    bot = BotProcess(proc)
    try:
        await fake.wait_for_event(GatewayIdentified, since=since, timeout=timeout)
        await fake.sync_gateway(timeout=timeout)
    except BaseException:
        await bot.kill()
        raise AssertionError(f"the bot did not connect; its log:\n{bot.log}") from None
    return bot


async def wait_until(fake: FakeDiscord, condition: Callable[[], bool], timeout: float) -> None:
    """Wait until ``condition()`` holds, checking it after every event of the fake Discord."""
    if condition():
        return

    def check(_event: Event) -> bool:
        return condition()

    await fake.wait_for(check, since=fake.mark(), timeout=timeout, what="a condition")
