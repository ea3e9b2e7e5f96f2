"""What the commands, buttons and menus reach the bot through: one small context type, which
the bot (``SeedBot``) implements. A button's callback gets it from its interaction's client
(:func:`context_of`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, cast

import discord

from bot.chat.autoreply import AutoreplyModes
from bot.chat.gate import Gate
from bot.chat.live_interactions import LiveInteractions
from bot.domain.ports import ConversationStore, TurnStore
from bot.domain.privacy import PrivacyStore
from bot.domain.service import ConversationService


class BotContext(Protocol):
    """The bot as the commands, buttons and menus see it."""

    @property
    def gate(self) -> Gate: ...

    @property
    def service(self) -> ConversationService: ...

    @property
    def conversations(self) -> ConversationStore: ...

    @property
    def turns(self) -> TurnStore: ...

    @property
    def privacy(self) -> PrivacyStore: ...

    @property
    def interactions(self) -> LiveInteractions: ...

    @property
    def allow_dms(self) -> bool: ...

    @property
    def autoreply(self) -> AutoreplyModes: ...

    # Set when there is a config to reload: returns the problems found (nothing applied
    # then), or an empty list once the new config is in force.
    reload_config: Callable[[], Awaitable[list[str]]] | None

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]: ...

    async def is_owner(self, user: discord.abc.User) -> bool: ...


def context_of(interaction: discord.Interaction) -> BotContext:
    """The bot an interaction (a button press, a modal) came to."""
    return cast(BotContext, interaction.client)
