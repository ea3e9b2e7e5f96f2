"""The Discord token and the fal key never leak: not into any log record (every logger at
DEBUG), not into anything the bot posts, not into the database file, not into
``seed-bot check``'s output."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chat.conftest import Harness, HarnessFactory
from tests.fakes.discord import InteractionResponded, MessageCreated, MessageEdited
from tests.fakes.discord.models import UserFile
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.fal import DEFAULT_KEY, Failure, FakeFal, echo_responder
from tests.reliability.conftest import KeptRecords
from tests.test_cli import PNG, fal_env, seed_bot

LOGGERS = ("", "discord", "aiohttp", "sqlalchemy", "sqlalchemy.engine", "asyncio", "bot", "alembic")


@pytest.fixture
def all_logs() -> Iterator[KeptRecords]:
    """Every log record of every logger, at DEBUG."""
    handler = KeptRecords(logging.DEBUG)
    root = logging.getLogger()
    previous = {name: logging.getLogger(name).level for name in LOGGERS}
    every = [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if isinstance(logging.root.manager.loggerDict[name], logging.Logger)
    ]
    previous_every = {lg.name: lg.level for lg in every}
    root.addHandler(handler)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    for lg in every:
        if lg.level > logging.DEBUG:
            lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for lg in every:
            lg.setLevel(previous_every[lg.name])
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)


def database_bytes(directory: Path) -> bytes:
    """The SQLite file with its -wal and -shm companions, as stored on disk."""
    return b"".join(p.read_bytes() for p in sorted(directory.glob("bot.db*")) if p.is_file())


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value in text]


def record_texts(record: logging.LogRecord) -> list[str]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    texts = [formatter.format(record)]
    args: Any = record.args
    if isinstance(args, dict):
        args = tuple(args.values())
    for arg in args or ():
        texts += [repr(arg), str(arg)]
    return texts


async def test_a_full_session_leaks_no_secret(
    all_logs: KeptRecords, make_harness: HarnessFactory, fake_discord: FakeDiscord
) -> None:
    secrets = {"discord token": fake_discord.token, "fal key": DEFAULT_KEY}
    h: Harness = await make_harness()
    # 1. a conversation with an image, copied to fal storage
    since = h.fake.mark()
    _, thread = await h.start_thread(
        h.world.alice, "what is this?", files=[UserFile("dot.png", PNG)]
    )
    await h.answer_in(thread, since=since, contains="echo: what is this?")
    assert h.fal.files, "the image should have been uploaded"
    # 2. a model failure
    h.fal.responder = lambda args: Failure.infra(500, "runner_server_error", "Runner crashed")
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "this one fails")
    await h.answer_in(thread, since=since, contains="⚠️")
    h.fal.responder = echo_responder
    # 3. Discord rate limits the answer once
    h.fake.rate_limit("POST /channels/{channel_id}/messages", retry_after=0.05)
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "after a 429")
    await h.answer_in(thread, since=since, contains="echo: after a 429")
    assert any(r.status == 429 for r in h.fake.requests)
    # 4. slash commands
    interaction = await h.fake.invoke_command(h.world.alice, thread, "settings")
    await interaction.wait_response()
    since = h.fake.mark()
    interaction = await h.fake.invoke_command(
        h.world.bob, h.world.channel, "ask", {"prompt": "slash question"}
    )
    await interaction.wait_response()
    await h.fake.wait_for_message(None, contains="echo: slash question", since=since, timeout=10)

    # the detector works, and the key it looks for is the one the bot really used
    canary = logging.LogRecord(
        "bot.canary", logging.DEBUG, __file__, 1, "k=%s", (DEFAULT_KEY,), None
    )
    assert leaks(" ".join(record_texts(canary)), secrets) == ["fal key"]
    assert any(DEFAULT_KEY in c.headers.get("Authorization", "") for c in h.fal.calls)
    assert len(all_logs.records) > 50, "the capture should see DEBUG records of every library"
    assert any(
        r.name.startswith("discord") and r.levelno == logging.DEBUG for r in all_logs.records
    )
    assert any(r.name.startswith("sqlalchemy") for r in all_logs.records)
    leaked = [
        (record.name, name)
        for record in all_logs.records
        for text in record_texts(record)
        for name in leaks(text, secrets)
    ]
    assert leaked == []

    posted: list[str] = []
    for event in h.fake.events:
        if isinstance(event, MessageCreated | MessageEdited) and event.by_bot:
            message = event.message if isinstance(event, MessageCreated) else event.after
            posted.append(message.content)
            posted += [data.decode("utf-8", "replace") for _, data in message.files]
        elif isinstance(event, InteractionResponded) and event.message is not None:
            posted.append(event.message.content)
    assert len(posted) > 5
    assert [leaks(text, secrets) for text in posted if leaks(text, secrets)] == []

    db_bytes = database_bytes(h.tmp_path)
    assert b"what is this?" in db_bytes or b"slash question" in db_bytes  # the scan sees data
    for name, value in secrets.items():
        assert value.encode() not in db_bytes, f"the {name} is in the database file"


@pytest.mark.timeout(60)
async def test_check_at_debug_shows_no_secret(
    fake_fal: FakeFal, fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    env = fal_env(fake_fal, tmp_path) | {
        "DISCORD_TOKEN": fake_discord.token,
        "SEED_BOT_DISCORD__API_BASE": fake_discord.api_base,
        "SEED_BOT_LOGGING__LEVEL": "DEBUG",
    }
    code, out, err = await seed_bot("check", env=env, cwd=tmp_path)
    assert code == 0, out + err
    assert "discord token accepted" in out
    for text in (out, err):
        assert fake_discord.token not in text
        assert DEFAULT_KEY not in text
    # a refused key is reported without being shown
    code, out, err = await seed_bot(
        "check", env=env | {"FAL_KEY": "fal-wrong-key-123456"}, cwd=tmp_path
    )
    assert code == 1
    assert "fal-wrong-key-123456" not in out + err
    assert fake_discord.token not in out + err
