"""Admission tickets for tests that drive the service directly: issued by the real
admission check, with open access lists and no budgets or quotas."""

from __future__ import annotations

from bot.domain.access import AccessPolicy, Requester
from bot.domain.admission import Admission, admit
from bot.domain.models import Payer


async def ticket(user_id: str = "1", guild_id: str | None = None) -> Admission:
    """A ticket for ``user_id`` (who pays)."""
    payer = Payer(user_id, guild_id)
    return await admit(AccessPolicy(), Requester(user_id), payer, budgets=None, quotas=None)
