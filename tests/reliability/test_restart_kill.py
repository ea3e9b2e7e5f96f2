"""A bot process killed (SIGKILL) while it delivers a hundred answers: the next process, on
the same database, finishes every turn, each answered exactly once in its own thread, and
answers a message that arrived while it was down."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.storage import create_engine, sql_repositories
from tests.fakes.discord.events import Event, MessageCreated, MessageEdited, ThreadCreated
from tests.fakes.discord.models import FakeUser
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.discord.standard import StandardWorld
from tests.fakes.fal_fixtures import FakeFalFactory
from tests.reliability.botproc import start_bot, wait_until

USERS = 100
STATUS = "Thinking…"
ENV = {
    # every turn in fal at once, and no quota in the way
    "SEED_BOT_LIMITS__MAX_IN_FLIGHT": "128",
    "SEED_BOT_LIMITS__USER_REQUESTS": "0",
    "SEED_BOT_LIMITS__GUILD_REQUESTS": "0",
}


async def unfinished_states(tmp_path: Path) -> Counter[str]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    try:
        turns = await sql_repositories(engine).turns.unfinished_turns()
    finally:
        await engine.dispose()
    return Counter(
        f"{t.state.value}{'+parts' if t.reply_message_ids else ''}"
        f"{'+status' if t.status_message_id else ''}"
        for t in turns
    )


def prompt(index: int) -> str:
    return f"q{index:03d} what now?"


def answer_of(index: int) -> str:
    return f"echo: {prompt(index)}"


def counter(since: int, text: str, count: int = USERS // 2) -> Callable[[Event], bool]:
    """A predicate for ``FakeDiscord.wait_for``: true once the bot has posted (or edited a
    message into) ``text`` in ``count`` different channels."""
    channels: set[int] = set()

    def enough(event: Event) -> bool:
        if isinstance(event, MessageCreated | MessageEdited) and event.by_bot:
            message = event.after if isinstance(event, MessageEdited) else event.message
            if text in message.content:
                channels.add(message.channel_id)
        return len(channels) >= count

    return enough


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "moment", ["posting answers", "posting statuses", "answers after statuses"]
)
async def test_killed_mid_delivery_every_turn_is_answered_once_after_restart(
    moment: str,
    fake_discord: FakeDiscord,
    discord_world: StandardWorld,
    fake_fal_factory: FakeFalFactory,
    tmp_path: Path,
) -> None:
    fake, world = fake_discord, discord_world
    fal = await fake_fal_factory(concurrency=1000, keepalive_interval=1.0)
    users: list[FakeUser] = []
    for index in range(USERS):
        user = fake.create_user(f"user{index:03d}")
        fake.add_member(world.guild, user)
        users.append(user)

    fal.hold()
    bot = await start_bot(fake, fal, tmp_path, ENV)
    try:
        since = fake.mark()
        mentions = [
            await fake.send_message(users[i], world.channel, f"<@{fake.bot_user.id}> {prompt(i)}")
            for i in range(USERS)
        ]
        ids = await fal.wait_for_submissions(USERS, timeout=30)
        # Every request id is stored before the bot waits on it: wait until it does.
        await fal.wait_for(
            lambda: (
                {c.path.split("/requests/")[1].split("/")[0] for c in fal.calls_to("stream")}
                >= set(ids)
            ),
            timeout=30,
        )
        created = {
            e.from_message_id: e.thread_id for e in fake.events_of(ThreadCreated, since=since)
        }
        threads = [fake.channels[created[m.id]] for m in mentions]

        def answered() -> list[int]:
            return [
                i
                for i, thread in enumerate(threads)
                if any(answer_of(i) in m.content for m in fake.bot_messages(thread))
            ]

        if moment == "posting statuses":
            # The status messages ("Thinking…") go out about together after the status
            # delay: kill it among them, fal still holding every request.
            await fake.wait_for(counter(since, STATUS), timeout=30, what="50 status messages")
        else:
            if moment == "answers after statuses":
                await fake.wait_for(counter(since, STATUS, USERS), timeout=30, what="statuses")
            fal.unhold()
            # Kill it in the middle of posting the answers: some turns are delivered, some
            # completed but not (fully) delivered, some still waiting on fal's result.
            await fake.wait_for(counter(since, "echo: q", 30), timeout=30, what="30 answers")
        await bot.kill()
        first_run = len(answered())
        assert first_run < USERS, "every answer was out before the kill: nothing was tested"
        left = await unfinished_states(tmp_path)
        print(f"killed with {first_run} answers out; unfinished turns by state: {left}")
        assert sum(left.values()) > 0

        # A message into a bound thread while the bot is down.
        late = await fake.send_message(users[0], threads[0], "asked while you were away")

        bot = await start_bot(fake, fal, tmp_path, ENV)
        fal.unhold()
        await wait_until(fake, lambda: len(answered()) == USERS, timeout=30)
        # Posted anew, or its status message edited into it when it took past the status
        # delay (it waits behind the thread's resumed turn, on a busy machine too).
        await fake.wait_for_post(threads[0], contains="echo: asked while you were away", timeout=15)
        # Let it finish whatever it still has in hand, then look at the result.
        bot.send(signal.SIGTERM)
        assert await bot.wait(timeout=30) == 0, bot.log
    finally:
        await bot.kill()

    late_prompt = "asked while you were away"
    for index, thread in enumerate(threads):
        # Each answer is one message: the reasoning (a spoiler), then the answer itself.
        contents = [m.content for m in fake.bot_messages(thread)]
        expected = [(f"The user said: {prompt(index)}", answer_of(index))]
        if index == 0:
            expected += [(f"The user said: {late_prompt}", f"echo: {late_prompt}")]
        # exactly these, in this order: nothing twice, no status message left behind
        assert len(contents) == len(expected), (index, contents)
        for content, parts in zip(contents, expected, strict=True):
            assert all(part in content for part in parts), (index, contents)
    thread_ids = {t.id for t in threads}
    assert [m.content for m in fake.bot_messages() if m.channel_id not in thread_ids] == []
    assert late.channel_id == threads[0].id
    # one fal request per message: the restart waited on the stored requests
    prompts = sorted(r.input["prompt"] for r in fal.requests.values())
    assert prompts == sorted([prompt(i) for i in range(USERS)] + [late_prompt])
