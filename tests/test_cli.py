"""``seed-bot`` as a subprocess: ask, check, migrate, and config errors, against loopback fakes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

from bot.deploy_check import BOT_PERMISSIONS, invite_url, user_install_url
from bot.domain.models import Cost, Payer, Reservation, Settlement
from bot.storage import create_engine, sql_repositories
from bot.storage.migrate import upgrade
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.fal import DEFAULT_KEY, FakeFal

ROOT = Path(__file__).resolve().parents[1]

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


async def seed_bot(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run ``python -m bot ARGS`` with only the given environment (plus PATH)."""
    full_env = {"PATH": os.environ.get("PATH", ""), **env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=cwd,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def fal_env(fake: FakeFal, tmp_path: Path) -> dict[str, str]:
    return {
        "FAL_KEY": DEFAULT_KEY,
        "SEED_BOT_FAL__QUEUE_BASE": fake.base_url,
        "SEED_BOT_FAL__REST_BASE": fake.base_url,
        "SEED_BOT_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db",
        "PYTHONPATH": str(ROOT),
    }


@pytest.mark.timeout(60)
async def test_ask_prints_answer_and_reasoning(fake_fal: FakeFal, tmp_path: Path) -> None:
    image = tmp_path / "dot.png"
    image.write_bytes(PNG)
    code, out, err = await seed_bot(
        "ask",
        "what is this?",
        "--image",
        str(image),
        "--thinking",
        "auto",
        "--effort",
        "low",
        "--system",
        "be brief",
        env=fal_env(fake_fal, tmp_path),
        cwd=tmp_path,
    )
    assert code == 0, err
    assert out.startswith("echo: what is this?\n")
    assert "\n## Reasoning\n" in out
    assert "The user said: what is this?" in out
    assert "request " in err
    [request] = fake_fal.requests.values()
    body = request.input
    assert body["thinking"] == "auto" and body["reasoning_effort"] == "low"
    assert body["system_prompt"] == "be brief"
    [url] = body["image_urls"]
    assert url.startswith(fake_fal.base_url)  # uploaded to (fake) fal storage first
    assert [f.data for f in fake_fal.files.values()] == [PNG]
    assert DEFAULT_KEY not in out + err


@pytest.mark.timeout(60)
async def test_ask_with_disabled_thinking_prints_no_reasoning(
    fake_fal: FakeFal, tmp_path: Path
) -> None:
    code, out, _ = await seed_bot(
        "ask", "hi", "--thinking", "disabled", env=fal_env(fake_fal, tmp_path), cwd=tmp_path
    )
    assert code == 0
    assert out == "echo: hi\n"


@pytest.mark.timeout(60)
async def test_ask_reports_a_refused_key(fake_fal: FakeFal, tmp_path: Path) -> None:
    env = fal_env(fake_fal, tmp_path) | {"FAL_KEY": "wrong-key-123"}
    code, out, err = await seed_bot("ask", "hi", env=env, cwd=tmp_path)
    assert code == 1
    assert "seed-bot:" in err and "wrong-key-123" not in out + err
    assert out == ""


@pytest.mark.timeout(60)
async def test_ask_reports_an_unreadable_file(fake_fal: FakeFal, tmp_path: Path) -> None:
    code, _, err = await seed_bot(
        "ask",
        "hi",
        "--image",
        str(tmp_path / "missing.png"),
        env=fal_env(fake_fal, tmp_path),
        cwd=tmp_path,
    )
    assert code == 1
    assert "missing.png: cannot read the file" in err
    assert fake_fal.requests == {}


@pytest.mark.timeout(60)
async def test_config_errors_exit_2_listing_every_problem(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[limits]\nmax_in_flight = 0\n[model]\ntop_p = 7\n")
    code, _, err = await seed_bot("ask", "hi", env={"PYTHONPATH": str(Path.cwd())}, cwd=tmp_path)
    assert code == 2
    assert "[limits] max_in_flight = 0: must be greater than 0" in err
    assert "[model] top_p = 7: must be between 0.0 and 1.0" in err
    assert "FAL_KEY: not set" in err


@pytest.mark.timeout(60)
async def test_check_reports_fal_key_and_database(fake_fal: FakeFal, tmp_path: Path) -> None:
    env = fal_env(fake_fal, tmp_path) | {
        "SEED_BOT_DISCORD__API_BASE": fake_fal.base_url + "/nope/v10"
    }
    code, out, _ = await seed_bot("check", env=env, cwd=tmp_path)
    assert "ok   config is valid" in out
    assert "ok   fal key accepted" in out
    assert "migrate it to" in out  # empty SQLite database, auto-migrated by run
    assert "FAIL discord: DISCORD_TOKEN is not set" in out
    assert code == 1
    bad = env | {"FAL_KEY": "not-the-key"}
    code, out, _ = await seed_bot("check", env=bad, cwd=tmp_path)
    assert "FAIL fal: the key was refused (401/403)" in out
    assert "not-the-key" not in out


def test_invite_url_names_the_needed_permissions() -> None:
    url = invite_url(1234)
    assert "client_id=1234" in url and "scope=bot+applications.commands" in url
    perms = BOT_PERMISSIONS
    assert perms.send_messages_in_threads and perms.create_public_threads and perms.attach_files
    assert not perms.administrator and not perms.mention_everyone


@pytest.mark.timeout(60)
async def test_help_is_worth_reading(tmp_path: Path) -> None:
    code, out, _ = await seed_bot(
        "ask", "--help", env={"PYTHONPATH": str(Path.cwd())}, cwd=tmp_path
    )
    assert code == 0
    text = " ".join(out.split())
    assert "--image FILE_OR_URL" in text and "up to 6" in text


@pytest.mark.timeout(60)
async def test_run_refuses_an_out_of_date_schema_then_migrate_fixes_it(tmp_path: Path) -> None:
    env = {
        "PYTHONPATH": str(ROOT),
        "DISCORD_TOKEN": "not-used-before-the-schema-check",
        "FAL_KEY": "not-used",
        "SEED_BOT_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/data/bot.db",
        "SEED_BOT_DATABASE__AUTO_MIGRATE": "false",
    }
    code, _, err = await seed_bot("run", env=env, cwd=tmp_path)
    assert code == 1
    assert "database schema is out of date" in err
    assert "run `seed-bot migrate`" in err
    assert "not-used-before-the-schema-check" not in err
    code, out, err = await seed_bot("migrate", env=env, cwd=tmp_path)
    assert code == 0, err
    assert out.startswith("database at revision ") and "(was empty)" in out
    code, out, _ = await seed_bot("migrate", env=env, cwd=tmp_path)
    assert code == 0
    assert "(was empty)" not in out


@pytest.mark.timeout(60)
async def test_check_reports_the_discord_token_intent_and_invite_url(
    fake_fal: FakeFal, fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    env = fal_env(fake_fal, tmp_path) | {
        "DISCORD_TOKEN": fake_discord.token,
        "SEED_BOT_DISCORD__API_BASE": fake_discord.api_base,
    }
    code, out, _ = await seed_bot("check", env=env, cwd=tmp_path)
    assert code == 0, out
    assert f"ok   discord token accepted: bot Seed (id {fake_discord.bot_user.id})" in out
    assert f"invite URL: {invite_url(fake_discord.application_id)}" in out
    user_url = user_install_url(fake_discord.application_id)
    assert f"user install URL: {user_url}" in out
    assert "integration_type=1&scope=applications.commands" in user_url
    assert "User Install is not enabled" not in out
    assert fake_discord.token not in out
    fake_discord.set_installation_contexts(user=False)
    code, out, _ = await seed_bot("check", env=env, cwd=tmp_path)
    assert code == 0 and "note: User Install is not enabled" in out
    fake_discord.set_installation_contexts(user=True)

    fake_discord.set_privileged_intents(message_content=False)
    code, out, _ = await seed_bot("check", env=env, cwd=tmp_path)
    assert code == 1
    assert "FAIL discord: the Message Content intent is not enabled" in out

    code, out, _ = await seed_bot("check", env=env | {"DISCORD_TOKEN": "bad.token"}, cwd=tmp_path)
    assert code == 1
    assert "FAIL discord: the token was refused (401)" in out
    assert "bad.token" not in out


@pytest.mark.timeout(60)
async def test_run_explains_a_missing_message_content_intent(
    fake_fal: FakeFal, fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    fake_discord.set_privileged_intents(message_content=False)
    env = fal_env(fake_fal, tmp_path) | {
        "DISCORD_TOKEN": fake_discord.token,
        "SEED_BOT_DISCORD__API_BASE": fake_discord.api_base,
        "SEED_BOT_DISCORD__GATEWAY_URL": fake_discord.gateway_url,
    }
    code, _, err = await seed_bot("run", env=env, cwd=tmp_path)
    assert code == 1
    assert "Message Content Intent" in err
    assert "Privileged Gateway Intents" in err
    assert fake_discord.token not in err


@pytest.mark.timeout(60)
async def test_config_is_taken_before_or_after_the_command(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text("[limits]\nmax_in_flight = 0\n")
    for args in (("--config", str(config), "migrate"), ("migrate", "--config", str(config))):
        code, _, err = await seed_bot(*args, env={"PYTHONPATH": str(ROOT)}, cwd=tmp_path)
        assert code == 2, err
        assert "[limits] max_in_flight = 0: must be greater than 0" in err


@pytest.mark.timeout(60)
async def test_usage_reports_costs_per_server_user_and_day_in_three_formats(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/costs.db"
    await upgrade(url)
    engine = create_engine(url)
    try:
        costs = sql_repositories(engine).costs
        day = datetime(2026, 11, 3, 9, tzinfo=UTC)
        for turn_id, user, guild, at, units in [
            (1, "11", "900", day, 20_000),
            (2, "11", "900", day + timedelta(days=1), 5_000),
            (3, "12", None, day + timedelta(days=1), 1_000),
            (4, "12", "900", datetime(2026, 10, 31, tzinfo=UTC), 7),  # before --since
        ]:
            payer = Payer(user, guild)
            await costs.reserve(Reservation(turn_id, payer, 0, 0, 0.0, at), [], now=at)
            await costs.settle(turn_id, Settlement(estimate=partial(priced, units)))
    finally:
        await engine.dispose()
    env = {"PYTHONPATH": str(ROOT), "SEED_BOT_DATABASE__URL": url}
    period = ("--since", "2026-11-01", "--until", "2026-12-01")

    code, out, err = await seed_bot(
        "usage", *period, "--by", "user", "--format", "json", env=env, cwd=tmp_path
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["since"] == "2026-11-01T00:00:00+00:00"
    assert report["rows"] == [
        {"user": "11", "turns": 2, "units": 25_000, "usd": 0.0025},
        {"user": "12", "turns": 1, "units": 1_000, "usd": 0.0001},
    ]
    assert report["total"] == {"turns": 3, "units": 26_000, "usd": 0.0026}

    code, out, err = await seed_bot(
        "usage", *period, "--by", "day", "--format", "csv", env=env, cwd=tmp_path
    )
    assert code == 0, err
    assert out.splitlines() == [
        "day,turns,units,usd",
        "2026-11-03,1,20000,0.002000",
        "2026-11-04,2,6000,0.000600",
    ]

    code, out, err = await seed_bot("usage", *period, env=env, cwd=tmp_path)
    assert code == 0, err
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == ["guild", "turns", "units", "usd"]
    assert lines[1] == ["900", "2", "25,000", "$0.0025"]
    assert lines[2] == ["DM", "1", "1,000", "$0.0001"]
    assert lines[-1] == ["total", "3", "26,000", "$0.0026"]

    code, _, err = await seed_bot("usage", "--since", "last week", env=env, cwd=tmp_path)
    assert code == 2
    assert "'last week' is not a date or time" in err


def priced(units: int, _input_tokens: int) -> Cost:
    return Cost(units, units * 1e-7, False)


# A database URL whose password appears nowhere else: wherever it is shown, it is masked.
SECRET_PASSWORD = "pw-4e1c9-only-in-the-url"
UNREACHABLE_DB = f"postgresql+asyncpg://bot:{SECRET_PASSWORD}@127.0.0.1:9/seed"


@pytest.mark.timeout(60)
async def test_a_rejected_database_url_is_shown_with_its_password_masked(tmp_path: Path) -> None:
    env = {
        "PYTHONPATH": str(ROOT),
        "SEED_BOT_DATABASE__URL": f"postgresql://u:{SECRET_PASSWORD}@h/db",
    }
    code, out, err = await seed_bot("check", env=env, cwd=tmp_path)
    assert code == 2
    assert "SEED_BOT_DATABASE__URL = 'postgresql://u:***@h/db': must start" in err
    assert SECRET_PASSWORD not in out + err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["check", "migrate", "run"])
async def test_an_unreachable_database_is_one_line_without_its_password(
    command: str, fake_fal: FakeFal, tmp_path: Path
) -> None:
    env = fal_env(fake_fal, tmp_path) | {
        "SEED_BOT_DATABASE__URL": UNREACHABLE_DB,
        "DISCORD_TOKEN": "not-used-before-the-database",
    }
    code, out, err = await seed_bot(command, env=env, cwd=tmp_path)
    assert code == 1
    assert "Traceback" not in out + err
    assert SECRET_PASSWORD not in out + err
    [line] = [x for x in (out + err).splitlines() if "database" in x and "schema" not in x]
    assert "cannot reach the database postgresql+asyncpg://bot:***@127.0.0.1:9/seed" in line
    if command == "check":
        assert line.startswith("FAIL database: ")
