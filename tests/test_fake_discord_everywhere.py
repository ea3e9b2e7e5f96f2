"""The fake Discord where a user-installed app reaches: commands synced with installation
types and contexts, interactions from guilds without the bot and from private channels, the
follow-up limit and token expiry, modals from buttons, message context menus, forwards.

Like ``tests/test_fake_discord.py``, each behaviour is observed from the real discord.py
client's side.
"""

from __future__ import annotations

import asyncio
import io
import zlib
from dataclasses import dataclass
from typing import Any

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fakes.discord import (
    ChannelType,
    CommandsSynced,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeInteraction,
    FakeUser,
    InteractionCreated,
    MessageCreated,
    Perm,
    StandardWorld,
    UserFile,
    run_client,
)

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02\x00\x00\x00"
    + zlib.compress(b"forwarded pixels")
)
EVERYWHERE = {"guilds": True, "dms": True, "private_channels": True}


def new_bot() -> commands.Bot:
    intents = discord.Intents.default()
    intents.message_content = True
    return commands.Bot(
        command_prefix=commands.when_mentioned, guild_ready_timeout=0, intents=intents
    )


@dataclass
class Elsewhere:
    """A guild that did not add the bot, with carol (who installed the app) in it."""

    guild: FakeGuild
    channel: FakeChannel
    carol: FakeUser


def elsewhere(fake: FakeDiscord, *, install: bool = True) -> Elsewhere:
    guild = fake.create_guild("Elsewhere", bot_member=False)
    channel = fake.create_text_channel(guild, "chat")
    carol = fake.create_user("carol", global_name="Carol")
    fake.add_member(guild, carol)
    if install:
        fake.install_for_user(carol)
    return Elsewhere(guild=guild, channel=channel, carol=carol)


Seen = asyncio.Queue[dict[str, Any]]


def describe(interaction: discord.Interaction) -> dict[str, Any]:
    """What discord.py made of an interaction."""
    return {
        "context": interaction.context,
        "user_integration": interaction.is_user_integration(),
        "guild_integration": interaction.is_guild_integration(),
        "guild_id": interaction.guild_id,
        "channel": interaction.channel,
        "app_permissions": interaction.app_permissions,
        "permissions": interaction.permissions,
    }


