"""The fake Discord, exercised by the real discord.py client.

These tests are the fake's contract: whatever the bot's end-to-end tests rely on is shown here
to work with discord.py itself (connecting, messages, threads, files, slash commands, buttons,
intents, resume, rate limits, sharding).
"""

from __future__ import annotations

import asyncio
import io
import re
import time
import zlib
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from bot.chat.endpoints import current_discord_endpoints, point_discord_at
from tests.fakes.discord import (
    CdnFetched,
    CommandsSynced,
    FakeDiscord,
    FakeGuild,
    FakeMessage,
    GatewayIdentified,
    GatewayResumed,
    HttpRequest,
    InteractionResponded,
    MessageCreated,
    MessageDeleted,
    Perm,
    StandardWorld,
    UserFile,
    run_client,
    snowflake_time,
)
from tests.fakes.discord.schema import PayloadError, schema_type, validate

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x02\x80\x00\x00\x01\xe0\x08\x02\x00\x00\x00"
    + zlib.compress(b"not really pixels")
)


def all_intents(*, message_content: bool = True, members: bool = False) -> discord.Intents:
    intents = discord.Intents.default()
    intents.message_content = message_content
    intents.members = members
    return intents


def new_client(**kwargs: Any) -> discord.Client:
    kwargs.setdefault("intents", all_intents())
    return discord.Client(guild_ready_timeout=0, **kwargs)


def new_bot(**kwargs: Any) -> commands.Bot:
    kwargs.setdefault("intents", all_intents())
    return commands.Bot(command_prefix=commands.when_mentioned, guild_ready_timeout=0, **kwargs)


# ---------------------------------------------------------------------------- connecting


async def test_fixture_points_discord_py_at_the_fake(fake_discord: FakeDiscord) -> None:
    api, gateway = current_discord_endpoints()
    assert api == fake_discord.api_base
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v10", api)
    assert gateway == fake_discord.gateway_url
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == fake_discord.gateway_url


def test_point_discord_at_rejects_malformed_urls() -> None:
    with pytest.raises(ValueError, match="http"):
        point_discord_at("ftp://x/api/v10", "wss://gateway.discord.gg/")
    with pytest.raises(ValueError, match="v10"):
        point_discord_at("https://discord.com/api", "wss://gateway.discord.gg/")
    with pytest.raises(ValueError, match="ws"):
        point_discord_at("https://discord.com/api/v10", "https://gateway.discord.gg/")


