"""Admission: the one check before a model call (the access lists, then the dollar budgets,
then the quotas, in that order), and the ticket it issues. ``respond`` and ``redo`` take an
``Admission`` as an argument and only :func:`admit` makes one, so an entry point that skips
the check does not type-check (the constructor wants this module's private key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import final

from bot.domain.access import AccessPolicy, Requester, denial_reason
from bot.domain.costs import Budgets
from bot.domain.errors import AccessDenied
from bot.domain.models import Payer
from bot.domain.quotas import Quotas


@final
class _Key:
    """Held by this module alone: what makes an ``Admission`` impossible to forge."""


_KEY = _Key()


@final
@dataclass(frozen=True, slots=True)
class Admission:
    """Proof that ``payer`` passed the access lists, budgets and quotas for one model call;
    ``payer`` is who pays for it (a Retry's presser, not the turn's author)."""

    payer: Payer
    key: _Key = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.key is not _KEY:
            raise TypeError("an Admission is issued by admit() only")


async def admit(
    access: AccessPolicy,
    who: Requester,
    payer: Payer,
    *,
    budgets: Budgets | None,
    quotas: Quotas | None,
) -> Admission:
    """Check ``who`` against the access lists, then ``payer``'s budgets (before the quotas,
    so that a refusal there counts no request against them), then count one request against
    the quotas. Raise ``AccessDenied`` (its message: why), ``BudgetExceeded`` or
    ``QuotaExceeded``; on success, the ticket."""
    reason = denial_reason(access, who)
    if reason is not None:
        raise AccessDenied(reason)
    if budgets is not None:
        await budgets.check(payer)
    if quotas is not None:
        await quotas.admit(payer.user_id, payer.guild_id)
    return Admission(payer, _KEY)