def everywhere_bot(seen: Seen) -> commands.Bot:
    """``/ask`` for both installation types in every context, a guild-only ``/settings``,
    and the message command "Ask Seed"."""
    bot = new_bot()

    @bot.tree.command(description="Ask Seed")
    @app_commands.allowed_installs(guilds=True, users=True)
    @app_commands.allowed_contexts(**EVERYWHERE)
    async def ask(interaction: discord.Interaction, prompt: str) -> None:
        await seen.put({**describe(interaction), "prompt": prompt})
        await interaction.response.send_message(f"you asked: {prompt}")

    @bot.tree.command(description="Server settings")
    @app_commands.guild_only()
    async def settings(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("settings", ephemeral=True)

    @bot.tree.context_menu(name="Ask Seed")
    @app_commands.allowed_installs(guilds=True, users=True)
    @app_commands.allowed_contexts(**EVERYWHERE)
    async def ask_seed(interaction: discord.Interaction, message: discord.Message) -> None:
        await seen.put({**describe(interaction), "message": message})
        await interaction.response.send_message(f"about: {message.content}", ephemeral=True)

    return bot


def listening_bot(seen: Seen) -> tuple[commands.Bot, list[discord.Message]]:
    """``everywhere_bot`` that also keeps every message it hears over the gateway."""
    bot = everywhere_bot(seen)
    heard: list[discord.Message] = []

    @bot.event
    async def on_message(message: discord.Message) -> None:
        heard.append(message)

    return bot, heard


# ---------------------------------------------------------------------------- syncing


async def test_synced_commands_keep_installation_types_and_contexts(
    discord_world: StandardWorld,
) -> None:
    fake = discord_world.fake
    bot = everywhere_bot(asyncio.Queue())
    async with run_client(bot, fake):
        await bot.tree.sync()
        synced = (await fake.wait_for_event(CommandsSynced)).commands
        by_name = {(c["name"], c["type"]): c for c in synced}
        assert by_name[("ask", 1)]["integration_types"] == [0, 1]
        assert by_name[("ask", 1)]["contexts"] == [0, 1, 2]
        assert by_name[("settings", 1)]["contexts"] == [0]
        assert by_name[("settings", 1)]["integration_types"] == [0]
        menu = by_name[("Ask Seed", 3)]
        assert menu["description"] == "" and menu["integration_types"] == [0, 1]
        # What Discord answers on reading them back. (discord.py 2.7's ``AppCommand`` parses
        # these arrays with ``ArrayFlags``, which assumes values start at 1: [0, 1] reads as
        # guild only. Read the raw payloads to check them.)
        fetched = {c["name"]: c for c in await bot.http.get_global_commands(fake.application_id)}
        assert fetched["ask"]["integration_types"] == [0, 1]
        assert fetched["ask"]["contexts"] == [0, 1, 2]
        assert fetched["Ask Seed"]["type"] == 3
        assert {c.name for c in await bot.tree.fetch_commands()} == {"ask", "settings", "Ask Seed"}
        # The portal's Installation contexts, as the application info shows them.
        app = await bot.application_info()
        assert app.user_integration_config is not None
        user_params = app.user_integration_config.oauth2_install_params
        assert user_params is not None and user_params.scopes == ["applications.commands"]
        guild_config = app.guild_integration_config
        assert guild_config is not None and guild_config.oauth2_install_params is not None
        assert "bot" in guild_config.oauth2_install_params.scopes
        fake.set_installation_contexts(user=False)
        assert (await bot.application_info()).user_integration_config is None
        with pytest.raises(AssertionError, match="User Install is not enabled"):
            fake.install_for_user(discord_world.alice)
        # Values Discord does not know are refused like Discord does.
        too_long = {"name": "A" * 33, "type": 3}
        with pytest.raises(discord.HTTPException) as refused_name:
            await bot.http.bulk_upsert_global_commands(fake.application_id, [too_long])
        assert refused_name.value.code == 50035
        for bad in ({"contexts": [3]}, {"integration_types": [2]}):
            with pytest.raises(discord.HTTPException) as refused:
                await bot.http.bulk_upsert_global_commands(
                    fake.application_id, [{"name": "x", "description": "y", **bad}]
                )
            assert refused.value.status == 400 and refused.value.code == 50035
            assert next(iter(bad)) in refused.value.text


async def test_commands_are_offered_only_where_synced_and_installed(
    discord_world: StandardWorld,
) -> None:
    fake, world = discord_world.fake, discord_world
    away = elsewhere(fake, install=False)
    dm = fake.create_private_channel(world.alice, world.bob)
    bot = everywhere_bot(asyncio.Queue())
    async with run_client(bot, fake):
        await bot.tree.sync()
        # No user install yet: nothing authorizes /ask outside the bot's guild and DM.
        with pytest.raises(AssertionError, match="not available to"):
            await fake.invoke_command(away.carol, away.channel, "ask", {"prompt": "hi"})
        with pytest.raises(AssertionError, match="not available to"):
            await fake.invoke_command(world.alice, dm, "ask", {"prompt": "hi"})
        fake.install_for_user(away.carol)
        fake.install_for_user(world.alice)
        for user, channel in ((away.carol, away.channel), (world.alice, dm)):
            offered = await fake.invoke_command(user, channel, "ask", {"prompt": "hi"})
            assert (await offered.wait_response()).type == 4
        # A guild-only command (contexts [0], guild install) stays in the bot's guilds.
        with pytest.raises(AssertionError, match="not available in private channels"):
            await fake.invoke_command(world.alice, dm, "settings")
        with pytest.raises(AssertionError, match="not available in DMs with the bot"):
            await fake.invoke_command(world.alice, fake.dm_channel(world.alice), "settings")
        with pytest.raises(AssertionError, match="not available to"):
            await fake.invoke_command(away.carol, away.channel, "settings")
        await (await fake.invoke_command(world.alice, world.channel, "settings")).wait_response()
        # A context menu command is not a slash command, and the reverse.
        with pytest.raises(AssertionError, match="no slash command"):
            await fake.invoke_command(world.alice, world.channel, "Ask Seed")
        target = await fake.send_message(world.alice, world.channel, "look")
        with pytest.raises(AssertionError, match="no message command ask"):
            await fake.invoke_message_command(world.alice, target, "ask")
        fake.uninstall_for_user(away.carol)
        with pytest.raises(AssertionError, match="not available to"):
            await fake.invoke_command(away.carol, away.channel, "ask", {"prompt": "hi"})


# ---------------------------------------------------------------------------- where the bot is not


async def test_interaction_from_a_guild_without_the_bot(discord_world: StandardWorld) -> None:
    fake = discord_world.fake
    away = elsewhere(fake)
    seen: Seen = asyncio.Queue()
    bot, heard = listening_bot(seen)
    async with run_client(bot, fake):
        await bot.tree.sync()
        interaction = await fake.invoke_command(away.carol, away.channel, "ask", {"prompt": "hi"})
        got = await asyncio.wait_for(seen.get(), 5)
        assert got["context"].guild and not got["context"].private_channel
        assert got["user_integration"] and not got["guild_integration"]
        assert got["guild_id"] == away.guild.id
        assert isinstance(got["channel"], discord.TextChannel)
        assert got["channel"].id == away.channel.id
        assert interaction.payload["authorizing_integration_owners"] == {"1": str(away.carol.id)}
        assert interaction.context == 0 and interaction.user_install_only
        assert interaction.authorizing_integration_owners == {"1": str(away.carol.id)}
        # Discord's app_permissions there: what @everyone may do, plus the response ones.
        perms = got["app_permissions"]
        assert perms.attach_files and perms.embed_links and perms.send_messages
        assert not perms.manage_messages
        assert got["permissions"].use_external_apps
        original = await interaction.wait_original()
        assert original.content == "you asked: hi" and not original.ephemeral
        assert original.channel_id == away.channel.id
        # The bot itself cannot read or post there: only through the interaction.
        with pytest.raises(discord.Forbidden) as forbidden:
            await bot.http.send_message(
                away.channel.id, params=discord.http.handle_message_parameters(content="x")
            )
        assert forbidden.value.code == 50001
        with pytest.raises(discord.Forbidden) as fetching:
            await bot.fetch_channel(away.channel.id)
        assert fetching.value.code == 50001
        with pytest.raises(discord.Forbidden):
            await bot.http.get_message(away.channel.id, original.id)
        with pytest.raises(discord.Forbidden) as guild_route:
            await bot.fetch_guild(away.guild.id)
        assert guild_route.value.code == 50001
        # ... and it hears nothing from that guild over the gateway.
        await fake.send_message(away.carol, away.channel, f"{fake.bot_user.mention} hello?")
        later = fake.create_text_channel(away.guild, "later")
        fake.create_role(away.guild, "role")
        await fake.sync_gateway()
        assert heard == [] and bot.get_channel(later.id) is None
        frames = [frame for session in fake.sessions for _, frame in session.buffer]
        assert not any(str(later.id) in frame for frame in frames)


async def test_private_channels_dm_and_group_dm(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    carol = fake.create_user("carol")
    fake.install_for_user(world.alice)
    dm = fake.create_private_channel(world.alice, world.bob)
    group = fake.create_private_channel(world.alice, world.bob, carol, name="trio")
    assert dm.type == ChannelType.DM and group.type == ChannelType.GROUP_DM
    seen: Seen = asyncio.Queue()
    bot, heard = listening_bot(seen)
    async with run_client(bot, fake):
        await bot.tree.sync()
        in_dm = await fake.invoke_command(world.alice, dm, "ask", {"prompt": "in a dm"})
        got = await asyncio.wait_for(seen.get(), 5)
        assert got["context"].private_channel and not got["context"].dm_channel
        assert got["user_integration"] and got["guild_id"] is None
        assert isinstance(got["channel"], discord.DMChannel)
        assert got["channel"].recipient is not None and got["channel"].recipient.id == world.bob.id
        assert got["app_permissions"] == discord.Permissions(
            attach_files=True, embed_links=True, mention_everyone=True
        )
        assert (await in_dm.wait_original()).content == "you asked: in a dm"
        in_group = await fake.invoke_command(world.alice, group, "ask", {"prompt": "in a group"})
        got = await asyncio.wait_for(seen.get(), 5)
        assert isinstance(got["channel"], discord.GroupChannel)
        assert got["channel"].name == "trio"
        assert {u.id for u in got["channel"].recipients} == {world.bob.id, carol.id}
        assert (await in_group.wait_original()).content == "you asked: in a group"
        # The bot's own DM is context 1, authorized by both installations.
        bot_dm = fake.dm_channel(world.alice)
        direct = await fake.invoke_command(world.alice, bot_dm, "ask", {"prompt": "to you"})
        got = await asyncio.wait_for(seen.get(), 5)
        assert got["context"].dm_channel and got["user_integration"]
        assert direct.payload["authorizing_integration_owners"] == {
            "0": "0",
            "1": str(world.alice.id),
        }
        assert not direct.user_install_only
        await direct.wait_response()
        # No REST access and no gateway events from channels the bot is not in.
        for channel in (dm, group):
            with pytest.raises(discord.Forbidden) as forbidden:
                await bot.fetch_channel(channel.id)
            assert forbidden.value.code == 50001
            await fake.send_message(world.bob, channel, "between us")
        with pytest.raises(AssertionError, match="cannot see"):
            await fake.invoke_command(carol, dm, "ask", {"prompt": "not mine"})
        await fake.sync_gateway()
        assert [m for m in heard if m.channel.id in (dm.id, group.id)] == []
        assert [m.channel.id for m in heard] == [bot_dm.id]  # its answer in its own DM


async def test_user_installs_answer_ephemerally_without_use_external_apps(
    discord_world: StandardWorld,
) -> None:
    fake = discord_world.fake
    away = elsewhere(fake)
    fake.set_overwrite(away.channel, away.guild.everyone, deny=Perm.USE_EXTERNAL_APPS)
    seen: Seen = asyncio.Queue()
    bot = everywhere_bot(seen)
    async with run_client(bot, fake):
        await bot.tree.sync()
        interaction = await fake.invoke_command(away.carol, away.channel, "ask", {"prompt": "p"})
        got = await asyncio.wait_for(seen.get(), 5)
        assert not got["permissions"].use_external_apps
        response = await interaction.wait_response()
        # The bot asked for a public answer; Discord makes it ephemeral.
        assert response.type == 4 and response.ephemeral and interaction.forced_ephemeral
        assert fake.messages_in(away.channel) == []
        # In a guild that added the bot the app is not external: its answers stay public.
        world = discord_world
        fake.set_overwrite(world.channel, world.guild.everyone, deny=Perm.USE_EXTERNAL_APPS)
        fake.install_for_user(world.alice)
        here = await fake.invoke_command(world.alice, world.channel, "ask", {"prompt": "p"})
        assert not (await here.wait_response()).ephemeral and not here.forced_ephemeral


# ---------------------------------------------------------------------------- follow-ups, expiry


def followup_bot(errors: asyncio.Queue[discord.HTTPException], go: asyncio.Event) -> commands.Bot:
    bot = new_bot()

    @bot.tree.command(description="Six follow-ups")
    @app_commands.allowed_installs(guilds=True, users=True)
    @app_commands.allowed_contexts(**EVERYWHERE)
    async def chatty(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True)
        try:
            for n in range(1, 7):
                await interaction.followup.send(f"part {n}", ephemeral=True)
        except discord.HTTPException as exc:
            await errors.put(exc)

    @bot.tree.command(description="Slow")
    @app_commands.allowed_installs(guilds=True, users=True)
    @app_commands.allowed_contexts(**EVERYWHERE)
    async def slow(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        await go.wait()
        for attempt in (
            interaction.edit_original_response(content="late"),
            interaction.followup.send("later"),
        ):
            try:
                await attempt
            except discord.HTTPException as exc:
                await errors.put(exc)

    return bot


async def test_five_followups_for_user_installs_where_the_bot_is_not(
    discord_world: StandardWorld,
) -> None:
    fake, world = discord_world.fake, discord_world
    away = elsewhere(fake)
    errors: asyncio.Queue[discord.HTTPException] = asyncio.Queue()
    bot = followup_bot(errors, asyncio.Event())
    async with run_client(bot, fake):
        await bot.tree.sync()
        limited = await fake.invoke_command(away.carol, away.channel, "chatty")
        error = await asyncio.wait_for(errors.get(), 5)
        assert error.status == 400 and error.code == 40094
        assert "maximum number of follow up messages" in error.text
        assert [m.content for m in limited.followups] == [f"part {n}" for n in range(1, 6)]
        # A guild install (the bot's own server) has no such limit.
        free = await fake.invoke_command(world.alice, world.channel, "chatty")
        await free.wait_followup(6)
        assert errors.empty()


async def test_interaction_token_expires_after_15_minutes(discord_world: StandardWorld) -> None:
    fake = discord_world.fake
    away = elsewhere(fake)
    errors: asyncio.Queue[discord.HTTPException] = asyncio.Queue()
    go = asyncio.Event()
    bot = followup_bot(errors, go)
    async with run_client(bot, fake):
        await bot.tree.sync()
        interaction = await fake.invoke_command(away.carol, away.channel, "slow")
        assert (await interaction.wait_response()).type == 5
        fake.expire_interaction(interaction)
        go.set()
        for _ in range(2):
            error = await asyncio.wait_for(errors.get(), 5)
            assert error.status == 401 and error.code == 50027
        original = interaction.original_message
        assert original is not None and original.loading


# ---------------------------------------------------------------------------- modals


class ReplyModal(discord.ui.Modal, title="Reply"):
    text: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="Your reply", custom_id="reply:text"
    )

    def __init__(self, submitted: Seen) -> None:
        super().__init__()
        self.submitted = submitted

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.submitted.put({**describe(interaction), "text": self.text.value})
        await interaction.response.send_message(f"got {self.text.value}", ephemeral=True)


class ReplyView(discord.ui.View):
    def __init__(self, submitted: Seen) -> None:
        super().__init__(timeout=None)
        self.submitted = submitted

    @discord.ui.button(label="Reply", custom_id="seed:reply")
    async def reply(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        await interaction.response.send_modal(ReplyModal(self.submitted))


async def test_button_opens_a_modal_where_the_bot_is_not(discord_world: StandardWorld) -> None:
    fake = discord_world.fake
    away = elsewhere(fake)
    submitted: Seen = asyncio.Queue()
    bot = new_bot()

    @bot.tree.command(description="Answer with a Reply button")
    @app_commands.allowed_installs(guilds=True, users=True)
    @app_commands.allowed_contexts(**EVERYWHERE)
    async def ask(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("answer", view=ReplyView(submitted), ephemeral=True)

    async with run_client(bot, fake):
        await bot.tree.sync()
        command = await fake.invoke_command(away.carol, away.channel, "ask")
        answer = await command.wait_original()
        assert answer.ephemeral and answer.custom_ids() == ["seed:reply"]
        press = await fake.press_button(away.carol, answer, "seed:reply")
        opened = await press.wait_response()
        assert opened.type == 9 and press.modal is not None and press.modal["title"] == "Reply"
        # The client does not submit a required input left empty (nor too long a value).
        with pytest.raises(AssertionError, match="required"):
            await fake.submit_modal(away.carol, press, {"reply:text": ""})
        with pytest.raises(AssertionError, match="characters"):
            await fake.submit_modal(away.carol, press, {"reply:text": "x" * 4001})
        submit = await fake.submit_modal(away.carol, press, {"reply:text": "and then?"})
        got = await asyncio.wait_for(submitted.get(), 5)
        assert got["text"] == "and then?" and got["user_integration"]
        assert submit.type == 5 and submit.payload["authorizing_integration_owners"] == {
            "1": str(away.carol.id)
        }
        assert press.payload["authorizing_integration_owners"] == {"1": str(away.carol.id)}
        reply = await submit.wait_original()
        assert reply.content == "got and then?" and reply.ephemeral
        assert reply.interaction is not None and reply.interaction.triggering is not None


# ---------------------------------------------------------------------------- message context menus


async def test_message_context_menu_in_the_bots_guild_and_elsewhere(
    discord_world: StandardWorld,
) -> None:
    fake, world = discord_world.fake, discord_world
    away = elsewhere(fake)
    seen: Seen = asyncio.Queue()
    bot = everywhere_bot(seen)
    async with run_client(bot, fake):
        await bot.tree.sync()
        here = await fake.send_message(
            world.alice, world.channel, "what is this?", files=[UserFile("cat.png", PNG)]
        )
        interaction = await fake.invoke_message_command(world.bob, here, "Ask Seed")
        got = await asyncio.wait_for(seen.get(), 5)
        message = got["message"]
        assert isinstance(message, discord.Message) and message.id == here.id
        assert message.content == "what is this?" and message.author.id == world.alice.id
        assert await message.attachments[0].read() == PNG
        assert got["guild_integration"] and not got["user_integration"]
        assert interaction.payload["data"]["type"] == 3
        assert interaction.payload["data"]["target_id"] == str(here.id)
        response = await interaction.wait_original()
        assert response.content == "about: what is this?"
        assert response.interaction is not None and response.interaction.name == "Ask Seed"
        # In a guild without the bot, on a message the bot never received.
        there = await fake.send_message(away.carol, away.channel, "over here")
        elsewhere_menu = await fake.invoke_message_command(away.carol, there, "Ask Seed")
        await elsewhere_menu.wait_response()
        got = await asyncio.wait_for(seen.get(), 5)
        assert got["user_integration"] and got["message"].content == "over here"
        assert got["message"].channel.id == away.channel.id


async def test_ask_seed_modal_then_answer_through_the_interaction(
    discord_world: StandardWorld,
) -> None:
    fake = discord_world.fake
    away = elsewhere(fake)
    questions: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    bot = new_bot()

    class Question(discord.ui.Modal, title="Ask Seed"):
        question: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label="Question", custom_id="ask:question", required=False
        )

        def __init__(self, target: discord.Message) -> None:
            super().__init__()
            self.target = target

        async def on_submit(self, interaction: discord.Interaction) -> None:
            await questions.put((self.target.content, self.question.value))
            await interaction.response.defer(ephemeral=True, thinking=True)
            await interaction.edit_original_response(content="the answer, in short")
            await interaction.followup.send(
                "the long answer",
                file=discord.File(io.BytesIO(b"# long"), "answer.md"),
                ephemeral=True,
            )

    @bot.tree.context_menu(name="Ask Seed")
    @app_commands.allowed_installs(guilds=True, users=True)
    @app_commands.allowed_contexts(**EVERYWHERE)
    async def ask_seed(interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.response.send_modal(Question(message))

    async with run_client(bot, fake):
        await bot.tree.sync()
        target = await fake.send_message(away.carol, away.channel, "explain this")
        menu = await fake.invoke_message_command(away.carol, target, "Ask Seed")
        assert (await menu.wait_response()).type == 9
        # An optional question may be left empty.
        submit = await fake.submit_modal(away.carol, menu, {})
        assert await asyncio.wait_for(questions.get(), 5) == ("explain this", "")
        original = await submit.wait_original()
        assert original.content == "the answer, in short" and original.ephemeral
        followup = await submit.wait_followup(1)
        assert followup.files == [("answer.md", b"# long")] and followup.ephemeral
        assert submit.user_install_only and fake.messages_in(away.channel) == [target]


# ---------------------------------------------------------------------------- forwards


async def test_forwarded_messages_over_gateway_rest_and_context_menu(
    discord_world: StandardWorld,
) -> None:
    fake, world = discord_world.fake, discord_world
    other = fake.create_text_channel(world.guild, "other")
    away = elsewhere(fake)
    seen: Seen = asyncio.Queue()
    bot = everywhere_bot(seen)
    received: asyncio.Queue[discord.Message] = asyncio.Queue()

    @bot.event
    async def on_message(message: discord.Message) -> None:
        await received.put(message)

    async with run_client(bot, fake):
        await bot.tree.sync()
        original = await fake.send_message(
            world.alice, world.channel, "look at this", files=[UserFile("cat.png", PNG)]
        )
        await asyncio.wait_for(received.get(), 5)
        mark = fake.mark()
        forward = await fake.forward(original, other, world.bob, comment="thoughts?")
        assert forward.is_forward and forward.content == "" and forward.mention_user_ids == ()
        message = await asyncio.wait_for(received.get(), 5)
        assert message.id == forward.id and message.author.id == world.bob.id
        assert message.flags.forwarded and message.content == ""
        assert message.reference is not None
        assert message.reference.type is discord.MessageReferenceType.forward
        assert message.reference.message_id == original.id
        assert message.reference.channel_id == world.channel.id
        (snapshot,) = message.message_snapshots
        assert snapshot.content == "look at this"
        sent_at = discord.utils.snowflake_time(original.id)
        assert abs((snapshot.created_at - sent_at).total_seconds()) < 1
        assert await snapshot.attachments[0].read() == PNG
        comment = await asyncio.wait_for(received.get(), 5)
        assert comment.content == "thoughts?"
        # A reply to the forward carries it, snapshots and all, as its referenced message.
        await fake.send_message(
            world.alice, other, f"{fake.bot_user.mention} what is it?", reply_to=forward
        )
        reply = await asyncio.wait_for(received.get(), 5)
        assert reply.reference is not None
        referenced = reply.reference.resolved
        assert isinstance(referenced, discord.Message) and referenced.id == forward.id
        assert referenced.message_snapshots[0].content == "look at this"
        created = [e for e in fake.events_of(MessageCreated, since=mark) if not e.by_bot]
        assert [e.message.id for e in created][:2] == [forward.id, comment.id]
        # Over REST, with the attachment URL signed afresh.
        fake.advance_time(25 * 3600)
        channel = bot.get_channel(other.id)
        assert isinstance(channel, discord.TextChannel)
        fetched = await channel.fetch_message(forward.id)
        assert fetched.message_snapshots[0].content == "look at this"
        assert await fetched.message_snapshots[0].attachments[0].read() == PNG
        with pytest.raises(discord.NotFound):  # the URL the gateway gave 25 hours ago
            await snapshot.attachments[0].read()
        # An edit of the original does not change what was forwarded.
        await fake.edit_message(original, "edited")
        history = [m async for m in channel.history(limit=5)]
        assert [m.message_snapshots[0].content for m in history if m.id == forward.id] == [
            "look at this"
        ]
        # As the target of "Ask Seed" in a guild without the bot.
        fake.add_member(world.guild, away.carol)
        away_forward = await fake.forward(original, away.channel, away.carol)
        await (
            await fake.invoke_message_command(away.carol, away_forward, "Ask Seed")
        ).wait_response()
        got = await asyncio.wait_for(seen.get(), 5)
        target = got["message"]
        assert target.message_snapshots[0].content == "edited"  # as it was when forwarded
        assert await target.message_snapshots[0].attachments[0].read() == PNG
        with pytest.raises(AssertionError, match="cannot see"):
            await fake.forward(away_forward, other, world.alice)
        # Into a thread and into the bot's DM, like any message.
        thread = await fake.create_thread(world.alice, world.channel, "bound")
        await fake.add_thread_member(thread, fake.bot_user)
        await fake.sync_gateway()
        while not received.empty():
            received.get_nowait()
        for where in (thread, fake.dm_channel(world.alice)):
            await fake.forward(original, where, world.alice)
            arrived = await asyncio.wait_for(received.get(), 5)
            assert arrived.channel.id == where.id
            assert arrived.message_snapshots[0].content == "edited"


async def test_interaction_created_events_record_the_new_kinds(
    discord_world: StandardWorld,
) -> None:
    fake, world = discord_world.fake, discord_world
    bot = everywhere_bot(asyncio.Queue())
    async with run_client(bot, fake):
        await bot.tree.sync()
        target = await fake.send_message(world.alice, world.channel, "hello")
        menu: FakeInteraction = await fake.invoke_message_command(world.alice, target, "Ask Seed")
        event = await fake.wait_for_event(InteractionCreated, lambda e: e.interaction_id == menu.id)
        assert event.name == "Ask Seed" and event.type == 2
        await menu.wait_response()
