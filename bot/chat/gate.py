"""The one gate every way in passes: messages, edits, slash commands and buttons. It applies
the access lists and, for whatever makes a model call, the dollar budgets and the quotas
(``admit``: the checks of bot/domain/admission.py, whose ticket ``respond``/``redo`` require;
here a refusal becomes the text to show); and it holds the rule of who may control a
conversation (who started it, the owner of its thread, or members who may manage threads).
A budget with nothing left refuses here; the turn's worst case is reserved against the
budgets just before its submit (the turn runner, through the same ``Budgets``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import discord

from bot.chat import convert, texts
from bot.domain.access import AccessPolicy, Requester
from bot.domain.admission import Admission, admit
from bot.domain.costs import Budgets
from bot.domain.errors import AccessDenied, BudgetExceeded, QuotaExceeded
from bot.domain.models import Payer
from bot.domain.notices import DAY_SECONDS, NoticeReason, RefusalNotices, seconds_until
from bot.domain.observer import NO_OBSERVER, TurnObserver
from bot.domain.quotas import Quotas

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GateRules:
    access: AccessPolicy = field(default_factory=AccessPolicy)
    # "notice": a refused message gets a short reply; "quiet": nothing (interactions are
    # always answered, privately, since Discord requires an answer).
    denied_reply: str = "notice"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the gate refused, as the text to show, and whether a message may be answered;
    ``reason`` and ``window_seconds``: how often a person is told (once per window)."""

    text: str
    silent: bool = False
    reason: NoticeReason = NoticeReason.ACCESS
    window_seconds: float = DAY_SECONDS


class Gate:
    def __init__(
        self,
        quotas: Quotas,
        rules: GateRules,
        *,
        observer: TurnObserver = NO_OBSERVER,
        budgets: Budgets | None = None,
        notices: RefusalNotices | None = None,
    ) -> None:
        self.quotas = quotas
        self.rules = rules
        self.budgets = budgets
        self._observer = observer
        self.notices = notices if notices is not None else RefusalNotices()

    async def check(
        self,
        user: discord.abc.User,
        channel: object,
        guild_id: int | None,
        who: Requester | None = None,
    ) -> Refusal | None:
        """None when ``user`` may act here without a model call (the access lists alone); a
        refusal otherwise. ``who``: the requester as the access lists see it, when the caller
        knows more than ``user``, ``channel`` and ``guild_id`` tell (an interaction from a
        server without the bot)."""
        admission = await self._admit(user, channel, guild_id, who, model_call=False)
        return admission if isinstance(admission, Refusal) else None

    async def admit(
        self,
        user: discord.abc.User,
        channel: object,
        guild_id: int | None,
        who: Requester | None = None,
    ) -> Admission | Refusal:
        """The ticket a model call needs, or a refusal: the access lists, the budgets and the
        quotas, as :func:`bot.domain.admission.admit` (a refusal by the access lists or a
        budget counts nothing against the quotas). ``user`` pays."""
        return await self._admit(user, channel, guild_id, who, model_call=True)

    async def _admit(
        self,
        user: discord.abc.User,
        channel: object,
        guild_id: int | None,
        who: Requester | None,
        *,
        model_call: bool,
    ) -> Admission | Refusal:
        who = who or convert.requester(user, channel, guild_id)
        payer = Payer(str(user.id), str(guild_id) if guild_id else None)
        try:
            return await admit(
                self.rules.access,
                who,
                payer,
                budgets=self.budgets if model_call else None,
                quotas=self.quotas if model_call else None,
            )
        except AccessDenied as exc:
            log.info("user %s refused by the access lists", user.id)
            self._observer.turn_refused("access")
            return Refusal(texts.denied(str(exc)), silent=self.rules.denied_reply == "quiet")
        except BudgetExceeded as exc:
            log.info("user %s refused by the %s %s budget", user.id, exc.scope, exc.period)
            self._observer.turn_refused("budget")
            now = self.budgets.now() if self.budgets is not None else exc.resets_at
            lasts = seconds_until(exc.resets_at, now)
            return Refusal(texts.error_text(exc), reason=NoticeReason.BUDGET, window_seconds=lasts)
        except QuotaExceeded as exc:
            log.info("user %s refused by the %s quota", user.id, exc.scope)
            self._observer.turn_refused("quota")
            window = self.quotas.window_seconds(exc.scope)
            return Refusal(texts.error_text(exc), reason=NoticeReason.QUOTA, window_seconds=window)

    async def admit_message(
        self, message: discord.Message, *, notice: bool = True
    ) -> Admission | Refusal:
        """As ``admit``, for a message: a refusal is silent unless it is the first of its
        reason for this person within its window (a reply per refused message would let a
        few flooding accounts spend the bot's Discord request budget). ``notice=False``:
        nothing will be told whatever the answer (it counts as no notice)."""
        guild_id = message.guild.id if message.guild else None
        admission = await self.admit(message.author, message.channel, guild_id)
        if isinstance(admission, Admission) or not notice:
            return admission
        return self._once(message.author, admission)

    def dms_off(self, user: discord.abc.User) -> Refusal:
        """A DM while DMs are off: told once a day per person, then silence."""
        return self._once(user, Refusal(texts.DM_REFUSAL, reason=NoticeReason.DMS_OFF))

    def _once(self, user: discord.abc.User, refusal: Refusal) -> Refusal:
        if refusal.silent:
            return refusal
        if self.notices.tell(str(user.id), refusal.reason, refusal.window_seconds):
            return refusal
        log.debug("user %s refused again (%s): not told again", user.id, refusal.reason)
        return replace(refusal, silent=True)

    async def check_interaction(self, interaction: discord.Interaction) -> Refusal | None:
        """As ``check``, for an interaction that makes no model call."""
        return await self.check(*_asking(interaction))

    async def admit_interaction(self, interaction: discord.Interaction) -> Admission | Refusal:
        """As ``admit``, for an interaction: the person who interacts pays."""
        return await self.admit(*_asking(interaction))


def _asking(
    interaction: discord.Interaction,
) -> tuple[discord.abc.User, object, int | None, Requester]:
    """An interaction as the gate's arguments: who, where, in which server, and the requester
    as the access lists see it (from a server without the bot, it counts as outside)."""
    return (
        interaction.user,
        interaction.channel,
        interaction.guild_id,
        convert.interaction_requester(interaction),
    )


def may_control(
    interaction: discord.Interaction,
    owner_id: str,
    *,
    place_id: str | None = None,
    author_id: str | None = None,
) -> bool:
    """The one rule of who may control a conversation (settings, /reset, /export, Stop,
    Retry, Reply): the person who started it (``owner_id``), for a turn its author
    (``author_id``), the owner of the thread it lives in, or in a server a member who may
    manage threads. ``place_id`` is the channel the conversation lives in, when the caller
    found it from an id the interaction carries (a custom id can be forged): the thread
    owner's and Manage Threads' rights count only there, since the interaction's permissions
    are the ones of the channel it comes from."""
    user = str(interaction.user.id)
    if user in (owner_id, author_id):
        return True
    if place_id is not None and str(interaction.channel_id) != place_id:
        return False
    channel = interaction.channel
    if isinstance(channel, discord.Thread) and str(channel.owner_id) == user:
        return True
    return interaction.guild_id is not None and interaction.permissions.manage_threads
