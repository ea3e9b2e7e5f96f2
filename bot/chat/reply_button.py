"""The Reply button under an answer given through an interaction, and the modal it opens: its
submission is the next turn of the same stored conversation, answered through the modal's
interaction.

Like Stop and Retry, the button is a ``DynamicItem`` whose custom id carries the turn id, so
it works after a restart (the conversation is found from the turn). The press and the
submission each pass the gate: the access lists, the rule of who may continue the
conversation (that of Stop and Retry), and the quotas for the submission (a model call)."""

from __future__ import annotations

import logging
import re
from typing import Any

import discord

from bot.chat import texts
from bot.chat.buttons import button, view_with
from bot.chat.context import BotContext, context_of
from bot.chat.controls import controlled
from bot.chat.interaction_delivery import is_interaction_scope
from bot.chat.interaction_turns import (
    MODAL_TEXT_LIMIT,
    answer_is_ephemeral,
    answer_through,
)
from bot.chat.replies import ephemeral, telling_failures
from bot.domain.admission import Admission
from bot.domain.models import Turn

log = logging.getLogger(__name__)


MODAL_PREFIX = "seed:reply-modal:"
TEXT_ID = "seed:reply:text"
_MODAL_RE = re.compile(rf"{re.escape(MODAL_PREFIX)}(?P<turn>\d+)")


def reply_modal(turn_id: int) -> discord.ui.Modal:
    """The modal asking for the next turn's text. Its custom id carries the turn id, and its
    submission is handled from the raw interaction (:func:`handle_submission`), so a modal
    opened before a restart is still answered after it."""
    modal = discord.ui.Modal(
        title=texts.REPLY_MODAL_TITLE,
        timeout=None,
        custom_id=f"{MODAL_PREFIX}{turn_id}",
    )
    modal.add_item(
        discord.ui.TextInput(
            label=texts.REPLY_FIELD_LABEL,
            style=discord.TextStyle.paragraph,
            custom_id=TEXT_ID,
            max_length=MODAL_TEXT_LIMIT,
        )
    )
    return modal


def _submitted_value(data: Any, custom_id: str) -> str | None:
    """The value of the input ``custom_id`` in a modal submission's components (rows of
    inputs, or labels holding one)."""
    if isinstance(data, dict):
        if data.get("custom_id") == custom_id and "value" in data:
            return str(data["value"])
        children = [*data.get("components", ()), data.get("component")]
        return next(
            (v for c in children if (v := _submitted_value(c, custom_id)) is not None), None
        )
    if isinstance(data, list):
        return next((v for c in data if (v := _submitted_value(c, custom_id)) is not None), None)
    return None


def handle_submission(interaction: discord.Interaction) -> bool:
    """When ``interaction`` submits a Reply modal, answer it (in the bot's own task, so a
    shutdown drains it like any turn) and return True."""
    if interaction.type is not discord.InteractionType.modal_submit or interaction.data is None:
        return False
    match = _MODAL_RE.fullmatch(str(interaction.data.get("custom_id", "")))
    if match is None:
        return False
    text = _submitted_value(interaction.data.get("components", []), TEXT_ID) or ""
    turn_id = int(match["turn"])
    context_of(interaction).spawn(
        telling_failures(interaction, _submitted(interaction, turn_id, text)),
        name=f"reply-{interaction.id}",
    )
    return True


async def _submitted(interaction: discord.Interaction, turn_id: int, text: str) -> None:
    asker = context_of(interaction)
    text = text.strip()
    if not text:
        await ephemeral(interaction, texts.EMPTY_REPLY)
        return
    # Who may continue first: a refused submission counts nothing against the quotas.
    turn = await _continued(asker, interaction, turn_id)
    if turn is None:
        return
    admission = await asker.gate.admit_interaction(interaction)
    if not isinstance(admission, Admission):
        await ephemeral(interaction, admission.text)
        return
    message = interaction.message
    private = message.flags.ephemeral if message is not None else True
    log.info("turn %s: reply through interaction %s", turn_id, interaction.id)
    await answer_through(
        asker,
        interaction,
        admission,
        text=text,
        scope_id=turn.reply_channel_id,
        ephemeral=answer_is_ephemeral(interaction, private),
    )


async def _continued(
    asker: BotContext, interaction: discord.Interaction, turn_id: int
) -> Turn | None:
    """The turn a Reply press or submission continues from, once the person may continue its
    conversation (the rule of Stop and Retry, against the stored conversation: the turn id
    comes from a custom id, which a client can forge); else the refusal is the answer."""
    turn = await asker.turns.find_turn(turn_id)
    if turn is None or not is_interaction_scope(turn.reply_channel_id):
        await ephemeral(interaction, texts.CONVERSATION_GONE)
        return None
    if await controlled(asker.conversations, interaction, turn) is None:
        log.info("turn %s: reply refused to user %s", turn_id, interaction.user.id)
        await ephemeral(interaction, texts.only_controller("continue this conversation"))
        return None
    return turn


class ReplyButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"seed:reply:(?P<turn>\d+)"
):
    def __init__(self, turn_id: int) -> None:
        super().__init__(
            button(f"seed:reply:{turn_id}", texts.REPLY_LABEL, "💬", discord.ButtonStyle.primary)
        )
        self.turn_id = turn_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ReplyButton:
        return cls(int(match["turn"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        asker = context_of(interaction)
        refusal = await asker.gate.check_interaction(interaction)
        if refusal is not None:
            await ephemeral(interaction, refusal.text)
            return
        turn = await _continued(asker, interaction, self.turn_id)
        if turn is None:
            return
        modal = reply_modal(turn.id)
        await interaction.response.send_modal(modal)
        modal.stop()  # its submission is handled statelessly: see handle_submission


def reply_view(turn_id: int) -> discord.ui.View:
    return view_with(ReplyButton(turn_id))
