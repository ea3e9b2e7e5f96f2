"""Access lists end to end: who is refused where, what they are told, and that a refused
message never reaches the model."""

from __future__ import annotations

from tests.chat.conftest import Harness, HarnessFactory
from tests.fakes.discord import MessageCreated, StandardWorld
from tests.fakes.discord.models import FakeChannel, FakeMessage, FakeUser, Perm


async def answered(
    h: Harness, author: FakeUser, text: str, channel: FakeChannel | None = None
) -> FakeChannel:
    """``author`` starts a conversation (in ``#general`` by default) and gets the echo: also
    the barrier after which anything an earlier refused message would have caused has
    happened (its handling needs no model call, this one waits for one)."""
    channel = channel or h.world.channel
    since = h.fake.mark()
    message = await h.mention(author, text, channel=channel)
    thread = await h.fake.wait_for_thread(channel, from_message=message, since=since)
    await h.answer_in(thread, since=since, contains=f"echo: {text}")
    return thread


async def refused_with_notice(
    h: Harness, author: FakeUser, channel: FakeChannel, text: str, reason: str
) -> FakeMessage:
    since = h.fake.mark()
    message = await h.mention(author, text, channel=channel)
    notice = await h.fake.wait_for_message(channel, since=since, timeout=10)
    assert notice.content == f"⛔ Sorry, {reason}.", notice.content
    assert notice.referenced_message_id == message.id
    assert notice.allowed_mentions is not None and notice.allowed_mentions.get("parse") == []
    return notice


