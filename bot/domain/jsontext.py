"""JSON text of domain values, the one encoding both edges use (fal request bodies, the
database's JSON columns): compact, UTF-8, keys in their given order, non-string keys as
strings (as the standard library writes them), and a ``RawJson`` included as the text it
holds, never decoded and re-encoded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson

from bot.domain.models import RawJson

# Dataclasses (RawJson) go to _fallback rather than to orjson's own dataclass encoding.
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS


def _fallback(value: object) -> object:
    if isinstance(value, RawJson):
        return orjson.Fragment(value.text)
    # Containers of JsonValue may be any Mapping/Sequence (mapping proxies…); orjson only
    # knows dict, list and tuple natively.
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: object) -> bytes:
    """The JSON text of ``value`` as UTF-8 bytes."""
    if isinstance(value, RawJson):
        return value.text.encode()
    return orjson.dumps(value, default=_fallback, option=_OPTIONS)


def loads(text: bytes | str) -> object:
    """The value of JSON ``text`` (orjson: several times the standard library's speed on
    fal's results, which carry the whole conversation). Raises ``ValueError`` when it is
    not JSON."""
    return orjson.loads(text)
