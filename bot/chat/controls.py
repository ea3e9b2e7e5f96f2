"""Stop and Retry: the buttons and what pressing them does.

They are discord.py ``DynamicItem``s (as in discord.py's ``examples/views/dynamic_counter.py``):
the custom id carries the turn id and the classes are registered at start-up, so a button
keeps working after a restart and no per-message state is kept. Each button's logic lives
in its callback and reaches the rest of the bot through :class:`BotContext`. Every press
passes the gate (access lists; Retry also the quotas): discord.py sends component
interactions to the view store, not to the command tree's check.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import discord

from bot.chat import texts
from bot.chat.buttons import button, view_with
from bot.chat.context import BotContext, context_of
from bot.chat.gate import Refusal, may_control
from bot.chat.replies import ephemeral, telling_failures
from bot.domain.flows import Redo
from bot.domain.models import Conversation, Turn
from bot.domain.ports import ConversationStore
from bot.domain.stopping import StopResult

log = logging.getLogger(__name__)


async def _pressed(
    controller: BotContext, interaction: discord.Interaction, turn_id: int, unknown: str
) -> Turn | None:
    """The turn a button is about, once the presser passed the gate's access lists (else the
    refusal, or ``unknown``, is the answer and None returned)."""
    refusal = await controller.gate.check_interaction(interaction)
    if refusal is not None:
        await ephemeral(interaction, refusal.text)
        return None
    turn = await controller.turns.find_turn(turn_id)
    if turn is None:
        await ephemeral(interaction, unknown)
    return turn


async def controlled(
    conversations: ConversationStore, interaction: discord.Interaction, turn: Turn
) -> Conversation | None:
    """The conversation of ``turn`` when the person interacting may control it (the gate's
    one rule, against what is stored: the turn id a custom id carries is only an id); None
    otherwise. The conversation lives where its answers go: the turn's channel, or for one
    held through interactions the channel it was asked in."""
    conversation = await conversations.find_conversation(turn.conversation_id)
    if conversation is None:
        return None
    place = (
        turn.reply_channel_id if turn.reply_channel_id.isdigit() else conversation.parent_channel_id
    )
    allowed = may_control(
        interaction, conversation.owner_id, place_id=place or "", author_id=turn.author_id
    )
    return conversation if allowed else None


async def retry(controller: BotContext, interaction: discord.Interaction, turn: Turn) -> None:
    """Answer ``turn`` again, when it is the latest of its conversation, settled, and the
    person may control it: a new model call, so it passes the gate's quotas like a message.
    Used by the Retry button and ``/retry``."""
    conversation = await controlled(controller.conversations, interaction, turn)
    if conversation is None:
        await ephemeral(interaction, texts.only_controller("retry"))
        return
    latest = await controller.turns.latest_turn(conversation.scope_id)
    if latest is None or latest.id != turn.id:
        await ephemeral(interaction, texts.ONLY_LATEST)
        return
    if not turn.state.settled:
        await ephemeral(interaction, texts.STILL_WRITING)
        return
    admission = await controller.gate.admit_interaction(interaction)
    if isinstance(admission, Refusal):
        await ephemeral(interaction, admission.text)
        return
    if interaction.type is discord.InteractionType.component:
        await interaction.response.defer()  # the button: acknowledged quietly
    else:
        await ephemeral(interaction, texts.ANSWERING_AGAIN)
    log.info("turn %s: retry asked by user %s", turn.id, interaction.user.id)
    # The presser pays: the gate checked their access, quotas and budgets, not the author's.
    redo = Redo(conversation.scope_id, turn_id=turn.id)
    controller.spawn(controller.service.redo(redo, admission), name=f"retry-{turn.id}")


class StopButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"seed:stop:(?P<turn>\d+)"
):
    def __init__(self, turn_id: int) -> None:
        super().__init__(button(f"seed:stop:{turn_id}", "Stop", "⏹️"))
        self.turn_id = turn_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> StopButton:
        return cls(int(match["turn"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        # The database away: the presser is told so (not "the interaction failed").
        await telling_failures(interaction, self._stop(interaction))

    async def _stop(self, interaction: discord.Interaction) -> None:
        controller = context_of(interaction)
        turn = await _pressed(controller, interaction, self.turn_id, texts.UNKNOWN_TURN)
        if turn is None:
            return
        if await controlled(controller.conversations, interaction, turn) is None:
            await ephemeral(interaction, texts.only_controller("stop it"))
            return
        # Acknowledge within Discord's 3 s, whatever fal's cancel takes.
        await interaction.response.defer()
        result = await controller.service.stop(self.turn_id, interaction.user.display_name)
        if result is StopResult.STOPPED:
            try:
                await interaction.edit_original_response(
                    content=texts.stopped_by(interaction.user.display_name), view=None
                )
            except discord.HTTPException as exc:
                log.info("could not mark turn %s stopped: %s", self.turn_id, exc)
        else:
            await ephemeral(interaction, texts.ALREADY_FINISHED)


class RetryButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"seed:retry:(?P<turn>\d+)"
):
    def __init__(self, turn_id: int) -> None:
        super().__init__(button(f"seed:retry:{turn_id}", "Retry", "🔁"))
        self.turn_id = turn_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> RetryButton:
        return cls(int(match["turn"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await telling_failures(interaction, self._retry(interaction))

    async def _retry(self, interaction: discord.Interaction) -> None:
        controller = context_of(interaction)
        turn = await _pressed(controller, interaction, self.turn_id, texts.ONLY_LATEST)
        if turn is not None:
            await retry(controller, interaction, turn)


def stop_view(turn_id: int) -> discord.ui.View:
    return view_with(StopButton(turn_id))


def retry_view(turn_id: int) -> discord.ui.View:
    return view_with(RetryButton(turn_id))


DYNAMIC_ITEMS = (StopButton, RetryButton)
