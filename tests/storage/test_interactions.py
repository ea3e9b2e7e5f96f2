"""The kept interactions (``InteractionStore``) on SQLite and PostgreSQL: a sealed token is
kept as given (binary, any byte), replaced, dropped, and expired ones purged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.domain.models import StoredInteraction
from bot.storage import Repositories


def whole_seconds_now() -> datetime:
    """Now, in whole seconds (what every backend stores exactly). Taken by each test: the
    store drops what expired by the real clock, and a test may run minutes after import."""
    return datetime.now(UTC).replace(microsecond=0)


def kept(
    interaction_id: str, expires_at: datetime, sealed: bytes = b"\x00\xff sealed"
) -> StoredInteraction:
    return StoredInteraction(
        interaction_id=interaction_id,
        application_id="1300000000000000001",
        user_id="1100000000000000001",
        sealed_token=sealed,
        ephemeral=True,
        expires_at=expires_at,
    )


async def test_an_interaction_is_kept_replaced_and_dropped(store: Repositories) -> None:
    interactions = store.interactions
    now = whole_seconds_now()
    first = kept("1400000000000000001", now + timedelta(minutes=15))
    await interactions.keep_interaction(first)
    assert await interactions.stored_interaction(first.interaction_id) == first
    again = kept(first.interaction_id, now + timedelta(minutes=14), bytes(range(256)))
    await interactions.keep_interaction(again)
    assert await interactions.stored_interaction(first.interaction_id) == again
    await interactions.drop_interaction(first.interaction_id)
    assert await interactions.stored_interaction(first.interaction_id) is None
    await interactions.drop_interaction(first.interaction_id)  # nothing kept is fine


async def test_expired_interactions_are_purged(store: Repositories) -> None:
    interactions = store.interactions
    now = whole_seconds_now()
    old = kept("1400000000000000001", now + timedelta(minutes=1))
    live = kept("1400000000000000002", now + timedelta(minutes=3))
    await interactions.keep_interaction(old)
    await interactions.keep_interaction(live)
    assert await interactions.drop_expired_interactions(now + timedelta(minutes=2)) == 1
    assert await interactions.stored_interaction(old.interaction_id) is None
    assert await interactions.stored_interaction(live.interaction_id) == live


def test_the_sealed_token_is_not_in_the_repr() -> None:
    assert "sealed" not in repr(kept("1", whole_seconds_now(), b"sealed bytes"))


async def test_keeping_one_drops_the_expired_ones(store: Repositories) -> None:
    interactions = store.interactions
    now = datetime.now(UTC)
    old = kept("1400000000000000001", now - timedelta(seconds=1))
    await interactions.keep_interaction(old)
    new = kept("1400000000000000002", now + timedelta(minutes=15))
    await interactions.keep_interaction(new)
    assert await interactions.stored_interaction(old.interaction_id) is None
    assert await interactions.stored_interaction(new.interaction_id) == new