async def test_client_connects_and_sees_the_world(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    thread = await fake.create_thread(world.alice, world.channel, "existing thread")
    client = new_client()
    async with run_client(client, fake):
        assert client.user is not None and client.user.id == fake.bot_user.id
        assert client.application_id == fake.application_id
        guild = client.get_guild(world.guild.id)
        assert guild is not None and guild.name == "Test Server"
        channel = guild.get_channel(world.channel.id)
        assert isinstance(channel, discord.TextChannel) and channel.name == "general"
        cached_thread = guild.get_thread(thread.id)
        assert cached_thread is not None and cached_thread.parent_id == world.channel.id
        assert guild.me.guild_permissions.send_messages
        assert channel.permissions_for(guild.me).create_public_threads
    identified = fake.events_of(GatewayIdentified)
    assert len(identified) == 1 and identified[0].path == "/gateway/"
    assert identified[0].intents == all_intents().value


async def test_message_event_reaches_on_message(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    client = new_client()
    received: asyncio.Queue[discord.Message] = asyncio.Queue()

    @client.event
    async def on_message(message: discord.Message) -> None:
        await received.put(message)

    async with run_client(client, fake):
        sent = await fake.send_message(
            world.alice,
            world.channel,
            f"{fake.bot_user.mention} what is this?",
            files=[UserFile("photo.png", PNG)],
        )
        message = await asyncio.wait_for(received.get(), 5)
        assert message.id == sent.id
        assert message.content == f"<@{fake.bot_user.id}> what is this?"
        assert message.author.id == world.alice.id and isinstance(message.author, discord.Member)
        assert client.user in message.mentions
        assert message.guild is not None and message.guild.id == world.guild.id
        assert message.channel.id == world.channel.id
        (attachment,) = message.attachments
        assert attachment.filename == "photo.png"
        assert attachment.content_type == "image/png"
        assert (attachment.width, attachment.height) == (640, 480)
        assert attachment.size == len(PNG)
        assert await attachment.read() == PNG
        # Snowflakes are real: they encode the time they were made.
        assert abs(snowflake_time(sent.id) - time.time()) < 5
        assert abs(message.created_at.timestamp() - time.time()) < 5


async def test_bot_sees_its_own_messages(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    client = new_client()
    authors: list[int] = []
    seen_own = asyncio.Event()

    @client.event
    async def on_message(message: discord.Message) -> None:
        authors.append(message.author.id)
        if message.author == client.user:
            seen_own.set()
            return
        await message.channel.send("pong")

    async with run_client(client, fake):
        await fake.send_message(world.alice, world.channel, "ping")
        await fake.wait_for_message(world.channel, contains="pong")
        await asyncio.wait_for(seen_own.wait(), 5)
    assert authors == [world.alice.id, fake.bot_user.id]
    assert [m.content for m in fake.messages_in(world.channel)] == ["ping", "pong"]


# ---------------------------------------------------------------------------- threads and files


async def test_thread_on_message_then_reply_inside(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    client = new_client()
    threads: asyncio.Queue[discord.Thread] = asyncio.Queue()

    @client.event
    async def on_message(message: discord.Message) -> None:
        if message.author.bot:
            return
        thread = await message.create_thread(name=message.content[:100])
        await thread.send("first answer")

    @client.event
    async def on_thread_create(thread: discord.Thread) -> None:
        await threads.put(thread)

    async with run_client(client, fake):
        question = await fake.send_message(world.alice, world.channel, "x" * 150)
        thread = await fake.wait_for_thread(world.channel, from_message=question)
        assert thread.id == question.id  # Discord reuses the starter message's id
        assert thread.name == "x" * 100 and thread.owner_id == fake.bot_user.id
        answer = await fake.wait_for_message(thread, contains="first answer")
        assert answer.author.id == fake.bot_user.id
        cached = await asyncio.wait_for(threads.get(), 5)
        assert cached.id == thread.id and cached.parent_id == world.channel.id
        stored = fake.find_message(question.id)
        assert stored is not None and stored.thread_id == thread.id


async def test_threads_without_message_public_and_private(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    client = new_client()
    async with run_client(client, fake):
        channel = client.get_channel(world.channel.id)
        assert isinstance(channel, discord.TextChannel)
        public = await channel.create_thread(name="public", type=discord.ChannelType.public_thread)
        private = await channel.create_thread(name="private", invitable=False)
        assert public.type is discord.ChannelType.public_thread
        assert private.type is discord.ChannelType.private_thread
        await private.add_user(discord.Object(world.alice.id))
        await private.join()
        await public.send("hello")
        with pytest.raises(discord.HTTPException) as too_long:
            await channel.create_thread(name="n" * 101)
        assert too_long.value.code == 50035
    assert fake.channels[private.id].invitable is False
    assert world.alice.id in fake.channels[private.id].member_ids
    # Discord posts a "started a thread" system message for a public thread only.
    notices = [m for m in fake.messages_in(world.channel) if m.type == 18]
    assert [m.content for m in notices] == ["public"]


async def test_bot_uploads_files_and_edits_attachments(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    client = new_client()
    async with run_client(client, fake):
        channel = client.get_channel(world.channel.id)
        assert isinstance(channel, discord.TextChannel)
        sent = await channel.send(
            "reasoning attached",
            files=[
                discord.File(io.BytesIO(b"# Reasoning\n"), "reasoning.md"),
                discord.File(io.BytesIO(PNG), "chart.png", description="a chart"),
            ],
            allowed_mentions=discord.AllowedMentions.none(),
        )
        assert [a.filename for a in sent.attachments] == ["reasoning.md", "chart.png"]
        assert sent.attachments[0].content_type == "text/markdown; charset=utf-8"
        assert await sent.attachments[0].read() == b"# Reasoning\n"
        recorded = await fake.wait_for_message(world.channel, contains="reasoning attached")
        assert recorded.files == [("reasoning.md", b"# Reasoning\n"), ("chart.png", PNG)]
        assert recorded.attachments[1].description == "a chart"
        assert recorded.allowed_mentions == {"parse": []}
        # Keep the chart, drop the markdown, add a new file.
        edited = await sent.edit(
            content="edited",
            attachments=[sent.attachments[1], discord.File(io.BytesIO(b"new"), "new.txt")],
        )
        assert [a.filename for a in edited.attachments] == ["chart.png", "new.txt"]
        after = await fake.wait_for_edit(recorded)
        assert [a.filename for a in after.attachments] == ["chart.png", "new.txt"]
        assert after.attachments[0].id == recorded.attachments[1].id
        await edited.delete()
        await fake.wait_for_event(MessageDeleted, lambda e: e.message.id == recorded.id)
    assert fake.find_message(recorded.id) is None


async def test_cdn_urls_are_signed_and_expire(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    message = await fake.send_message(
        world.alice,
        world.channel,
        "files",
        files=[
            UserFile("sneaky.png", b"MZ not an image", content_type="image/png"),
            UserFile("blob", b"\x00\x01", content_type=None),
        ],
    )
    payload = fake.message_payload(message)
    sneaky, blob = payload["attachments"]
    assert sneaky["content_type"] == "image/png" and "width" not in sneaky
    assert "content_type" not in blob
    url = sneaky["url"]
    assert re.fullmatch(
        rf"{fake.base_url}/attachments/{world.channel.id}/\d+/sneaky\.png"
        r"\?ex=[0-9a-f]+&is=[0-9a-f]+&hm=[0-9a-f]{64}&",
        url,
    )
    assert sneaky["proxy_url"].startswith(f"{fake.base_url}/media/attachments/")
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            assert response.status == 200
            assert await response.read() == b"MZ not an image"
        async with http.get(sneaky["proxy_url"]) as response:
            assert response.status == 200
        tampered = re.sub(r"hm=[0-9a-f]+", "hm=" + "0" * 64, url)
        async with http.get(tampered) as response:
            assert response.status == 403
            assert await response.text() == "This content is no longer available."
        fake.advance_time(25 * 3600)
        async with http.get(url) as response:
            assert response.status == 404
            assert await response.text() == "This content is no longer available."
        # A fresh fetch of the message re-signs its URLs, as Discord does.
        fresh = fake.message_payload(message)["attachments"][0]["url"]
        async with http.get(fresh) as response:
            assert response.status == 200
    statuses = [e.status for e in fake.events_of(CdnFetched)]
    assert statuses == [200, 200, 403, 404, 200]


# ---------------------------------------------------------------------------- slash commands


def build_command_bot() -> tuple[commands.Bot, dict[str, Any]]:
    bot = new_bot()
    seen: dict[str, Any] = {}

    @bot.tree.command(description="Ask the model")
    @app_commands.describe(prompt="What to ask")
    async def ask(
        interaction: discord.Interaction,
        prompt: str,
        image: discord.Attachment | None = None,
        private: bool = False,
    ) -> None:
        seen["ask"] = (prompt, image, private)
        if image is not None:
            seen["image_bytes"] = await image.read()
        await interaction.response.send_message(f"you asked: {prompt}", ephemeral=True)

    @bot.tree.command(description="Slow answer")
    async def slow(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.followup.send("done thinking")
        await interaction.followup.send("and one more thing", ephemeral=True)

    settings = app_commands.Group(name="settings", description="Settings")

    @settings.command(name="show", description="Show settings")
    async def show(interaction: discord.Interaction, server: bool = False) -> None:
        seen["show"] = server
        await interaction.response.send_message("settings: default", ephemeral=True)

    bot.tree.add_command(settings)
    return bot, seen


async def test_slash_command_with_ephemeral_answer(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    bot, seen = build_command_bot()
    async with run_client(bot, fake):
        synced = await bot.tree.sync()
        assert sorted(c.name for c in synced) == ["ask", "settings", "slow"]
        sync_event = await fake.wait_for_event(CommandsSynced)
        assert sync_event.guild_id is None
        interaction = await fake.invoke_command(
            world.alice,
            world.channel,
            "ask",
            {
                "prompt": "what is in this photo?",
                "image": UserFile("cat.png", PNG),
                "private": True,
            },
        )
        response = await interaction.wait_response()
        assert response.type == 4 and response.ephemeral
        assert (
            response.message is not None
            and response.message.content == "you asked: what is in this photo?"
        )
        assert response.message.interaction is not None
        prompt, image, private = seen["ask"]
        assert prompt == "what is in this photo?" and private is True
        assert isinstance(image, discord.Attachment) and image.filename == "cat.png"
        assert image.content_type == "image/png"
        assert image.url.startswith(f"{fake.base_url}/ephemeral-attachments/{fake.application_id}/")
        assert seen["image_bytes"] == PNG
        # Ephemeral: visible to the invoker only, never in the channel.
        assert response.message.id not in {m.id for m in fake.messages_in(world.channel)}
        # ... and never dispatched to the bot over the gateway.
        frames = [frame for session in fake.sessions for _, frame in session.buffer]
        assert frames and not any(str(response.message.id) in frame for frame in frames)


async def test_deferred_command_with_followups(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    bot, _ = build_command_bot()
    async with run_client(bot, fake):
        await bot.tree.sync()
        interaction = await fake.invoke_command(world.alice, world.channel, "slow")
        response = await interaction.wait_response()
        assert response.type == 5 and not response.ephemeral
        assert response.message is not None and response.message.loading
        first = await interaction.wait_followup(1)
        # The first followup replaces the "thinking" message.
        assert first.id == response.message.id and first.content == "done thinking"
        assert not first.loading
        second = await interaction.wait_followup(2)
        assert second.ephemeral and second.content == "and one more thing"
        original = await interaction.wait_original()
        assert original.content == "done thinking"
        assert [m.content for m in fake.messages_in(world.channel)] == ["done thinking"]


async def test_subcommand_and_command_checks(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    bot, seen = build_command_bot()
    async with run_client(bot, fake):
        with pytest.raises(AssertionError, match="must sync"):
            await fake.invoke_command(world.alice, world.channel, "ask", {"prompt": "x"})
        fake.install_commands(bot.tree)  # as a deploy's `seed-bot sync` would have
        interaction = await fake.invoke_command(
            world.alice, world.channel, "settings show", {"server": True}
        )
        response = await interaction.wait_response()
        assert response.ephemeral and seen["show"] is True
        with pytest.raises(AssertionError, match="needs a subcommand"):
            await fake.invoke_command(world.alice, world.channel, "settings")
        with pytest.raises(AssertionError, match="required options"):
            await fake.invoke_command(world.alice, world.channel, "ask")
        with pytest.raises(AssertionError, match="expected bool"):
            await fake.invoke_command(
                world.alice, world.channel, "ask", {"prompt": "x", "private": "yes"}
            )


async def test_interaction_can_only_be_answered_once_and_in_time(
    discord_world: StandardWorld,
) -> None:
    fake, world = discord_world.fake, discord_world
    bot = new_bot()
    errors: asyncio.Queue[BaseException] = asyncio.Queue()

    @bot.tree.command(description="Answers twice")
    async def twice(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("one")
        try:
            await interaction.followup.send("two")
            # Going around discord.py's own "already responded" guard hits Discord's.
            await bot.http.request(
                discord.http.Route(
                    "POST",
                    "/interactions/{webhook_id}/{webhook_token}/callback",
                    webhook_id=interaction.id,
                    webhook_token=interaction.token,
                ),
                json={"type": 4, "data": {"content": "three"}},
            )
        except discord.HTTPException as exc:
            await errors.put(exc)

    @bot.tree.command(description="Too slow")
    async def late(interaction: discord.Interaction) -> None:
        fake.advance_time(3.5)
        try:
            await interaction.response.send_message("too late")
        except discord.NotFound as exc:
            await errors.put(exc)

    async with run_client(bot, fake):
        await bot.tree.sync()
        await fake.invoke_command(world.alice, world.channel, "twice")
        error = await asyncio.wait_for(errors.get(), 5)
        assert isinstance(error, discord.HTTPException) and error.code == 40060
        await fake.invoke_command(world.alice, world.channel, "late")
        error = await asyncio.wait_for(errors.get(), 5)
        assert isinstance(error, discord.NotFound) and error.code == 10062
    assert [m.content for m in fake.messages_in(world.channel)] == ["one", "two"]


# ---------------------------------------------------------------------------- components


class ConfirmView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)
        self.presses: list[int] = []

    @discord.ui.button(label="Confirm", custom_id="seed:confirm", style=discord.ButtonStyle.green)
    async def confirm(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        self.presses.append(interaction.user.id)
        await interaction.response.edit_message(content="confirmed", view=None)


class Counter(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"counter:(?P<count>\d+)"):
    def __init__(self, count: int) -> None:
        super().__init__(discord.ui.Button(label=f"{count}", custom_id=f"counter:{count}"))
        self.count = count

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Counter:
        return cls(int(match["count"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        view = discord.ui.View(timeout=None)
        view.add_item(Counter(self.count + 1))
        await interaction.response.edit_message(content=f"count {self.count + 1}", view=view)


async def test_persistent_view_button(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    bot = new_bot()
    view = ConfirmView()

    async def setup_hook() -> None:
        bot.add_view(view)  # persistent: matched by custom_id, not by message

    bot.setup_hook = setup_hook  # type: ignore[method-assign]
    async with run_client(bot, fake):
        channel = bot.get_channel(world.channel.id)
        assert isinstance(channel, discord.TextChannel)
        # Sent by "an earlier run": the view that sent it is gone, only the persistent one
        # (registered without a message id, matched by custom_id) can answer.
        earlier = ConfirmView()
        sent = await channel.send("proceed?", view=earlier)
        earlier.stop()
        recorded = await fake.wait_for_message(world.channel, contains="proceed?")
        assert recorded.custom_ids() == ["seed:confirm"]
        assert recorded.components[0]["components"][0]["label"] == "Confirm"
        interaction = await fake.press_button(world.bob, recorded, "seed:confirm")
        response = await interaction.wait_response()
        assert response.type == 7
        updated = await fake.wait_for_edit(sent.id)
        assert updated.content == "confirmed" and updated.components == ()
        assert view.presses == [world.bob.id]
        with pytest.raises(AssertionError, match="no component"):
            await fake.press_button(world.bob, updated, "seed:confirm")


async def test_dynamic_item_button(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    bot = new_bot()

    async def setup_hook() -> None:
        bot.add_dynamic_items(Counter)

    bot.setup_hook = setup_hook  # type: ignore[method-assign]
    async with run_client(bot, fake):
        channel = bot.get_channel(world.channel.id)
        assert isinstance(channel, discord.TextChannel)
        view = discord.ui.View(timeout=None)
        view.add_item(Counter(0))
        await channel.send("count 0", view=view)
        message = await fake.wait_for_message(world.channel, contains="count 0")
        for expected in ("count 1", "count 2"):
            interaction = await fake.press_button(world.alice, message, message.custom_ids()[0])
            await interaction.wait_response()
            message = await fake.wait_for_edit(message, lambda m: m.content == expected)  # noqa: B023
        assert message.custom_ids() == ["counter:2"]


async def test_modal_round_trip(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    bot = new_bot()
    submitted: asyncio.Queue[str] = asyncio.Queue()

    class SystemPrompt(discord.ui.Modal, title="System prompt"):
        text: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label="Prompt", custom_id="system:text"
        )

        async def on_submit(self, interaction: discord.Interaction) -> None:
            await submitted.put(self.text.value)
            await interaction.response.send_message("saved", ephemeral=True)

    @bot.tree.command(description="Set the system prompt")
    async def system(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(SystemPrompt())

    async with run_client(bot, fake):
        await bot.tree.sync()
        opened = await fake.invoke_command(world.alice, world.channel, "system")
        assert (await opened.wait_response()).type == 9
        assert opened.modal is not None and opened.modal["title"] == "System prompt"
        submit = await fake.submit_modal(world.alice, opened, {"system:text": "be terse"})
        assert await asyncio.wait_for(submitted.get(), 5) == "be terse"
        assert (await submit.wait_response()).ephemeral


# ---------------------------------------------------------------------------- intents


async def test_disallowed_message_content_intent_closes_with_4014(
    fake_discord: FakeDiscord,
) -> None:
    fake_discord.create_guild()
    fake_discord.set_privileged_intents(message_content=False)
    client = new_client()
    with pytest.raises(discord.PrivilegedIntentsRequired):
        async with run_client(client, fake_discord):
            pass
    assert client.is_closed()


async def test_without_message_content_intent_content_is_empty(
    discord_world: StandardWorld,
) -> None:
    fake, world = discord_world.fake, discord_world
    fake.set_privileged_intents(message_content=False)
    client = new_client(intents=all_intents(message_content=False))
    received: asyncio.Queue[discord.Message] = asyncio.Queue()

    @client.event
    async def on_message(message: discord.Message) -> None:
        await received.put(message)

    async with run_client(client, fake):
        await fake.send_message(
            world.alice, world.channel, "secret", files=[UserFile("a.txt", b"a")]
        )
        plain = await asyncio.wait_for(received.get(), 5)
        assert plain.content == "" and plain.attachments == []
        await fake.send_message(world.alice, world.channel, f"{fake.bot_user.mention} hi")
        mention = await asyncio.wait_for(received.get(), 5)
        assert mention.content == f"<@{fake.bot_user.id}> hi"
        # The mention must be in `mentions`: the same text without it does not count.
        await fake.send_message(
            world.alice, world.channel, f"{fake.bot_user.mention} hi", mentions=[]
        )
        unlisted = await asyncio.wait_for(received.get(), 5)
        assert unlisted.content == "" and client.user not in unlisted.mentions
        await fake.send_message(world.alice, fake.dm_channel(world.alice), "in a DM")
        dm = await asyncio.wait_for(received.get(), 5)
        assert dm.content == "in a DM" and isinstance(dm.channel, discord.DMChannel)


async def test_guild_messages_intent_gates_message_events(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    intents = all_intents()
    intents.guild_messages = False
    client = new_client(intents=intents)
    received: asyncio.Queue[discord.Message] = asyncio.Queue()

    @client.event
    async def on_message(message: discord.Message) -> None:
        await received.put(message)

    async with run_client(client, fake):
        await fake.send_message(world.alice, world.channel, "in the guild")
        await fake.send_message(world.alice, fake.dm_channel(world.alice), "in the DM")
        first = await asyncio.wait_for(received.get(), 5)
        await fake.sync_gateway()
        assert first.content == "in the DM" and received.empty()


async def test_members_intent_chunks_and_member_events(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    guild = fake.create_guild()
    users = [fake.create_user(f"user{i}") for i in range(3)]
    for user in users:
        fake.add_member(guild, user)
    client = discord.Client(intents=all_intents(members=True), guild_ready_timeout=0.05)
    joined: asyncio.Queue[discord.Member] = asyncio.Queue()

    @client.event
    async def on_member_join(member: discord.Member) -> None:
        await joined.put(member)

    async with run_client(client, fake):
        cached = client.get_guild(guild.id)
        assert cached is not None
        members = await cached.chunk()
        assert {m.id for m in members} >= {u.id for u in users}
        newcomer = fake.create_user("newcomer")
        fake.add_member(guild, newcomer)
        member = await asyncio.wait_for(joined.get(), 5)
        assert member.id == newcomer.id


# ---------------------------------------------------------------------------- resilience


async def test_resume_after_dropped_connection(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    client = new_client()
    received: asyncio.Queue[str] = asyncio.Queue()
    resumed = asyncio.Event()

    @client.event
    async def on_message(message: discord.Message) -> None:
        await received.put(message.content)

    @client.event
    async def on_resumed() -> None:
        resumed.set()

    async with run_client(client, fake):
        await fake.send_message(world.alice, world.channel, "before")
        assert await asyncio.wait_for(received.get(), 5) == "before"
        assert fake.drop_gateway() == 1
        # Dispatched while the client is away: buffered by the session, replayed on RESUME.
        await fake.send_message(world.alice, world.channel, "while away 1")
        await fake.send_message(world.alice, world.channel, "while away 2")
        resume = await fake.wait_for_event(GatewayResumed)
        assert resume.path == "/gateway-resume/" and resume.replayed >= 2
        assert await asyncio.wait_for(received.get(), 5) == "while away 1"
        assert await asyncio.wait_for(received.get(), 5) == "while away 2"
        await asyncio.wait_for(resumed.wait(), 5)
        await fake.send_message(world.alice, world.channel, "after")
        assert await asyncio.wait_for(received.get(), 5) == "after"
        # Closing with a resumable code works the same way.
        fake.drop_gateway(code=4000)
        await fake.wait_for_event(
            GatewayResumed, lambda e: e.session_id == resume.session_id, since=fake.mark()
        )
    assert len(fake.events_of(GatewayIdentified)) == 1


async def test_backs_off_on_429_and_retries(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    fake.rate_limit("POST /channels/{channel_id}/messages", retry_after=0.05)
    client = new_client()
    async with run_client(client, fake):
        channel = client.get_channel(world.channel.id)
        assert isinstance(channel, discord.TextChannel)
        message = await channel.send("eventually")
        assert message.content == "eventually"
    attempts = [r for r in fake.requests if r.route == "POST /channels/{channel_id}/messages"]
    assert [r.status for r in attempts] == [429, 200]
    assert attempts[0].body == attempts[1].body
    assert len(fake.bot_messages(world.channel)) == 1


async def test_injected_server_error(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    fake.fail("POST /channels/{channel_id}/typing", status=503)
    client = new_client()
    async with run_client(client, fake):
        channel = client.get_channel(world.channel.id)
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.DiscordServerError):
            await channel.typing()
        await channel.typing()
        await fake.wait_for_typing(world.channel)


async def test_discord_limits_and_permissions(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    client = new_client()
    async with run_client(client, fake):
        channel = client.get_channel(world.channel.id)
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.HTTPException) as too_long:
            await channel.send("x" * 2001)
        assert too_long.value.status == 400 and too_long.value.code == 50035
        assert "2000 or fewer" in too_long.value.text
        # discord.py refuses more than 10 files itself; the raw route shows Discord's answer.
        eleven = [discord.File(io.BytesIO(b"x"), f"{i}.txt") for i in range(11)]
        params = discord.http.handle_message_parameters(files=eleven)
        with pytest.raises(discord.HTTPException) as too_many:
            await client.http.send_message(world.channel.id, params=params)
        assert too_many.value.code == 50035
        fake.deny_bot(world.channel, Perm.CREATE_PUBLIC_THREADS)
        await fake.sync_gateway()
        question = await fake.send_message(world.alice, world.channel, "question")
        partial = channel.get_partial_message(question.id)
        with pytest.raises(discord.Forbidden) as forbidden:
            await partial.create_thread(name="nope")
        assert forbidden.value.code == 50013
        assert not channel.permissions_for(channel.guild.me).create_public_threads
        with pytest.raises(discord.NotFound) as unknown:
            await channel.fetch_message(1)
        assert unknown.value.code == 10008
        with pytest.raises(discord.NotFound) as unknown_channel:
            await client.fetch_channel(42 << 22)
        assert unknown_channel.value.code == 10003
        fake.deny_bot(world.channel, Perm.SEND_MESSAGES)
        with pytest.raises(discord.Forbidden):
            await channel.send("muted")


async def test_allowed_mentions_and_pings(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    client = new_client()
    async with run_client(client, fake):
        channel = client.get_channel(world.channel.id)
        assert isinstance(channel, discord.TextChannel)
        text = f"@everyone {world.alice.mention}"
        await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
        await channel.send(text)
    safe, loud = fake.bot_messages(world.channel)
    assert safe.allowed_mentions == {"parse": []}
    assert not safe.mention_everyone and safe.mention_user_ids == ()
    assert loud.allowed_mentions is None  # Discord's default: parse everything
    assert loud.mention_everyone and loud.mention_user_ids == (world.alice.id,)


async def test_replies_history_edits_and_deletes(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    client = new_client()
    edits: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    deletes: asyncio.Queue[int] = asyncio.Queue()

    @client.event
    async def on_message_edit(before: discord.Message, after: discord.Message) -> None:
        await edits.put((before.content, after.content))

    @client.event
    async def on_raw_message_delete(payload: discord.RawMessageDeleteEvent) -> None:
        await deletes.put(payload.message_id)

    async with run_client(client, fake):
        first = await fake.send_message(world.alice, world.channel, "first")
        second = await fake.send_message(world.bob, world.channel, "second", reply_to=first)
        assert second.mention_user_ids == (world.alice.id,)
        channel = client.get_channel(world.channel.id)
        assert isinstance(channel, discord.TextChannel)
        reply = await channel.send(
            "re",
            reference=discord.MessageReference(message_id=second.id, channel_id=world.channel.id),
        )
        assert reply.reference is not None and reply.reference.message_id == second.id
        history = [m.content async for m in channel.history(limit=10)]
        assert history == ["re", "second", "first"]
        oldest_first = [m.content async for m in channel.history(after=discord.Object(first.id))]
        assert oldest_first == ["second", "re"]
        fetched = await channel.fetch_message(second.id)
        assert fetched.reference is not None and fetched.reference.message_id == first.id
        await fake.sync_gateway()
        await fake.edit_message(first, "first (edited)")
        assert await asyncio.wait_for(edits.get(), 5) == ("first", "first (edited)")
        await fake.delete_message(second)
        assert await asyncio.wait_for(deletes.get(), 5) == second.id
        with pytest.raises(discord.HTTPException) as bad_reply:
            await channel.send(
                "to nothing",
                reference=discord.MessageReference(
                    message_id=second.id, channel_id=world.channel.id
                ),
            )
        assert bad_reply.value.code == 50035


async def test_dm_conversation(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    client = new_client()

    @client.event
    async def on_message(message: discord.Message) -> None:
        if message.guild is None and message.author != client.user:
            await message.channel.send(f"echo {message.content}")

    async with run_client(client, fake):
        dm = fake.dm_channel(world.alice)
        await fake.send_message(world.alice, dm, "hello bot")
        answer = await fake.wait_for_message(dm)
        assert answer.content == "echo hello bot" and answer.guild_id is None
        world.bob.dms_open = False
        user = await client.fetch_user(world.bob.id)
        with pytest.raises(discord.Forbidden) as closed:
            await user.send("hi")
        assert closed.value.code == 50007


async def test_reactions_and_typing(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    client = new_client()

    @client.event
    async def on_message(message: discord.Message) -> None:
        if message.author == client.user:
            return
        async with message.channel.typing():
            await message.add_reaction("👀")
        await message.remove_reaction("👀", discord.Object(fake.bot_user.id))

    async with run_client(client, fake):
        question = await fake.send_message(world.alice, world.channel, "look")
        await fake.wait_for_typing(world.channel)
        await fake.wait_for_request(
            "DELETE /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"
        )
    kinds = [
        type(e).__name__
        for e in fake.events
        if type(e).__name__ in ("ReactionAdded", "ReactionRemoved")
    ]
    assert kinds == ["ReactionAdded", "ReactionRemoved"]
    assert fake.reactions[question.id] == {"👀": []}


async def test_auto_sharded_client_asks_gateway_bot(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    fake.recommended_shards = 2
    guilds: list[FakeGuild] = []
    # A guild's shard is (guild_id >> 22) % shard_count; the fake gives each guild its own
    # millisecond, so a few guilds cover both shards.
    while len({(g.id >> 22) % 2 for g in guilds}) < 2 or len(guilds) < 4:
        guilds.append(fake.create_guild(f"Guild {len(guilds)}"))
    channels = [fake.create_text_channel(g) for g in guilds]
    shard_of = {g.id: (g.id >> 22) % 2 for g in guilds}

    class FastShardedClient(discord.AutoShardedClient):
        async def before_identify_hook(
            self, shard_id: int | None, *, initial: bool = False
        ) -> None:
            pass  # discord.py waits 5 s before every IDENTIFY but the first

    client = FastShardedClient(intents=all_intents(), guild_ready_timeout=0)
    seen: asyncio.Queue[tuple[int, int | None]] = asyncio.Queue()

    @client.event
    async def on_message(message: discord.Message) -> None:
        assert message.guild is not None
        await seen.put((message.guild.id, message.guild.shard_id))

    async with run_client(client, fake):
        assert client.shard_count == 2
        assert {g.id for g in client.guilds} == {g.id for g in guilds}
        for guild, channel in zip(guilds, channels, strict=True):
            await fake.send_message(fake.users[guild.owner_id], channel, "hi")
            guild_id, shard_id = await asyncio.wait_for(seen.get(), 5)
            assert guild_id == guild.id and shard_id == shard_of[guild.id]
    asked = [r for r in fake.requests if r.route == "GET /gateway/bot"]
    assert len(asked) == 1
    shards = sorted((e.shard_id, e.shard_count) for e in fake.events_of(GatewayIdentified))
    assert shards == [(0, 2), (1, 2)]


# ---------------------------------------------------------------------------- the fake itself


async def test_unknown_routes_are_reported(discord_world: StandardWorld) -> None:
    fake = discord_world.fake
    client = new_client()
    async with run_client(client, fake):
        with pytest.raises(discord.NotFound):
            await client.http.request(discord.http.Route("GET", "/voice/regions"))
    assert any("unknown REST route GET /api/v10/voice/regions" in p for p in fake.problems)
    with pytest.raises(AssertionError, match="voice/regions"):
        fake.assert_no_problems()
    fake.problems.clear()


async def test_wait_for_times_out_with_a_report(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    await fake.send_message(world.alice, world.channel, "nobody answers")
    with pytest.raises(
        AssertionError, match=r"(?s)waiting for a message by the bot.*nobody answers"
    ):
        await fake.wait_for_message(world.channel, timeout=0.05)


def test_schema_validation_catches_malformed_payloads() -> None:
    user = {"id": "1", "username": "x", "discriminator": "0", "avatar": None, "global_name": None}
    validate(user, schema_type("user.User"))
    with pytest.raises(PayloadError, match="missing required key 'username'"):
        validate({k: v for k, v in user.items() if k != "username"}, schema_type("user.User"))
    with pytest.raises(PayloadError, match="expected bool"):
        validate({**user, "bot": 1}, schema_type("user.User"))
    with pytest.raises(PayloadError, match="not part of"):
        validate({**user, "bott": True}, schema_type("user.User"))


async def test_every_recorded_message_payload_is_valid(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    first = await fake.send_message(world.alice, world.channel, "a", files=[UserFile("a.png", PNG)])
    await fake.send_message(world.bob, world.channel, "b", reply_to=first)
    for message in fake.messages_in(world.channel):
        validate(fake.message_payload(message), schema_type("message.Message"))
        validate(
            fake.message_payload(message, content_visible=False), schema_type("message.Message")
        )
    assert isinstance(fake.events[-1], MessageCreated)
    assert not [e for e in fake.events if isinstance(e, HttpRequest)]
    assert not [e for e in fake.events if isinstance(e, InteractionResponded)]
    assert isinstance(first, FakeMessage)


# ---------------------------------------------------------------------------- more behaviour


async def test_zlib_transport_compression_and_reconnect_request() -> None:
    previous = current_discord_endpoints()
    async with FakeDiscord(transport_compression=True) as fake:
        point_discord_at(fake.api_base, fake.gateway_url)
        try:
            guild = fake.create_guild()
            channel = fake.create_text_channel(guild)
            owner = fake.users[guild.owner_id]
            client = new_client()
            received: asyncio.Queue[str] = asyncio.Queue()

            @client.event
            async def on_message(message: discord.Message) -> None:
                await received.put(message.content)

            async with run_client(client, fake):
                await fake.send_message(owner, channel, "compressed")
                assert await asyncio.wait_for(received.get(), 5) == "compressed"
                mark = fake.mark()
                fake.request_reconnect()
                await fake.wait_for_event(GatewayResumed, since=mark)
                await fake.send_message(owner, channel, "after reconnect")
                assert await asyncio.wait_for(received.get(), 5) == "after reconnect"
            fake.assert_no_problems()
        finally:
            point_discord_at(*previous)


async def test_webhook_and_bot_authors(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    hook = fake.create_webhook(world.channel, "GitHub")
    other_bot = fake.create_user("helper-bot", bot=True)
    fake.add_member(world.guild, other_bot)
    client = new_client()
    received: asyncio.Queue[discord.Message] = asyncio.Queue()

    @client.event
    async def on_message(message: discord.Message) -> None:
        await received.put(message)

    async with run_client(client, fake):
        await fake.send_message(hook, world.channel, "build passed")
        from_hook = await asyncio.wait_for(received.get(), 5)
        assert from_hook.webhook_id == hook.id and from_hook.author.bot
        assert from_hook.author.name == "GitHub"
        await fake.send_message(other_bot, world.channel, "beep")
        from_bot = await asyncio.wait_for(received.get(), 5)
        assert from_bot.author.bot and from_bot.webhook_id is None


async def test_component_deferred_update_select_and_original_routes(
    discord_world: StandardWorld,
) -> None:
    fake, world = discord_world.fake, discord_world
    bot = new_bot()
    picked: asyncio.Queue[list[str]] = asyncio.Queue()

    class Effort(discord.ui.View):
        def __init__(self) -> None:
            super().__init__(timeout=None)

        @discord.ui.select(
            custom_id="effort",
            options=[discord.SelectOption(label=v, value=v) for v in ("low", "high")],
        )
        async def effort(
            self, interaction: discord.Interaction, select: discord.ui.Select[Any]
        ) -> None:
            await interaction.response.defer()  # type 6: acknowledge, edit later
            await picked.put(select.values)
            await interaction.edit_original_response(content=f"effort: {select.values[0]}")

    @bot.tree.command(description="Pick an effort")
    async def effort(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("pick one", view=Effort())
        original = await interaction.original_response()
        assert original.content == "pick one"
        note = await interaction.followup.send("a note", wait=True)
        await note.delete()

    async with run_client(bot, fake):
        await bot.tree.sync()
        command = await fake.invoke_command(world.alice, world.channel, "effort")
        await fake.wait_for_event(MessageDeleted)
        assert [m.content for m in fake.messages_in(world.channel)] == ["pick one"]
        message = await command.wait_original()
        assert message.interaction is not None and message.interaction.name == "effort"
        chosen = await fake.choose(world.bob, message, "effort", ["high"])
        assert await asyncio.wait_for(picked.get(), 5) == ["high"]
        assert (await chosen.wait_response()).type == 6
        edited = await fake.wait_for_edit(message, lambda m: m.content == "effort: high")
        assert edited.custom_ids() == ["effort"]
        with pytest.raises(AssertionError, match="not among the options"):
            await fake.choose(world.bob, edited, "effort", ["extreme"])


async def test_commands_in_threads_and_dms(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    bot = new_bot()
    where: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()

    @bot.tree.command(description="Where am I")
    async def here(interaction: discord.Interaction) -> None:
        channel = interaction.channel
        await where.put((type(channel).__name__, interaction.guild is None))
        await interaction.response.send_message("here", ephemeral=True)

    @bot.tree.command(description="Guild only")
    @app_commands.guild_only()
    async def guildy(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("ok")

    async with run_client(bot, fake):
        await bot.tree.sync()
        thread = await fake.create_thread(world.alice, world.channel, "a thread")
        await fake.sync_gateway()
        await fake.invoke_command(world.alice, thread, "here")
        assert await asyncio.wait_for(where.get(), 5) == ("Thread", False)
        await fake.invoke_command(world.alice, fake.dm_channel(world.alice), "here")
        assert await asyncio.wait_for(where.get(), 5) == ("DMChannel", True)
        with pytest.raises(AssertionError, match="not available in DMs"):
            await fake.invoke_command(world.alice, fake.dm_channel(world.alice), "guildy")


async def test_private_threads_are_visible_to_members_only(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    client = new_client()
    seen: asyncio.Queue[str] = asyncio.Queue()

    @client.event
    async def on_message(message: discord.Message) -> None:
        await seen.put(message.content)

    async with run_client(client, fake):
        hidden = await fake.create_thread(world.alice, world.channel, "secret", private=True)
        await fake.send_message(world.alice, hidden, "not for the bot")
        await fake.add_thread_member(hidden, fake.bot_user)
        await fake.send_message(world.alice, hidden, "now the bot is in")
        assert await asyncio.wait_for(seen.get(), 5) == "now the bot is in"
        assert client.get_channel(hidden.id) is not None


async def test_resolved_options_and_autocomplete(discord_world: StandardWorld) -> None:
    fake, world = discord_world.fake, discord_world
    role = fake.create_role(world.guild, "Mods", mentionable=True)
    bot = new_bot()
    got: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    @bot.tree.command(description="Resolve things")
    async def who(
        interaction: discord.Interaction,
        member: discord.Member,
        channel: discord.TextChannel,
        role: discord.Role,
        level: app_commands.Range[int, 1, 3] = 2,
    ) -> None:
        await got.put((member.id, member.display_name, channel.id, role.name, level))
        await interaction.response.send_message("ok", ephemeral=True)

    @bot.tree.command(description="Pick a model effort")
    async def effort(interaction: discord.Interaction, level: str) -> None:
        await interaction.response.send_message(level, ephemeral=True)

    @effort.autocomplete("level")
    async def effort_choices(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        levels = ("minimal", "low", "medium", "high")
        return [app_commands.Choice(name=v, value=v) for v in levels if v.startswith(current)]

    async with run_client(bot, fake):
        await bot.tree.sync()
        await fake.invoke_command(
            world.alice,
            world.channel,
            "who",
            {"member": world.bob, "channel": world.channel, "role": role, "level": 3},
        )
        assert await asyncio.wait_for(got.get(), 5) == (
            world.bob.id,
            "Bob",
            world.channel.id,
            "Mods",
            3,
        )
        with pytest.raises(AssertionError, match="outside"):
            await fake.invoke_command(
                world.alice,
                world.channel,
                "who",
                {"member": world.bob, "channel": world.channel, "role": role, "level": 9},
            )
        typing = await fake.autocomplete(
            world.alice, world.channel, "effort", {"level": "m"}, focused="level"
        )
        response = await typing.wait_response()
        assert response.type == 8 and response.data is not None
        assert [c["value"] for c in response.data["choices"]] == ["minimal", "medium"]


async def test_wrong_token_fails_login(fake_discord: FakeDiscord) -> None:
    client = new_client()
    with pytest.raises(discord.LoginFailure):
        async with run_client(client, fake_discord, token="not-the-token"):
            pass
    unauthorized = [r for r in fake_discord.requests if r.status == 401]
    assert [r.route for r in unauthorized] == ["GET /users/@me"]
