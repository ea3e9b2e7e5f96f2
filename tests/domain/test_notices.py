"""Refusal notices: once per person, reason and window, in bounded memory; and quotas found
used up are refused from memory until they free up, without asking the database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.errors import QuotaExceeded
from bot.domain.models import Refusal
from bot.domain.notices import NoticeReason, RefusalNotices
from bot.domain.quotas import Quota, QuotaRules, Quotas


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_told_once_per_window_then_again_after_it() -> None:
    clock = Clock()
    notices = RefusalNotices(clock=clock)
    assert notices.tell("alice", NoticeReason.ACCESS, 60)
    assert not notices.tell("alice", NoticeReason.ACCESS, 60)
    clock.now += 59.9
    assert not notices.tell("alice", NoticeReason.ACCESS, 60)
    clock.now += 0.1
    assert notices.tell("alice", NoticeReason.ACCESS, 60)
    assert not notices.tell("alice", NoticeReason.ACCESS, 60)


def test_each_person_and_reason_is_told_on_its_own() -> None:
    notices = RefusalNotices(clock=Clock())
    assert notices.tell("alice", NoticeReason.ACCESS, 60)
    assert notices.tell("alice", NoticeReason.QUOTA, 60)
    assert notices.tell("alice", NoticeReason.BUDGET, 60)
    assert notices.tell("alice", NoticeReason.DMS_OFF, 60)
    assert notices.tell("bob", NoticeReason.ACCESS, 60)
    assert not notices.tell("alice", NoticeReason.QUOTA, 60)


def test_a_flood_of_distinct_people_keeps_the_memory_bounded() -> None:
    notices = RefusalNotices(capacity=100, clock=Clock())
    for n in range(10_000):
        assert notices.tell(f"user{n}", NoticeReason.ACCESS, 3600)
    assert len(notices) == 100
    # the most recent are remembered; the oldest made room (told once more at worst)
    assert not notices.tell("user9999", NoticeReason.ACCESS, 3600)
    assert notices.tell("user0", NoticeReason.ACCESS, 3600)


def test_a_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RefusalNotices(capacity=0)


# -- quotas used up are refused from memory ----------------------------------------------------

START = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


class CountingUsage:
    """A ``UsageStore`` that refuses every key in ``used_up`` until ``free_at``."""

    def __init__(self, used_up: set[str], free_at: datetime) -> None:
        self.used_up = used_up
        self.free_at = free_at
        self.calls = 0

    async def try_consume(
        self, keys: Sequence[tuple[str, int, int]], *, now: datetime
    ) -> Refusal | None:
        self.calls += 1
        refused = tuple(k for k, _, _ in keys if k.rsplit(":", 1)[0] in self.used_up)
        if refused and now < self.free_at:
            return Refusal(refused, self.free_at)
        return None


async def test_a_used_up_quota_is_refused_from_memory_until_it_frees_up() -> None:
    now = [START]
    store = CountingUsage({"user:1"}, START + timedelta(minutes=10))
    quotas = Quotas(store, QuotaRules(user=Quota(2, 3600)), now=lambda: now[0])
    for _ in range(5):
        with pytest.raises(QuotaExceeded) as refused:
            await quotas.admit("1", "9")
        assert (refused.value.scope, refused.value.retry_at) == ("user", store.free_at)
    assert store.calls == 1
    await quotas.admit("2", "9")  # someone else asks the database
    assert store.calls == 2
    now[0] = store.free_at
    await quotas.admit("1", "9")
    assert store.calls == 3


async def test_keys_used_up_together_are_remembered_together() -> None:
    now = [START]
    store = CountingUsage({"user:1", "guild:9"}, START + timedelta(minutes=10))
    rules = QuotaRules(user=Quota(2, 3600), guild=Quota(5, 3600))
    quotas = Quotas(store, rules, now=lambda: now[0])
    for _ in range(3):
        with pytest.raises(QuotaExceeded) as refused:
            await quotas.admit("1", "9")
        assert refused.value.scope == "server"
    assert store.calls == 1
    # either key alone may have freed up earlier: elsewhere, the database is asked
    store.used_up = set()
    await quotas.admit("1", "8")
    await quotas.admit("2", "9")
    assert store.calls == 3


async def test_new_rules_forget_what_was_used_up() -> None:
    store = CountingUsage({"user:1"}, START + timedelta(minutes=10))
    quotas = Quotas(store, QuotaRules(user=Quota(2, 3600)), now=lambda: START)
    with pytest.raises(QuotaExceeded):
        await quotas.admit("1", None)
    quotas.rules = QuotaRules(user=Quota(50, 3600))
    store.used_up = set()
    await quotas.admit("1", None)
    assert store.calls == 2
