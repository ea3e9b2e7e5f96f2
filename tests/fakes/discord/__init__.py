"""A fake Discord on loopback that the real, unmodified discord.py client runs against.

One aiohttp server on ``127.0.0.1`` serves the REST API (``/api/v10``), the gateway websocket
(``/gateway/``, resumes at ``/gateway-resume/``) and a CDN for attachments. Tests build a world
(guilds, channels, roles, users), act as users (messages, edits, slash commands, buttons), and
read back — or wait for — everything the bot did, from an ordered event log.

Quick start
-----------
``tests/conftest.py`` registers the fixtures (``pytest_plugins``); then::

    import discord
    from tests.fakes.discord import FakeDiscord, UserFile, run_client

    async def test_reply(fake_discord: FakeDiscord) -> None:
        fake = fake_discord
        guild = fake.create_guild("Test Server")
        general = fake.create_text_channel(guild, "general")
        alice = fake.create_user("alice")
        fake.add_member(guild, alice)

        intents = discord.Intents.default()
        intents.message_content = True
        client = discord.Client(intents=intents, guild_ready_timeout=0)

        @client.event
        async def on_message(message: discord.Message) -> None:
            if message.author != client.user:
                await message.reply("hi!")

        async with run_client(client, fake):
            sent = await fake.send_message(alice, general, "hello", files=[UserFile("a.png", png)])
            reply = await fake.wait_for_message(general)
            assert reply.referenced_message_id == sent.id

What to know
------------
- ``fake_discord`` points discord.py at the fake (``bot.chat.endpoints.point_discord_at``) and
  restores it after the test; it fails the test if the fake saw *problems*: unknown routes,
  malformed requests, or payloads not matching discord.py's ``discord/types`` TypedDicts
  (``fake.problems``; clear it in a test that provokes one on purpose).
- ``run_client(client, fake)`` starts the client, waits until it is ready and has parsed every
  GUILD_CREATE, and closes it cleanly; discord.py errors logged meanwhile (exceptions in
  handlers, commands, views) fail the test (``error_loggers=("discord", "bot")`` adds the
  bot's own). Build clients with ``guild_ready_timeout=0``: discord.py otherwise waits 2 s after
  the last GUILD_CREATE before ``on_ready`` (with 0 it also skips member chunking at start-up;
  a bot that needs the member cache can use a small value such as 0.05 instead).
- Waiting never sleeps: ``await fake.wait_for(predicate)``, ``wait_for_event(Kind, pred)``,
  ``wait_for_message(channel, ...)``, ``wait_for_edit``, ``wait_for_thread``,
  ``wait_for_typing``, ``wait_for_request``, and on interactions ``wait_response``,
  ``wait_original``, ``wait_followup``. They scan the log from ``since`` (default: the start;
  take ``fake.mark()`` before acting to skip older events) and fail with the recent events.
  ``await fake.sync_gateway()`` returns once the client has parsed everything dispatched.
- Acting as users: ``send_message`` (mentions parsed from ``<@id>``/``<@&id>``/``@everyone``
  like Discord, or set explicitly; ``reply_to``; ``files=[UserFile(...)]`` with automatic,
  misleading or missing content types), ``edit_message``, ``delete_message``, ``add_reaction``,
  ``create_thread``, ``invoke_command(user, channel, "name sub", {options})`` (only commands the
  bot synced; values typed against the synced definition; ``UserFile`` for attachment options),
  ``autocomplete``, ``press_button``, ``choose`` (string select), ``submit_modal``,
  ``invoke_message_command``, ``forward`` (see "Everywhere a user-installed app reaches").
  Interactions return a :class:`FakeInteraction`. ``install_commands(bot.tree)`` registers
  commands as an earlier deploy would have (the bot never syncs in ``on_ready``).
- Reading back: ``fake.events`` (:mod:`.events`: ``MessageCreated``/``Edited``/``Deleted`` with
  ``via`` and ``by_bot``, ``ThreadCreated``, ``TypingStarted``, ``Reaction*``,
  ``InteractionResponded``, ``CommandsSynced``, ``HttpRequest`` for every REST call incl. 429s,
  ``CdnFetched``, ``Gateway*``), ``messages_in(channel)``, ``bot_messages()``, ``threads()``,
  ``registered_commands()``; a :class:`FakeMessage` keeps ``allowed_mentions`` and
  ``sent_message_reference`` exactly as sent, ``files`` as (name, bytes), who it pinged.
- Faults: ``fake.rate_limit(route, retry_after=...)`` (429 with Discord's headers, incl. ``Via``),
  ``fake.fail(route, status=503)``, ``fake.drop_gateway()`` (the client RESUMEs and gets what it
  missed), ``request_reconnect``, ``invalidate_sessions``, ``set_privileged_intents(...)``
  (IDENTIFY asking for a disabled one is closed with 4014), ``deny_bot(channel, Perm.X)`` /
  ``set_overwrite`` / ``set_bot_permissions`` (403 50013), ``advance_time`` (expires CDN URLs
  and interaction tokens without sleeping).

Everywhere a user-installed app reaches
---------------------------------------
(``tests/test_fake_discord_everywhere.py`` shows each from discord.py's side.)

- Installations: ``install_for_user(user)`` / ``uninstall_for_user`` (User Install; a guild
  install is the bot being a member), ``set_installation_contexts(guild=, user=)`` (the
  portal's Installation page, seen in the application's ``integration_types_config``).
- Commands keep ``integration_types`` (0 guild, 1 user install) and ``contexts`` (0 guild,
  1 bot DM, 2 private channel) as synced (other values: 400 50035); ``invoke_command``,
  ``autocomplete`` and ``invoke_message_command`` refuse, with the reason, a command in a
  context it was not synced for or that no installation authorizes there.
- Places without the bot: ``create_guild(..., bot_member=False)`` and
  ``create_private_channel(a, b)`` (a DM between people) or ``(a, b, c, name=...)`` (group
  DM). Their interactions carry ``context``, ``authorizing_integration_owners`` (``{"1":
  user id}``; ``{"0": guild id}`` where the bot is; ``{"0": "0"}`` in its DM) and Discord's
  ``app_permissions`` there; the bot gets no gateway events from them, and channel and
  guild routes answer 403 50001 Missing Access: it answers only through the interaction.
- Interactions authorized by a user install alone: at most 5 follow-ups (the 6th: 400 40094;
  every POST to the follow-up route counts). In a guild without the bot, every response is
  ephemeral where the member lacks ``Perm.USE_EXTERNAL_APPS`` (in @everyone's defaults, as on
  Discord; ``FakeInteraction.forced_ephemeral``). ``FakeInteraction.context``,
  ``.authorizing_integration_owners``, ``.user_install_only`` show what was sent.
- Token expiry: ``expire_interaction(interaction)`` ages one interaction past its 15 minutes
  (webhook routes then answer 401 50027), ``advance_time`` the whole clock.
- Message context menus: ``invoke_message_command(user, message, "Ask Seed")`` (type 2 with
  ``data.type`` 3, ``target_id``, ``resolved.messages``), also on messages the bot never saw.
- Modals: the bot's callback type 9 is kept (``FakeInteraction.modal``) whether a command, a
  context menu or a button (``press_button``) opened it; ``submit_modal`` sends type 5 with
  the values and, like the client, refuses a required input left empty.
- Forwards: ``forward(message, to_channel, by_user, comment=None)`` posts a message whose
  ``message_reference`` has ``type`` 1 and whose ``message_snapshots`` hold the original's
  content and attachments (URLs signed afresh), over the gateway and REST;
  ``FakeMessage.snapshots`` / ``is_forward`` read it back.

Not modelled: user context menu invocation (type 2 commands sync, but there is no helper to
run one), which shard receives an interaction from a guild without the bot (the guild id's, as
for other guild events), voice, presences (beyond the intent), polls, stickers, forum/media
channels, auto-archiving by time, slowmode, audit logs, emoji validation, real rate-limit
buckets (429s only when injected), sessions expiring, IDENTIFY concurrency limits, ETF encoding
and zstd.

Modules: :mod:`.server` (``FakeDiscord``), :mod:`.world` (state, permissions, payloads),
:mod:`.gateway`, :mod:`.rest`, :mod:`.cdn`, :mod:`.interactions`, :mod:`.events` (the log),
:mod:`.models`, :mod:`.schema` (runtime validation against discord.py's TypedDicts),
:mod:`.runner` (``run_client``), :mod:`.fixtures` (pytest plugin).
"""

