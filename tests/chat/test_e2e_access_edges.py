"""End to end, who may act through the bot (DESIGN §1 "Who may act"): the operator's access
lists hold outside the bot's servers (DMs, group DMs, servers where only a person installed
the app), unless the operator opens those places."""

from __future__ import annotations

from tests.chat.conftest import Harness, HarnessFactory
from tests.fakes.discord import FakeInteraction, StandardWorld
from tests.fakes.discord.models import FakeChannel, FakeUser

OUTSIDE = "⛔ Sorry, this bot is only available in the servers it is enabled in."


def prompts(h: Harness) -> list[str]:
    return [r.input["prompt"] for r in h.fal.requests.values()]


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
        before = len(prompts(h))
        for place in outside_places(h, world.alice):
            ask = await h.fake.invoke_command(world.alice, place, "ask", {"prompt": "free ride"})
            assert await refused(ask) == OUTSIDE, (lists, place)
        # Inside the allowed server the same person is answered: the barrier after which a
        # model call for the refused ones would have shown.
        since = h.fake.mark()
        _, thread = await h.start_thread(world.alice, "inside")
        await h.answer_in(thread, since=since, contains="echo: inside")
        assert prompts(h)[before:] == ["inside"], lists
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
    assert prompts(h) == ["away", "dm", "group"]


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
    assert prompts(h) == []
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
    assert prompts(h) == ["there"]
