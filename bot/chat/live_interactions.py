"""The interactions whose turns are running, and where their answers go. An interaction's
token is its only way to answer, and Discord takes answers on it for 15 minutes after its
creation. While its turn runs the token is held in memory and, sealed
(bot/chat/sealing.py), in the database (:class:`LiveInteractions`), so that a restart
within those 15 minutes still answers it through its webhook; it is dropped once the
answer (or the failure notice) is out. Nothing here logs a token."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

import discord

from bot.chat.sealing import TokenSeal
from bot.domain.errors import DeliveryError, SeedBotError
from bot.domain.models import StoredInteraction
from bot.domain.ports import InteractionStore

log = logging.getLogger(__name__)

#: Key in ``Interaction.extras`` for the visibility chosen when the interaction was deferred.
EPHEMERAL_EXTRA = "seed_ephemeral"

#: How long Discord takes answers on an interaction, from its creation.
INTERACTION_LIFETIME = timedelta(minutes=15)

# The webhook message that is an interaction's response (Discord's name for it in the path).
_ORIGINAL = cast(int, "@original")

EXPIRED = "the interaction expired (Discord keeps it 15 minutes) before the answer was ready"
GONE = "the interaction it answers is gone (the bot restarted and kept nothing to answer it)"


class LiveInteractions:
    """The interactions whose turns are running, by id: in memory, and (once ``keep_in`` gave
    a store) sealed in the database until their answers are out, so that a restart within
    Discord's 15 minutes can still answer them. Their tokens are never logged."""

    def __init__(self, client: discord.Client) -> None:
        self._client = client
        self._live: dict[str, discord.Interaction] = {}
        # Kept in the database by this process and not yet dropped.
        self._kept: set[str] = set()
        self._store: InteractionStore | None = None
        self._seal: TokenSeal | None = None

    def keep_in(self, store: InteractionStore, seal: TokenSeal) -> None:
        self._store, self._seal = store, seal

    @contextlib.asynccontextmanager
    async def holding(
        self, interaction: discord.Interaction, ephemeral: bool
    ) -> AsyncIterator[str]:
        """Hold ``interaction`` (already acknowledged as ``ephemeral``) while its turn runs.
        A turn cut short (a shutdown) leaves it kept for the next start."""
        key = str(interaction.id)
        self._live[key] = interaction
        await self._keep(interaction, ephemeral)
        try:
            yield key
        finally:
            self._live.pop(key, None)
        await self.release(key)

    def get(self, interaction_id: str) -> discord.Interaction | None:
        return self._live.get(interaction_id)

    async def _keep(self, interaction: discord.Interaction, ephemeral: bool) -> None:
        if self._store is None or self._seal is None:
            return
        key = str(interaction.id)
        stored = StoredInteraction(
            interaction_id=key,
            application_id=str(interaction.application_id),
            user_id=str(interaction.user.id),
            sealed_token=self._seal.seal(interaction.token, key),
            ephemeral=ephemeral,
            expires_at=interaction.created_at + INTERACTION_LIFETIME,
        )
        try:
            await self._store.keep_interaction(stored)
            self._kept.add(key)
        except SeedBotError as exc:
            # The turn still runs; only a restart before its answer could not deliver it.
            log.warning("interaction %s not kept for a restart: %s", key, exc)

    async def release(self, interaction_id: str) -> None:
        if self._store is None or interaction_id not in self._kept:
            return
        self._kept.discard(interaction_id)
        try:
            await self._store.drop_interaction(interaction_id)
        except SeedBotError as exc:
            log.warning("interaction %s stays kept until it expires: %s", interaction_id, exc)

    async def restore(self, interaction_id: str) -> tuple[StoredInteraction, discord.Webhook]:
        """What was kept for an interaction and the webhook answering it; raises
        ``DeliveryError`` when it cannot be answered any more (dropping what was kept)."""
        stored: StoredInteraction | None = None
        if self._store is not None:
            try:
                stored = await self._store.stored_interaction(interaction_id)
            except SeedBotError as exc:
                raise DeliveryError(f"the interaction's token could not be read: {exc}") from exc
        if stored is None:
            raise DeliveryError(GONE)
        self._kept.add(interaction_id)
        token = self._seal.open(stored.sealed_token, interaction_id) if self._seal else None
        if stored.expires_at <= datetime.now(UTC) or token is None:
            await self.release(interaction_id)
            raise DeliveryError(EXPIRED if token is not None else GONE)
        webhook = discord.Webhook.partial(int(stored.application_id), token, client=self._client)
        # partial() makes an incoming webhook; an interaction's is an application webhook
        # (its follow-ups may be ephemeral), as Interaction.followup builds it.
        webhook.type = discord.WebhookType.application
        return stored, webhook

    async def purge(self) -> None:
        """Drop what a previous run kept for interactions that have expired since."""
        if self._store is None:
            return
        try:
            dropped = await self._store.drop_expired_interactions(datetime.now(UTC))
        except SeedBotError as exc:
            log.warning("expired interactions not dropped: %s", exc)
            return
        if dropped:
            log.info("dropped %d expired interaction(s) kept by a previous run", dropped)


