"""``seed-bot export`` and ``seed-bot purge`` as subprocesses, on SQLite and PostgreSQL:
what they print, what they delete (nothing on a dry run or bad input), and two purges
running at once as two processes."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from bot.storage import Repositories
from tests.test_cli import ROOT, seed_bot

from .test_privacy import ADA, BOB, GUILD_A, GUILD_B, age, answered, conversation_in, turn_ids

pytestmark = pytest.mark.timeout(90)


def env_for(url: str) -> dict[str, str]:
    return {"PYTHONPATH": str(ROOT), "SEED_BOT_DATABASE__URL": url}


async def test_export_writes_both_files_of_a_thread(
    store: Repositories, migrated_url: str, tmp_path: Path
) -> None:
    thread = await conversation_in(store, GUILD_A)
    stored = [await answered(store, thread, who) for who in (ADA, BOB)]
    out = tmp_path / "out"

    code, printed, err = await seed_bot(
        "export",
        "--thread",
        thread.scope_id,
        "--out",
        str(out),
        env=env_for(migrated_url),
        cwd=tmp_path,
    )

    assert code == 0, err
    assert printed.split() == [str(out / "conversation.md"), str(out / "conversation.json")]
    document = json.loads((out / "conversation.json").read_text())
    assert [t["id"] for t in document["turns"]] == [t.id for t in stored]
    assert [t["prompt"] for t in document["turns"]] == [t.prompt for t in stored]
    markdown = (out / "conversation.md").read_text()
    assert all(t.prompt in markdown and (t.output or "") in markdown for t in stored)


async def test_export_of_an_unknown_thread_says_so(migrated_url: str, tmp_path: Path) -> None:
    env = env_for(migrated_url)
    code, _, err = await seed_bot(
        "export", "--thread", "1999999999999999999", env=env, cwd=tmp_path
    )
    assert code == 1
    assert err.strip() == "seed-bot: no conversation is stored for thread 1999999999999999999"
    assert not (tmp_path / "seed-bot-export-1999999999999999999").exists()
    code, _, err = await seed_bot("export", "--thread", "general", env=env, cwd=tmp_path)
    assert code == 2 and "'general' is not a Discord id" in err


async def test_purge_dry_run_prints_and_keeps_then_purge_deletes(
    store: Repositories, migrated_url: str, tmp_path: Path
) -> None:
    env = env_for(migrated_url)
    thread = await conversation_in(store, GUILD_A)
    ada = [await answered(store, thread, ADA) for _ in range(2)]
    bob = await answered(store, thread, BOB)
    ada_b = await answered(store, await conversation_in(store, GUILD_B), ADA)
    everything = await turn_ids(store)

    code, out, err = await seed_bot("purge", "--user", ADA, "--dry-run", env=env, cwd=tmp_path)
    assert code == 0, err
    assert out.strip() == (
        f"would delete (turns of user {ADA}): 3 turns, 6 messages, 1 conversation"
    )
    assert await turn_ids(store) == everything

    code, out, err = await seed_bot("purge", "--guild", GUILD_B, env=env, cwd=tmp_path)
    assert code == 0, err
    assert (
        out.strip()
        == f"deleted (conversations of server {GUILD_B}): 1 turn, 2 messages, 1 conversation"
    )
    assert await turn_ids(store) == {t.id for t in [*ada, bob]}
    assert ada_b.id not in await turn_ids(store)

    await age(store, [ada[0].id])
    code, out, err = await seed_bot("purge", "--older-than", "30", env=env, cwd=tmp_path)
    assert code == 0, err
    assert out.strip() == "deleted (turns older than 30 days): 1 turn, 2 messages"
    assert await turn_ids(store) == {ada[1].id, bob.id}


async def test_purge_without_a_selector_deletes_nothing(
    store: Repositories, migrated_url: str, tmp_path: Path
) -> None:
    await answered(store, await conversation_in(store, GUILD_A))
    before = await turn_ids(store)
    env = env_for(migrated_url)
    code, _, err = await seed_bot("purge", env=env, cwd=tmp_path)
    assert code == 2
    assert "one of the arguments --user --guild --older-than is required" in err
    code, _, err = await seed_bot("purge", "--user", ADA, "--guild", GUILD_A, env=env, cwd=tmp_path)
    assert code == 2 and "not allowed with argument" in err
    code, _, err = await seed_bot("purge", "--older-than", "0", env=env, cwd=tmp_path)
    assert code == 2 and "'0' is not a whole number of days (1 or more)" in err
    assert await turn_ids(store) == before


async def test_two_purge_processes_at_once_delete_each_old_turn_once(
    store: Repositories, migrated_url: str, tmp_path: Path
) -> None:
    old, recent = [], []
    for _ in range(3):
        thread = await conversation_in(store, GUILD_A)
        old += [await answered(store, thread) for _ in range(10)]
        recent.append(await answered(store, thread))
    await age(store, [t.id for t in old])
    env = env_for(migrated_url)

    results = await asyncio.gather(
        *(seed_bot("purge", "--older-than", "30", env=env, cwd=tmp_path) for _ in range(2))
    )

    deleted = 0
    for code, out, err in results:
        assert code == 0, err
        found = re.search(r"(\d+) turns?\b", out)
        deleted += int(found[1]) if found else 0
    assert deleted == len(old)
    assert await turn_ids(store) == {t.id for t in recent}