from __future__ import annotations

from .errors import ApiError
from .events import (
    CdnFetched,
    CommandsSynced,
    Event,
    GatewayClosed,
    GatewayIdentified,
    GatewayRejected,
    GatewayResumed,
    HttpRequest,
    InteractionCreated,
    InteractionResponded,
    MessageCreated,
    MessageDeleted,
    MessageEdited,
    Problem,
    ReactionAdded,
    ReactionRemoved,
    ThreadCreated,
    ThreadMemberAdded,
    ThreadUpdated,
    TypingStarted,
    UploadedFile,
)
from .interactions import FakeInteraction
from .models import (
    AUTO,
    ChannelType,
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeMessage,
    FakeRole,
    FakeUser,
    FakeWebhook,
    Intent,
    MessageFlag,
    Perm,
    UserFile,
)
from .runner import run_client
from .server import FakeDiscord
from .snowflakes import DISCORD_EPOCH_MS, snowflake_time
from .standard import StandardWorld, build_standard_world
from .world import PrivilegedIntents

__all__ = [
    "AUTO",
    "DISCORD_EPOCH_MS",
    "ApiError",
    "CdnFetched",
    "ChannelType",
    "CommandsSynced",
    "Event",
    "FakeAttachment",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeInteraction",
    "FakeMember",
    "FakeMessage",
    "FakeRole",
    "FakeUser",
    "FakeWebhook",
    "GatewayClosed",
    "GatewayIdentified",
    "GatewayRejected",
    "GatewayResumed",
    "HttpRequest",
    "Intent",
    "InteractionCreated",
    "InteractionResponded",
    "MessageCreated",
    "MessageDeleted",
    "MessageEdited",
    "MessageFlag",
    "Perm",
    "PrivilegedIntents",
    "Problem",
    "ReactionAdded",
    "ReactionRemoved",
    "StandardWorld",
    "ThreadCreated",
    "ThreadMemberAdded",
    "ThreadUpdated",
    "TypingStarted",
    "UploadedFile",
    "UserFile",
    "build_standard_world",
    "run_client",
    "snowflake_time",
]