class AnswerTarget(Protocol):
    """Where an interaction's answer goes: the interaction itself while it is live, its
    webhook rebuilt from the kept token after a restart."""

    @property
    def interaction_id(self) -> str: ...

    @property
    def ephemeral(self) -> bool: ...

    @property
    def expires_at(self) -> datetime | None:
        """When Discord stops taking answers on it (None until ``ready``)."""
        ...

    async def ready(self) -> None:
        """Raise ``DeliveryError`` when the interaction cannot be answered any more."""
        ...

    async def edit_original(self, **kwargs: Any) -> discord.Message: ...

    async def followup(self, content: str, **kwargs: Any) -> discord.Message: ...

    async def release(self) -> None:
        """The answer (or its failure) is out: the token is needed no more."""
        ...


class LiveTarget:
    def __init__(self, interaction: discord.Interaction, live: LiveInteractions) -> None:
        self._interaction = interaction
        self._live = live

    @property
    def interaction_id(self) -> str:
        return str(self._interaction.id)

    @property
    def ephemeral(self) -> bool:
        return bool(self._interaction.extras.get(EPHEMERAL_EXTRA, True))

    @property
    def expires_at(self) -> datetime | None:
        return self._interaction.created_at + INTERACTION_LIFETIME

    async def ready(self) -> None:
        return None

    async def edit_original(self, **kwargs: Any) -> discord.Message:
        return await self._interaction.edit_original_response(**kwargs)

    async def followup(self, content: str, **kwargs: Any) -> discord.Message:
        return await self._interaction.followup.send(content, wait=True, **kwargs)

    async def release(self) -> None:
        await self._live.release(self.interaction_id)


class KeptTarget:
    """An interaction answered after a restart, through its webhook rebuilt from what was
    kept (:meth:`LiveInteractions.restore`), loaded when the delivery starts."""

    def __init__(self, interaction_id: str, live: LiveInteractions) -> None:
        self._interaction_id = interaction_id
        self._live = live
        self._webhook: discord.Webhook | None = None
        self._ephemeral = True
        self._expires_at: datetime | None = None
        self._unusable: DeliveryError | None = None

    @property
    def interaction_id(self) -> str:
        return self._interaction_id

    @property
    def ephemeral(self) -> bool:
        return self._ephemeral

    @property
    def expires_at(self) -> datetime | None:
        return self._expires_at

    async def ready(self) -> None:
        if self._unusable is not None:
            raise self._unusable
        if self._webhook is None:
            try:
                stored, self._webhook = await self._live.restore(self._interaction_id)
                self._ephemeral, self._expires_at = stored.ephemeral, stored.expires_at
            except DeliveryError as exc:
                self._unusable = exc
                raise

    async def edit_original(self, **kwargs: Any) -> discord.Message:
        await self.ready()
        assert self._webhook is not None
        return await self._webhook.edit_message(_ORIGINAL, **kwargs)

    async def followup(self, content: str, **kwargs: Any) -> discord.Message:
        await self.ready()
        assert self._webhook is not None
        return await self._webhook.send(content, wait=True, **kwargs)

    async def release(self) -> None:
        await self._live.release(self._interaction_id)
