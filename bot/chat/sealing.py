"""Interaction tokens sealed for the database: whoever holds one may post as the bot on that
interaction for 15 minutes, so a stored token is encrypted (AES-GCM) under a key derived
from the bot's Discord token, which never goes into the database, and bound to its
interaction id (a sealed token copied onto another row does not open)."""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# Separates this key from any other use of the bot token (and names the format's version).
_KEY_PURPOSE = b"seed-bot interaction token seal v1"
_NONCE_BYTES = 12


class TokenSeal:
    """Seals and opens interaction tokens with a key derived from ``secret``."""

    __slots__ = ("_aead",)

    def __init__(self, secret: str) -> None:
        key = hmac.new(secret.encode(), _KEY_PURPOSE, hashlib.sha256).digest()
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "TokenSeal(<hidden>)"

    def seal(self, token: str, interaction_id: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, token.encode(), interaction_id.encode())

    def open(self, sealed: bytes, interaction_id: str) -> str | None:
        """The token, or None when ``sealed`` does not open (another key: the bot token
        changed since; or not sealed for this interaction)."""
        nonce, body = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, body, interaction_id.encode()).decode()
        except (InvalidTag, ValueError):
            return None