async def test_denied_user_gets_one_notice_and_no_model_call(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    h = await make_harness(SEED_BOT_ACCESS__DENY_USERS=str(discord_world.alice.id))
    await refused_with_notice(
        h, h.world.alice, h.world.channel, "let me in", "you are not allowed to use this bot"
    )
    await answered(h, h.world.bob, "bob may")
    assert h.prompts() == ["bob may"]
    # one notice in the channel, one thread (bob's), nothing else
    assert len(h.fake.bot_messages(h.world.channel)) == 1
    assert len(h.fake.threads(h.world.channel)) == 1


async def test_denied_user_is_refused_inside_an_existing_thread_too(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    h = await make_harness(SEED_BOT_ACCESS__DENY_USERS=str(discord_world.alice.id))
    thread = await answered(h, h.world.bob, "bob opens")
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "alice butts in")
    notice = await h.fake.wait_for_message(thread, since=since, timeout=10)
    assert notice.content == "⛔ Sorry, you are not allowed to use this bot."
    since = h.fake.mark()
    await h.fake.send_message(h.world.bob, thread, "bob again")
    await h.answer_in(thread, since=since, contains="echo: bob again")
    assert h.prompts() == ["bob opens", "bob again"]
    # alice's message never became part of the conversation
    assert [m["content"] for m in list(h.fal.requests.values())[-1].input["messages"]] == [
        "bob opens",
        "echo: bob opens",
    ]


async def test_allow_users_refuses_everyone_else(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    h = await make_harness(SEED_BOT_ACCESS__ALLOW_USERS=str(discord_world.bob.id))
    await refused_with_notice(
        h,
        h.world.alice,
        h.world.channel,
        "me too?",
        "you are not on this bot's list of allowed users",
    )
    await answered(h, h.world.bob, "only bob")
    assert h.prompts() == ["only bob"]


async def test_deny_roles_refuses_a_member_holding_the_role(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    fake = discord_world.fake
    banned = fake.create_role(discord_world.guild, "banned")
    carol = fake.create_user("carol", global_name="Carol")
    fake.add_member(discord_world.guild, carol, roles=[banned])
    h = await make_harness(SEED_BOT_ACCESS__DENY_ROLES=str(banned.id))
    await refused_with_notice(
        h, carol, h.world.channel, "hi", "one of your roles may not use this bot"
    )
    thread = await answered(h, h.world.alice, "no role, fine")
    # inside someone else's conversation too: refused, and not told again the same day
    await h.fake.send_message(carol, thread, "me in here?")
    since = h.fake.mark()
    await h.fake.send_message(h.world.alice, thread, "still me")
    await h.answer_in(thread, since=since, contains="echo:")
    assert h.prompts() == ["no role, fine", "still me"]
    assert not [m for m in h.fake.bot_messages(thread) if "Sorry" in m.content]


async def test_allow_roles_limits_the_bot_to_members_with_the_role(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    fake = discord_world.fake
    vip = fake.create_role(discord_world.guild, "vip")
    other = fake.create_role(discord_world.guild, "other")
    carol = fake.create_user("carol", global_name="Carol")
    fake.add_member(discord_world.guild, carol, roles=[vip])
    fake.set_member_roles(discord_world.guild, discord_world.bob, [other])
    h = await make_harness(SEED_BOT_ACCESS__ALLOW_ROLES=str(vip.id))
    await refused_with_notice(
        h, h.world.bob, h.world.channel, "please", "this bot is limited to certain roles"
    )
    await refused_with_notice(
        h, h.world.alice, h.world.channel, "me?", "this bot is limited to certain roles"
    )
    await answered(h, carol, "vip here")
    assert h.prompts() == ["vip here"]


async def test_denied_category_covers_its_channels_and_their_threads(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    fake = discord_world.fake
    guild = discord_world.guild
    closed = fake.create_category(guild, "closed")
    inside = fake.create_text_channel(guild, "inside", category=closed)
    h = await make_harness(SEED_BOT_ACCESS__DENY_CHANNELS=str(closed.id))
    reason = "this bot is not enabled in this channel"
    await refused_with_notice(h, h.world.alice, inside, "in the category", reason)
    loose = await fake.create_thread(h.world.alice, inside, "a thread in the category")
    await refused_with_notice(h, h.world.bob, loose, "in its thread", reason)
    await answered(h, h.world.alice, "outside is fine")
    assert h.prompts() == ["outside is fine"]
    assert fake.threads(inside) == [loose]


async def test_denied_channel_covers_threads_inside_it(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    fake = discord_world.fake
    secret = fake.create_text_channel(discord_world.guild, "secret")
    h = await make_harness(SEED_BOT_ACCESS__DENY_CHANNELS=str(secret.id))
    reason = "this bot is not enabled in this channel"
    await refused_with_notice(h, h.world.alice, secret, "here?", reason)
    thread = await fake.create_thread(h.world.bob, secret, "side talk")
    await refused_with_notice(h, h.world.bob, thread, "in the thread?", reason)
    await answered(h, h.world.bob, "general works")
    assert h.prompts() == ["general works"]


async def test_allow_and_deny_guilds(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    fake = discord_world.fake
    other = fake.create_guild("Other Server")
    lobby = fake.create_text_channel(other, "lobby")
    fake.add_member(other, discord_world.alice)
    h = await make_harness(
        SEED_BOT_ACCESS__ALLOW_GUILDS=f"{discord_world.guild.id},{other.id}",
        SEED_BOT_ACCESS__DENY_GUILDS=str(other.id),
    )
    await refused_with_notice(
        h, h.world.alice, lobby, "over here", "this bot is not enabled in this server"
    )
    await answered(h, h.world.alice, "home server")
    assert h.prompts() == ["home server"]


async def test_guild_not_on_the_allow_list_is_refused(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    fake = discord_world.fake
    other = fake.create_guild("Other Server")
    lobby = fake.create_text_channel(other, "lobby")
    fake.add_member(other, discord_world.alice)
    h = await make_harness(SEED_BOT_ACCESS__ALLOW_GUILDS=str(other.id))
    await refused_with_notice(
        h, h.world.alice, h.world.channel, "here?", "this bot is not enabled in this server"
    )
    await answered(h, h.world.alice, "allowed server", channel=lobby)
    assert h.prompts() == ["allowed server"]


async def test_quiet_denial_says_nothing(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    h = await make_harness(
        SEED_BOT_ACCESS__DENY_USERS=str(discord_world.alice.id),
        SEED_BOT_ACCESS__DENIED_REPLY="quiet",
    )
    since = h.fake.mark()
    await h.mention(h.world.alice, "hello?")
    # barrier: bob's message, sent later, is answered, so alice's has been handled
    await answered(h, h.world.bob, "after alice")
    assert h.prompts() == ["after alice"]
    assert h.fake.bot_messages(h.world.channel) == []
    assert len(h.fake.threads(h.world.channel)) == 1
    # nothing at all went to alice's message: no reply, no reaction, no typing in #general
    created = [e for e in h.fake.events_of(MessageCreated, since=since) if e.by_bot]
    assert all(e.message.channel_id != h.world.channel.id for e in created)


async def test_denied_user_slash_ask_is_refused_ephemerally(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    h = await make_harness(SEED_BOT_ACCESS__DENY_USERS=str(discord_world.alice.id))
    interaction = await h.fake.invoke_command(
        h.world.alice, h.world.channel, "ask", {"prompt": "sneak in"}
    )
    response = await interaction.wait_response()
    assert response.ephemeral and response.message is not None
    assert response.message.content == "⛔ Sorry, you are not allowed to use this bot."
    since = h.fake.mark()
    interaction = await h.fake.invoke_command(
        h.world.bob, h.world.channel, "ask", {"prompt": "bob asks"}
    )
    await interaction.wait_response()
    # barrier: bob's /ask, invoked later, is answered
    await h.fake.wait_for_message(None, contains="echo: bob asks", since=since, timeout=10)
    assert h.prompts() == ["bob asks"]
    assert len(h.fake.threads(h.world.channel)) == 1


async def test_denied_user_cannot_change_settings_with_slash_commands(
    discord_world: StandardWorld, make_harness: HarnessFactory
) -> None:
    fake = discord_world.fake
    mods = fake.create_role(discord_world.guild, "mods", permissions=Perm.MANAGE_CHANNELS)
    fake.set_member_roles(discord_world.guild, discord_world.alice, [mods])
    h = await make_harness(SEED_BOT_ACCESS__DENY_USERS=str(discord_world.alice.id))
    interaction = await h.fake.invoke_command(
        h.world.alice, h.world.channel, "thinking", {"mode": "disabled"}
    )
    response = await interaction.wait_response()
    assert response.ephemeral and response.message is not None
    assert response.message.content.startswith("⛔"), response.message.content
    # nothing changed: the channel's next conversation runs on the defaults
    since = h.fake.mark()
    _, thread = await h.start_thread(h.world.bob, "defaults?")
    await h.answer_in(thread, since=since, contains="echo: defaults?")
    assert "thinking" not in list(h.fal.requests.values())[-1].input
