"""Interaction tokens sealed for the database open only with the same bot token and for the
interaction they were sealed for."""

from __future__ import annotations

from bot.chat.sealing import TokenSeal

TOKEN = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDEyMzQ1Njc4OnNlY3JldA"


def test_a_sealed_token_opens_with_the_same_key_for_the_same_interaction() -> None:
    seal = TokenSeal("bot-token")
    sealed = seal.seal(TOKEN, "123")
    assert TOKEN.encode() not in sealed
    assert seal.seal(TOKEN, "123") != sealed  # a fresh nonce each time
    assert seal.open(sealed, "123") == TOKEN
    assert TokenSeal("bot-token").open(sealed, "123") == TOKEN  # after a restart


def test_a_sealed_token_does_not_open_elsewhere() -> None:
    sealed = TokenSeal("bot-token").seal(TOKEN, "123")
    assert TokenSeal("another-bot-token").open(sealed, "123") is None
    assert TokenSeal("bot-token").open(sealed, "124") is None
    assert TokenSeal("bot-token").open(sealed[:-1], "123") is None
    assert TokenSeal("bot-token").open(b"", "123") is None
    assert "bot-token" not in repr(TokenSeal("bot-token"))
