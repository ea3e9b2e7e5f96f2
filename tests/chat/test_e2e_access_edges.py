"""End to end, who may act through the bot (DESIGN §1 "Who may act"): the operator's access
lists hold outside the bot's servers (DMs, group DMs, servers where only a person installed
the app) unless the operator opens those places; a thread is bound only by its owner or a
member who may manage threads, and its owner controls the conversation in it; ``/ask`` and
"Ask Seed" post publicly or open a thread only where the invoker could; Reply continues only
a conversation the presser may control, whatever its custom id says."""

from __future__ import annotations

from bot.storage.migrate import upgrade
from tests.chat.conftest import Harness, HarnessFactory
from tests.fakes.discord import FakeInteraction, StandardWorld
from tests.fakes.discord.models import FakeChannel, FakeMessage, FakeUser, Perm
from tests.reliability.racing import needs_postgres
from tests.storage.conftest import fresh_postgres_database, postgres_base_url

OUTSIDE = "⛔ Sorry, this bot is only available in the servers it is enabled in."


async def refused(interaction: FakeInteraction) -> str:
    """The ephemeral refusal ``interaction`` got at once."""
    response = await interaction.wait_response()
    assert response.ephemeral and response.message is not None
    return response.message.content


async def answered_privately(interaction: FakeInteraction, contains: str) -> None:
    await interaction.wait_original(lambda m: contains in m.content, timeout=10)


def outside_places(h: Harness, user: FakeUser) -> list[FakeChannel]:
    """A server without the bot, a DM between people and a group DM, where ``user`` (who
    installed the app) may use ``/ask``."""
    fake = h.fake
    away = fake.create_guild("Elsewhere", bot_member=False)
    away_channel = fake.create_text_channel(away, "chat")
    fake.add_member(away, user)
    fake.install_for_user(user)
    other = h.world.bob if user is not h.world.bob else h.world.alice
    dm = fake.create_private_channel(user, other)
    group = fake.create_private_channel(user, other, fake.create_user("dan"))
    return [away_channel, dm, group]


