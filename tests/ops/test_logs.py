"""Logs an operator can ship: ``logging.format = "json"`` gives one JSON object per line with
the ids the line is about; voice warnings and Alembic's set-up lines are gone; a library's
traceback is one line below DEBUG."""

from __future__ import annotations

import io
import json
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.ops.logs import ids_of, setup_logging
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.discord.standard import StandardWorld
from tests.fakes.fal import FakeFal
from tests.reliability.botproc import start_bot


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Put the root logger back as pytest had it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    alembic = logging.getLogger("alembic").level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("alembic").setLevel(alembic)


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("bot.x", logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_ids_come_from_extra_or_from_the_wording() -> None:
    rid = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
    assert ids_of(record("turn %s submitted as request %s", 12, rid)) == {
        "turn": "12",
        "fal_request": rid,
    }
    assert ids_of(record("turn %s stored for message %s in conversation %s", 4, 99, 3)) == {
        "turn": "4",
        "conversation": "3",
    }
    assert ids_of(record("cannot reply in channel %s: nope", 123456789012)) == {
        "channel": "123456789012"
    }
    assert ids_of(record("something", guild=42, turn=7)) == {"guild": "42", "turn": "7"}
    assert ids_of(record("the turnout was 5")) == {}


def test_json_lines_and_quiet_third_parties(root_logging: None) -> None:
    out = io.StringIO()
    setup_logging("INFO", "json", stream=out)
    logging.getLogger("discord.client").warning(
        "PyNaCl is not installed, voice will NOT be supported"
    )
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    try:
        raise ConnectionRefusedError(111, "Connect call failed")
    except ConnectionRefusedError:
        logging.getLogger("discord.shard").exception("Failed to connect for shard_id: %s", 0)
    logging.getLogger("bot.domain.service").info("turn %s delivered", 5, extra={"guild": 9})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(x["logger"], x["level"]) for x in lines] == [
        ("discord.shard", "ERROR"),
        ("bot.domain.service", "INFO"),
    ]
    shard, turn = lines
    assert shard["message"] == (
        "Failed to connect for shard_id: 0 (ConnectionRefusedError (Connect call failed))"
    )
    assert "exc" not in shard  # no traceback below DEBUG
    assert turn["message"] == "turn 5 delivered"
    assert turn["turn"] == "5" and turn["guild"] == "9"
    assert set(turn) == {"time", "level", "logger", "message", "turn", "guild"}
    assert turn["time"].endswith("+00:00")


def test_debug_keeps_tracebacks(root_logging: None) -> None:
    out = io.StringIO()
    setup_logging("DEBUG", "text", stream=out)
    try:
        raise ConnectionRefusedError(111, "Connect call failed")
    except ConnectionRefusedError:
        logging.getLogger("discord.shard").exception("Failed to connect")
    assert "Traceback (most recent call last)" in out.getvalue()


@pytest.mark.timeout(45)
async def test_a_running_bot_logs_json_lines_with_ids(
    fake_discord: FakeDiscord, discord_world: StandardWorld, fake_fal: FakeFal, tmp_path: Path
) -> None:
    fake, world = fake_discord, discord_world
    bot = await start_bot(fake, fake_fal, tmp_path, {"SEED_BOT_LOGGING__FORMAT": "json"})
    try:
        since = fake.mark()
        asked = await fake.send_message(world.alice, world.channel, f"<@{fake.bot_user.id}> hi")
        thread = await fake.wait_for_thread(from_message=asked, since=since, timeout=10)
        await fake.wait_for_message(thread, contains="echo: hi", since=since, timeout=10)
        await bot.wait_for_log("delivered", timeout=10)
        bot.send(signal.SIGTERM)
        assert await bot.wait(20) == 0
    finally:
        await bot.kill()
    lines = [json.loads(line) for line in bot.lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    stored = next(x for x in lines if "stored for message" in x["message"])
    assert stored["turn"] and stored["conversation"]
    submitted = next(x for x in lines if "submitted as request" in x["message"])
    assert submitted["fal_request"] in fake_fal.requests
    text = bot.log
    assert "voice will NOT be supported" not in text
    assert not [x for x in lines if x["logger"].startswith("alembic")]
    assert fake.token not in text


def test_discord_lines_never_show_an_interaction_token(root_logging: None) -> None:
    out = io.StringIO()
    setup_logging("DEBUG", "text", stream=out)
    token = "aW50ZXJhY3Rpb246MTIz.NDU2-Nzg_5"
    logging.getLogger("discord.webhook.async_").debug(
        "Webhook ID %s with %s %s has returned status code %s",
        *(1, "PATCH", f"https://d/api/v10/webhooks/1/{token}/messages/@original", 200),
    )
    logging.getLogger("discord.http").debug(
        "%s %s with %s has returned %s",
        *("POST", f"https://d/api/v10/interactions/2/{token}/callback?x=1", None, 204),
    )
    logging.getLogger("discord.gateway").debug(
        "WebSocket Event: %s", {"d": {"id": "2", "token": token}}
    )
    text = out.getvalue()
    assert token not in text
    assert "/webhooks/1/***/messages/@original" in text
    assert "/interactions/2/***/callback" in text
    assert "'token': '***'" in text
