"""The Reply button under an answer given through an interaction, and the modal it opens: its
submission is the next turn of the same stored conversation, answered through the modal's
interaction.

Like Stop and Retry, the button is a ``DynamicItem`` whose custom id carries the turn id, so
it works after a restart (the conversation is found from the turn). The press and the
submission each pass the gate: the access lists, and the quotas for the submission (a model
call)."""

from __future__ import annotations

import logging
import re
from typing import Any, cast

import discord

from bot.chat import texts
from bot.chat.interaction_delivery import is_interaction_scope
from bot.chat.interaction_turns import Asker, answer_through
from bot.chat.replies import ephemeral

log = logging.getLogger(__name__)

MODAL_SECONDS = 900.0  # a modal left open longer than the press's 15 minutes is gone anyway
REPLY_MAX_LENGTH = 4000


def _asker(interaction: discord.Interaction) -> Asker:
    return cast(Asker, interaction.client)


class ReplyModal(discord.ui.Modal):
    """The text of the next turn."""

    def __init__(self, turn_id: int, scope_id: str) -> None:
        super().__init__(title=texts.REPLY_MODAL_TITLE, timeout=MODAL_SECONDS)
        self.turn_id = turn_id
        self.scope_id = scope_id
        self.text: discord.ui.TextInput[ReplyModal] = discord.ui.TextInput(
            label=texts.REPLY_FIELD_LABEL,
            style=discord.TextStyle.paragraph,
            custom_id="seed:reply:text",
            max_length=REPLY_MAX_LENGTH,
        )
        self.add_item(self.text)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        # In the bot's own task, so a shutdown drains it like any turn.
        _asker(interaction).spawn(self._submitted(interaction), name=f"reply-{interaction.id}")

    async def _submitted(self, interaction: discord.Interaction) -> None:
        asker = _asker(interaction)
        text = self.text.value.strip()
        if not text:
            await ephemeral(interaction, texts.EMPTY_REPLY)
            return
        refusal = await asker.gate.check_interaction(interaction, model_call=True)
        if refusal is not None:
            await ephemeral(interaction, refusal.text)
            return
        message = interaction.message
        private = message.flags.ephemeral if message is not None else True
        log.info("turn %s: reply through interaction %s", self.turn_id, interaction.id)
        await answer_through(
            asker, interaction, text=text, scope_id=self.scope_id, ephemeral=private
        )


class ReplyButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"seed:reply:(?P<turn>\d+)"
):
    def __init__(self, turn_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=texts.REPLY_LABEL,
                emoji="💬",
                style=discord.ButtonStyle.primary,
                custom_id=f"seed:reply:{turn_id}",
            )
        )
        self.turn_id = turn_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ReplyButton:
        return cls(int(match["turn"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        asker = _asker(interaction)
        refusal = await asker.gate.check_interaction(interaction, model_call=False)
        if refusal is not None:
            await ephemeral(interaction, refusal.text)
            return
        turn = await asker.service.get_turn(self.turn_id)
        if turn is None or not is_interaction_scope(turn.reply_channel_id):
            await ephemeral(interaction, texts.CONVERSATION_GONE)
            return
        await interaction.response.send_modal(ReplyModal(turn.id, turn.reply_channel_id))


def reply_view(turn_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ReplyButton(turn_id))
    return view