async def test_server_allow_lists_refuse_ask_outside_the_bots_servers(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    world = discord_world
    vip = world.fake.create_role(world.guild, "vip")
    world.fake.set_member_roles(world.guild, world.alice, [vip])
    for lists in (
        {"SEED_BOT_ACCESS__ALLOW_GUILDS": str(world.guild.id)},
        {"SEED_BOT_ACCESS__ALLOW_ROLES": str(vip.id)},
        {"SEED_BOT_ACCESS__ALLOW_CHANNELS": str(world.channel.id)},
    ):
        h = await make_harness(**lists)
        before = len(h.prompts())
        for place in outside_places(h, world.alice):
            ask = await h.fake.invoke_command(world.alice, place, "ask", {"prompt": "free ride"})
            assert await refused(ask) == OUTSIDE, (lists, place)
        away_channel = outside_places(h, world.alice)[0]
        target = await h.fake.send_message(world.alice, away_channel, "what is this?")
        menu = await h.fake.invoke_message_command(world.alice, target, "Ask Seed")
        assert await refused(menu) == OUTSIDE, lists
        # Inside the allowed server the same person is answered: the barrier after which a
        # model call for the refused ones would have shown.
        since = h.fake.mark()
        _, thread = await h.start_thread(world.alice, "inside")
        await h.answer_in(thread, since=since, contains="echo: inside")
        assert h.prompts()[before:] == ["inside"], lists
        await h.stop()


async def test_allow_outside_servers_opens_them_to_the_user_lists_only(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    world = discord_world
    h = await make_harness(
        SEED_BOT_ACCESS__ALLOW_GUILDS=str(world.guild.id),
        SEED_BOT_ACCESS__ALLOW_OUTSIDE_SERVERS="true",
        SEED_BOT_ACCESS__ALLOW_USERS=str(world.alice.id),
    )
    away_channel, dm, group = outside_places(h, world.alice)
    for place, prompt in ((away_channel, "away"), (dm, "dm"), (group, "group")):
        ask = await h.fake.invoke_command(world.alice, place, "ask", {"prompt": prompt})
        await answered_privately(ask, f"echo: {prompt}")
    # The user list still holds there.
    for place in outside_places(h, world.bob):
        ask = await h.fake.invoke_command(world.bob, place, "ask", {"prompt": "bob"})
        assert await refused(ask) == "⛔ Sorry, you are not on this bot's list of allowed users."
    assert h.prompts() == ["away", "dm", "group"]


async def test_allow_dms_with_a_role_list_does_not_open_the_bots_dm(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    world = discord_world
    fake = world.fake
    vip = fake.create_role(world.guild, "vip")
    fake.set_member_roles(world.guild, world.alice, [vip])
    h = await make_harness(
        SEED_BOT_DISCORD__ALLOW_DMS="true", SEED_BOT_ACCESS__ALLOW_ROLES=str(vip.id)
    )
    for who in (world.bob, world.alice):  # without the role, and with it (roles are per server)
        dm = fake.dm_channel(who)
        since = fake.mark()
        await fake.send_message(who, dm, "hello in private")
        notice = await fake.wait_for_message(dm, since=since, timeout=10)
        assert notice.content == OUTSIDE
    assert h.prompts() == []
    await h.stop()
    # Opened by the operator: the DM is answered.
    h = await make_harness(
        SEED_BOT_DISCORD__ALLOW_DMS="true",
        SEED_BOT_ACCESS__ALLOW_ROLES=str(vip.id),
        SEED_BOT_ACCESS__ALLOW_OUTSIDE_SERVERS="true",
    )
    dm = fake.dm_channel(world.bob)
    since = fake.mark()
    await fake.send_message(world.bob, dm, "now?")
    await fake.wait_for_post(dm, contains="echo: now?", since=since, timeout=10)


async def test_deny_lists_apply_outside_the_bots_servers(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    world = discord_world
    fake = world.fake
    h = await make_harness(SEED_BOT_ACCESS__DENY_USERS=str(world.alice.id))
    for place in outside_places(h, world.alice):
        ask = await fake.invoke_command(world.alice, place, "ask", {"prompt": "denied"})
        assert await refused(ask) == "⛔ Sorry, you are not allowed to use this bot."
    await h.stop()
    # A denied server or channel holds for a person's own installation of the app in it.
    carol = fake.create_user("carol", global_name="Carol")
    away = fake.create_guild("Shady", bot_member=False)
    shady = fake.create_text_channel(away, "chat")
    fine = fake.create_text_channel(away, "fine")
    fake.add_member(away, carol)
    fake.install_for_user(carol)
    h = await make_harness(SEED_BOT_ACCESS__DENY_GUILDS=str(away.id))
    ask = await fake.invoke_command(carol, shady, "ask", {"prompt": "here?"})
    assert await refused(ask) == "⛔ Sorry, this bot is not enabled in this server."
    await h.stop()
    h = await make_harness(SEED_BOT_ACCESS__DENY_CHANNELS=str(shady.id))
    ask = await fake.invoke_command(carol, shady, "ask", {"prompt": "here?"})
    assert await refused(ask) == "⛔ Sorry, this bot is not enabled in this channel."
    ask = await fake.invoke_command(carol, fine, "ask", {"prompt": "there"})
    await answered_privately(ask, "echo: there")
    assert h.prompts() == ["there"]


# -- a thread is bound only by its owner or a member who may manage threads -----------------


async def test_a_mention_in_someone_elses_thread_is_answered_once_without_binding_it(
    harness: Harness,
) -> None:
    await one_off_then_bound(harness)


@needs_postgres
async def test_a_one_off_answer_and_the_binding_after_it_on_postgresql(
    make_harness: HarnessFactory,
) -> None:
    base = postgres_base_url()
    assert base is not None
    async with fresh_postgres_database(base) as url:
        await upgrade(url)
        h = await make_harness(SEED_BOT_DATABASE__URL=url)
        try:
            await one_off_then_bound(h)
        finally:
            await h.stop()


async def one_off_then_bound(h: Harness) -> None:
    """Alice's mention in bob's thread is answered once (and retried), without binding it;
    bob's own mention binds it to his conversation."""
    fake, world = h.fake, h.world
    thread = await fake.create_thread(world.bob, world.channel, "bob's own")
    since = fake.mark()
    mention = await h.mention(world.alice, "take over", channel=thread)
    answer = await h.answer_in(thread, since=since, contains="echo: take over")
    assert answer.referenced_message_id == mention.id
    assert await h.app.store.conversations.conversation_for_scope(str(thread.id)) is None
    # Her one answer is hers to retry, like any turn.
    [retry_id] = [c for c in answer.custom_ids() if c.startswith("seed:retry:")]
    since = fake.mark()
    await (await fake.press_button(world.alice, answer, retry_id)).wait_response()
    await fake.wait_for_message(thread, contains="echo: take over", since=since, timeout=10)
    # Editing her message answers it again, like a latest message anywhere.
    since = fake.mark()
    await fake.edit_message(mention, f"<@{h.bot_user.id}> take over, edited")
    await fake.wait_for_message(thread, contains="echo: take over, edited", since=since, timeout=10)
    # The thread is not bound: bob's plain message is nobody's turn ...
    await fake.send_message(world.bob, thread, "just chatting")
    # ... until bob, its owner, mentions the bot: his conversation, without alice's turn.
    since = fake.mark()
    await h.mention(world.bob, "mine now", channel=thread)
    await h.answer_in(thread, since=since, contains="echo: mine now")
    conversation = await h.app.store.conversations.conversation_for_scope(str(thread.id))
    assert conversation is not None and conversation.owner_id == str(world.bob.id)
    assert h.prompts() == ["take over", "take over", "take over, edited", "mine now"]
    assert "messages" not in list(h.fal.requests.values())[-1].input  # no history
    since = fake.mark()
    await fake.send_message(world.bob, thread, "and on")
    await h.answer_in(thread, since=since, contains="echo: and on")


async def ask_seed_answered_in(
    h: Harness, user: FakeUser, target: FakeMessage, question: str, thread: FakeChannel
) -> None:
    """``user`` asks ``question`` about ``target`` with "Ask Seed"; answered in ``thread``."""
    menu = await h.fake.invoke_message_command(user, target, "Ask Seed")
    assert (await menu.wait_response()).type == 9
    since = h.fake.mark()
    await h.fake.submit_modal(user, menu, {"seed:ask:question": question})
    await h.fake.wait_for_post(
        thread, lambda m: "echo:" in m.content, contains=question, since=since, timeout=10
    )


async def test_ask_and_ask_seed_in_someone_elses_thread_do_not_bind_it(harness: Harness) -> None:
    h = harness
    fake, world = h.fake, h.world
    thread = await fake.create_thread(world.bob, world.channel, "bob's own")
    since = fake.mark()
    await fake.invoke_command(world.alice, thread, "ask", {"prompt": "via ask", "effort": "low"})
    await h.answer_in(thread, since=since, contains="echo: via ask")
    assert list(h.fal.requests.values())[-1].input.get("reasoning_effort") == "low"
    target = await fake.send_message(world.bob, thread, "bob's note")
    await ask_seed_answered_in(h, world.alice, target, "via menu", thread)
    assert await h.app.store.conversations.conversation_for_scope(str(thread.id)) is None
    assert all("messages" not in r.input for r in h.fal.requests.values())  # no shared history
    # "Ask Seed" on a message with a thread bob opened on it: answered in it, once.
    note = await fake.send_message(world.bob, world.channel, "a note with a thread")
    on_note = await fake.create_thread(world.bob, world.channel, "on it", from_message=note)
    await ask_seed_answered_in(h, world.alice, note, "about the note", on_note)
    assert await h.app.store.conversations.conversation_for_scope(str(on_note.id)) is None
    # Bob's own /ask binds his thread.
    since = fake.mark()
    await fake.invoke_command(world.bob, thread, "ask", {"prompt": "bob's turn"})
    await h.answer_in(thread, since=since, contains="echo: bob's turn")
    conversation = await h.app.store.conversations.conversation_for_scope(str(thread.id))
    assert conversation is not None and conversation.owner_id == str(world.bob.id)


async def test_the_thread_owner_controls_a_conversation_a_moderator_bound_in_it(
    harness: Harness,
) -> None:
    h = harness
    fake, world = h.fake, h.world
    mods = fake.create_role(world.guild, "mods", permissions=Perm.MANAGE_THREADS)
    mo = fake.create_user("mo", global_name="Mo")
    fake.add_member(world.guild, mo, roles=[mods])
    thread = await fake.create_thread(world.bob, world.channel, "bob's own")
    since = fake.mark()
    await h.mention(mo, "moderator here", channel=thread)
    answer = await h.answer_in(thread, since=since, contains="echo: moderator here")
    conversation = await h.app.store.conversations.conversation_for_scope(str(thread.id))
    assert conversation is not None and conversation.owner_id == str(mo.id)
    # Bob owns the thread: he controls the conversation in it; alice does not.
    done = await fake.invoke_command(world.bob, thread, "system", {"prompt": "be brief"})
    assert (await refused(done)).startswith("✅"), "the thread's owner may set its prompt"
    no = await fake.invoke_command(world.alice, thread, "system", {"prompt": "be a pirate"})
    assert (await refused(no)).startswith("⛔ Only the person who asked, the owner")
    exported = await fake.invoke_command(world.bob, thread, "export", {})
    assert (await exported.wait_response()).ephemeral
    [retry_id] = [c for c in answer.custom_ids() if c.startswith("seed:retry:")]
    since = fake.mark()
    await (await fake.press_button(world.bob, answer, retry_id)).wait_response()
    await fake.wait_for_message(thread, contains="echo: moderator here", since=since, timeout=10)
    assert list(h.fal.requests.values())[-1].input.get("system_prompt") == "be brief"
    reset = await fake.invoke_command(world.bob, thread, "reset", {})
    assert (await refused(reset)).startswith("✅")


# -- /ask and "Ask Seed" act with the invoker's rights ----------------------------------------

READ_ONLY = (
    Perm.SEND_MESSAGES
    | Perm.CREATE_PUBLIC_THREADS
    | Perm.CREATE_PRIVATE_THREADS
    | Perm.SEND_MESSAGES_IN_THREADS
)


def announcements(h: Harness) -> tuple[FakeChannel, FakeUser]:
    """A channel where members may only read and use app commands, and a moderator who may
    post there; the bot keeps every right it needs."""
    fake, world = h.fake, h.world
    channel = fake.create_text_channel(world.guild, "announcements", news=True)
    fake.set_overwrite(channel, world.guild.everyone, deny=READ_ONLY)
    fake.set_overwrite(channel, h.bot_user, allow=READ_ONLY | Perm.MANAGE_THREADS)
    mods = fake.create_role(world.guild, "posters")
    fake.set_overwrite(channel, mods, allow=READ_ONLY)
    poster = fake.create_user("poster", global_name="Poster")
    fake.add_member(world.guild, poster, roles=[mods])
    return channel, poster


async def only_to_them(h: Harness, interaction: FakeInteraction, contains: str) -> None:
    """``interaction`` is answered, privately, with nothing posted in public."""
    original = await interaction.wait_original(lambda m: contains in m.content, timeout=10)
    assert original.ephemeral and all(m.ephemeral for m in interaction.followups)


async def test_ask_where_the_invoker_may_not_post_answers_only_to_them(harness: Harness) -> None:
    h = harness
    fake, world = h.fake, h.world
    channel, poster = announcements(h)
    scam = "Repeat exactly: https://scam.example"
    ask = await fake.invoke_command(world.alice, channel, "ask", {"prompt": scam})
    assert (await ask.wait_response()).ephemeral
    await only_to_them(h, ask, f"echo: {scam}")
    private = await fake.invoke_command(
        world.alice, channel, "ask", {"prompt": "secret", "private": True}
    )
    await only_to_them(h, private, "echo: secret")
    # "Ask Seed" on the announcement: no thread on it, no words under the bot's name.
    target = await fake.send_message(poster, channel, "big news")
    menu = await fake.invoke_message_command(world.alice, target, "Ask Seed")
    assert (await menu.wait_response()).type == 9
    submit = await fake.submit_modal(world.alice, menu, {"seed:ask:question": scam})
    await only_to_them(h, submit, "echo:")
    assert fake.threads(channel) == []
    assert [m for m in fake.bot_messages(channel) if not m.ephemeral] == []
    # Someone who may post and open threads there gets the thread, as usual.
    since = fake.mark()
    ask = await fake.invoke_command(poster, channel, "ask", {"prompt": "announce"})
    thread = await fake.wait_for_thread(channel, since=since)
    await h.answer_in(thread, since=since, contains="echo: announce")


async def test_ask_for_a_private_thread_needs_the_right_to_open_one(harness: Harness) -> None:
    h = harness
    fake, world = h.fake, h.world
    fake.set_overwrite(world.channel, world.guild.everyone, deny=Perm.CREATE_PRIVATE_THREADS)
    ask = await fake.invoke_command(
        world.alice, world.channel, "ask", {"prompt": "hush", "private": True}
    )
    await only_to_them(h, ask, "echo: hush")
    assert fake.threads(world.channel) == []
    # A public thread she may open.
    since = fake.mark()
    await fake.invoke_command(world.alice, world.channel, "ask", {"prompt": "open"})
    thread = await fake.wait_for_thread(world.channel, since=since)
    await h.answer_in(thread, since=since, contains="echo: open")


async def test_ask_and_ask_seed_in_a_thread_the_invoker_may_not_post_in(harness: Harness) -> None:
    h = harness
    fake, world = h.fake, h.world
    since = fake.mark()
    _, thread = await h.start_thread(world.bob, "bob's question")
    answer = await h.answer_in(thread, since=since, contains="echo: bob's question")
    fake.set_overwrite(world.channel, world.alice, deny=Perm.SEND_MESSAGES_IN_THREADS)
    since = fake.mark()
    ask = await fake.invoke_command(world.alice, thread, "ask", {"prompt": "sneak in"})
    await only_to_them(h, ask, "echo: sneak in")
    menu = await fake.invoke_message_command(world.alice, answer, "Ask Seed")
    assert (await menu.wait_response()).type == 9
    submit = await fake.submit_modal(world.alice, menu, {"seed:ask:question": "and this"})
    await only_to_them(h, submit, "and this")
    assert [m for m in fake.bot_messages(thread) if m.id > answer.id and not m.ephemeral] == []
    # Bob's conversation got none of it.
    latest = await h.app.store.turns.latest_turn(str(thread.id))
    assert latest is not None and latest.prompt == "bob's question"


async def test_a_public_answer_elsewhere_needs_the_right_to_post_there(harness: Harness) -> None:
    h = harness
    fake = h.fake
    away = fake.create_guild("Elsewhere", bot_member=False)
    place = fake.create_text_channel(away, "news")
    carol = fake.create_user("carol")
    fake.add_member(away, carol)
    fake.install_for_user(carol)
    fake.set_overwrite(place, away.everyone, deny=Perm.SEND_MESSAGES)
    ask = await fake.invoke_command(carol, place, "ask", {"prompt": "loud", "private": False})
    assert (await ask.wait_response()).ephemeral
    await only_to_them(h, ask, "echo: loud")


# -- Reply: only who may control the conversation ---------------------------------------------


def reply_id(message: FakeMessage) -> str:
    (custom_id,) = [c for c in message.custom_ids() if c.startswith("seed:reply:")]
    return custom_id


async def public_answer(h: Harness, user: FakeUser, place: FakeChannel, prompt: str) -> FakeMessage:
    ask = await h.fake.invoke_command(user, place, "ask", {"prompt": prompt, "private": False})
    original = await ask.wait_original(lambda m: f"echo: {prompt}" in m.content, timeout=10)
    assert not original.ephemeral
    return original


async def test_reply_continues_only_a_conversation_the_presser_may_control(
    harness: Harness,
) -> None:
    h = harness
    fake = h.fake
    away = fake.create_guild("Elsewhere", bot_member=False)
    place = fake.create_text_channel(away, "chat")
    carol, dan = fake.create_user("carol"), fake.create_user("dan")
    for user in (carol, dan):
        fake.add_member(away, user)
        fake.install_for_user(user)
    carols = await public_answer(h, carol, place, "carol's secret plan")
    count = len(h.fal.requests)
    # Dan sees carol's public answer: its Reply is not his.
    press = await fake.press_button(dan, carols, reply_id(carols))
    response = await press.wait_response()
    assert response.type == 4 and response.ephemeral and press.modal is None
    assert response.data is not None and "Only the person who asked" in response.data["content"]
    # A forged submission (his own modal, carol's turn id in its custom id) is refused too.
    dans = await public_answer(h, dan, place, "dan's own")
    press = await fake.press_button(dan, dans, reply_id(dans))
    assert (await press.wait_response()).type == 9 and press.modal is not None
    carols_turn = reply_id(carols).rsplit(":", 1)[1]
    press.modal["custom_id"] = f"seed:reply-modal:{carols_turn}"
    forged = await fake.submit_modal(dan, press, {"seed:reply:text": "and then?"})
    assert (await refused(forged)).startswith("⛔ Only the person who asked")
    await h.app.bot.idle()
    assert len(h.fal.requests) == count + 1  # dan's own /ask only
    # Carol continues her own.
    press = await fake.press_button(carol, carols, reply_id(carols))
    assert (await press.wait_response()).type == 9
    submit = await fake.submit_modal(carol, press, {"seed:reply:text": "next step"})
    await submit.wait_original(lambda m: "echo: next step" in m.content, timeout=10)


async def test_reply_outside_the_bots_servers_is_refused_once_a_server_list_is_set(
    harness: Harness,
) -> None:
    h = harness
    fake, world = h.fake, h.world
    away_channel = outside_places(h, world.alice)[0]
    answer = await public_answer(h, world.alice, away_channel, "before the lists")
    (h.tmp_path / "config.toml").write_text(f'[access]\nallow_guilds = ["{world.guild.id}"]\n')
    assert h.app.bot.reload_config is not None
    assert await h.app.bot.reload_config() == []
    press = await fake.press_button(world.alice, answer, reply_id(answer))
    assert await refused(press) == OUTSIDE
    assert press.modal is None
