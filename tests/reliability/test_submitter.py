"""The one rule for a submit's fate, live and after a restart: the real ``Submitter`` with
the real fal client against the fake fal, a real SQLite store and the real journal file."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.domain.errors import ModelRateLimited, ModelSubmitUnknown
from bot.domain.models import ModelRequest, NewConversation, NewTurn, TurnState
from bot.domain.submission import MAX_RESUBMISSIONS, Submitter
from bot.fal import FalClient
from bot.journal import FileJournal
from bot.storage import Repositories, create_engine, sql_repositories
from bot.storage.migrate import upgrade
from tests.fakes.fal import FakeFal, Fault
from tests.fakes.fal_fixtures import fal_settings_for

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[tuple[str, Repositories]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    await upgrade(url)
    engine = create_engine(url)
    yield url, sql_repositories(engine)
    await engine.dispose()


@pytest.fixture
def client(fake_fal: FakeFal, fal_http_session: aiohttp.ClientSession) -> FalClient:
    return FalClient(fal_http_session, fal_settings_for(fake_fal), rng=random.Random(5))


async def new_turn(store: Repositories, text: str) -> int:
    start = await store.conversations.begin_turn(
        NewTurn(f"scope-{text}", f"msg-{text}", "u1", "Ann", "c1", text),
        conversation=NewConversation(f"scope-{text}", "u1"),
    )
    return start.turn.id


def journal_at(tmp_path: Path, url: str) -> FileJournal:
    return FileJournal(tmp_path / "bot.db.submissions", url)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "bot.domain.submission" and r.levelno == logging.WARNING
    ]


async def test_a_submit_lost_after_sending_is_sent_once_more_and_logged(
    fake_fal: FakeFal,
    client: FalClient,
    db: tuple[str, Repositories],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, store = db
    turn_id = await new_turn(store, "hello")
    fake_fal.add_fault(Fault.reset_after("submit"))
    journal = journal_at(tmp_path, url)
    submitter = Submitter(client, store.turns, journal)

    handle = await submitter.submit(turn_id, ModelRequest(prompt="hello"))

    assert len(fake_fal.requests) == 2  # fal had queued the first: a double charge
    assert (await store.turns.get_turn(turn_id)).handle == handle
    assert submitter.resubmissions == 1
    last = warnings_of(caplog)[-1]
    assert "possible double charge" in last and handle.request_id in last
    assert journal.left_open() == {}
    journal.close()


async def test_unknown_fates_are_resubmitted_a_bounded_number_of_times(
    fake_fal: FakeFal, client: FalClient, db: tuple[str, Repositories]
) -> None:
    _, store = db
    turn_id = await new_turn(store, "hello")
    fake_fal.add_fault(Fault.reset("submit", times=None))
    submitter = Submitter(client, store.turns)

    with pytest.raises(ModelSubmitUnknown):
        await submitter.submit(turn_id, ModelRequest(prompt="hello"))
    assert len(fake_fal.calls_to("submit")) == 1 + MAX_RESUBMISSIONS
    assert submitter.resubmissions == MAX_RESUBMISSIONS


async def test_a_definite_refusal_is_not_resubmitted(
    fake_fal: FakeFal,
    client: FalClient,
    db: tuple[str, Repositories],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, store = db
    turn_id = await new_turn(store, "hello")
    fake_fal.add_fault(Fault.rate_limited("submit", times=None))
    journal = journal_at(tmp_path, url)
    submitter = Submitter(client, store.turns, journal)

    with pytest.raises(ModelRateLimited):
        await submitter.submit(turn_id, ModelRequest(prompt="hello"))
    assert submitter.resubmissions == 0
    assert warnings_of(caplog) == []
    journal.close()
    assert journal_at(tmp_path, url).left_open() == {}  # settled: nothing to redo


async def test_after_a_restart_a_received_id_is_stored_not_resubmitted(
    fake_fal: FakeFal, client: FalClient, db: tuple[str, Repositories], tmp_path: Path
) -> None:
    url, store = db
    turn_id = await new_turn(store, "hello")
    previous = journal_at(tmp_path, url)
    previous.begin(turn_id)
    handle = await client.submit(ModelRequest(prompt="hello"))
    previous.answered(turn_id, handle)
    previous.close()  # the process dies here: the id is not in the database

    submitter = Submitter(client, store.turns, journal_at(tmp_path, url))
    assert await submitter.recover() == 1

    turn = await store.turns.get_turn(turn_id)
    assert turn.state is TurnState.SUBMITTED
    assert turn.handle == handle
    assert len(fake_fal.requests) == 1
    assert submitter.resubmissions == 0


async def test_after_a_restart_an_unanswered_submit_is_resubmitted_and_logged(
    fake_fal: FakeFal,
    client: FalClient,
    db: tuple[str, Repositories],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, store = db
    unanswered = await new_turn(store, "lost")
    never_sent = await new_turn(store, "waiting")
    previous = journal_at(tmp_path, url)
    previous.begin(unanswered)  # the process dies before fal's answer arrives
    previous.close()

    submitter = Submitter(client, store.turns, journal_at(tmp_path, url))
    assert await submitter.recover() == 0
    await submitter.submit(never_sent, ModelRequest(prompt="waiting"))
    assert submitter.resubmissions == 0 and warnings_of(caplog) == []
    handle = await submitter.submit(unanswered, ModelRequest(prompt="lost"))

    assert submitter.resubmissions == 1
    assert any(
        "previous run got no answer" in w and handle.request_id in w for w in warnings_of(caplog)
    )


async def test_a_turn_stopped_before_its_id_was_stored_gets_its_request_cancelled(
    fake_fal: FakeFal, client: FalClient, db: tuple[str, Repositories], tmp_path: Path
) -> None:
    url, store = db
    fake_fal.hold()
    turn_id = await new_turn(store, "hello")
    previous = journal_at(tmp_path, url)
    previous.begin(turn_id)
    handle = await client.submit(ModelRequest(prompt="hello"))
    previous.answered(turn_id, handle)
    previous.close()
    assert await store.turns.stop_turn(turn_id, "alice")

    await Submitter(client, store.turns, journal_at(tmp_path, url)).recover()

    assert fake_fal.requests[handle.request_id].cancel_requested
    assert (await store.turns.get_turn(turn_id)).state is TurnState.STOPPED
