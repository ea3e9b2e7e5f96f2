"""How one config key is declared (default, one line of documentation, an extra check),
how a TOML or environment value becomes its type, and how a section of them is read. The
sections themselves, and the whole file, are :mod:`bot.config`."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Any, Literal, get_args, get_origin

from bot.domain.params import Kind, Param
from bot.urls import mask_password

ENV_PREFIX = "SEED_BOT_"


class Secret:
    """A credential that never shows itself in a repr, a log line or an exception."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


Check = Callable[[Any], str | None]


def opt(default: Any, doc: str, check: Check | None = None) -> Any:
    """A config field: its default, one line of documentation, an optional extra check that
    returns a problem description or None."""
    return field(default=default, metadata={"doc": doc, "check": check})


def doc_of(f: dataclasses.Field[Any]) -> str:
    param: Param | None = f.metadata.get("param")
    return param.doc if param is not None else str(f.metadata.get("doc", ""))


def check_of(f: dataclasses.Field[Any]) -> Check | None:
    """A field's extra check; a generation parameter's is its declared range."""
    param: Param | None = f.metadata.get("param")
    if param is None:
        check: Check | None = f.metadata.get("check")
        return check
    return in_range(*param.bounds) if param.kind in (Kind.WHOLE, Kind.NUMBER) else None


def opt_list(doc: str, default: tuple[str, ...] = ()) -> Any:
    return field(default=default, metadata={"doc": doc, "check": None})


def ids(doc: str) -> Any:
    """A list of Discord ids (users, roles, channels, servers, shards)."""
    return field(default=(), metadata={"doc": doc, "check": snowflakes})


def in_range(lo: float, hi: float) -> Check:
    def check(v: Any) -> str | None:
        return None if lo <= v <= hi else f"must be between {lo} and {hi}"

    return check


def positive(v: Any) -> str | None:
    return None if v > 0 else "must be greater than 0"


def non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be 0 or more"


def snowflake_or_empty(v: Any) -> str | None:
    return None if v == "" or (v.isdigit() and len(v) <= 20) else "must be a Discord id (digits)"


def snowflakes(v: Any) -> str | None:
    bad = [x for x in v if not (x.isdigit() and len(x) <= 20)]
    return f"has entries that are not Discord ids: {', '.join(bad)}" if bad else None


# How a number is read: what a TOML value may be, and what it must be (in a problem).
_NUMBERS: dict[Any, tuple[Any, str]] = {
    int: (int, "a whole number"),
    float: (int | float, "a number"),
}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return describe(inner[0]) + " (or unset)"
    if origin is tuple:
        return "a list of strings"
    return {
        str: "a string",
        int: "a whole number",
        float: "a number",
        bool: "true or false",
        Secret: "a string",
    }.get(tp, str(tp))


def coerce(tp: Any, raw: Any, from_env: bool) -> Any:
    """Turn a TOML or environment value into ``tp``; raise ValueError with the problem."""
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in get_args(tp) if a is not type(None)]
        if raw is None or (from_env and raw == ""):
            return None
        return coerce(inner[0], raw, from_env)
    if origin is Literal:
        allowed = get_args(tp)
        if raw not in allowed:
            raise ValueError(f"must be {describe(tp)}")
        return raw
    if origin is tuple:
        if from_env and isinstance(raw, str):
            return tuple(x.strip() for x in raw.split(",") if x.strip())
        if not isinstance(raw, list) or not all(isinstance(x, str | int) for x in raw):
            raise ValueError("must be a list of strings")
        return tuple(str(x) for x in raw)
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if from_env and isinstance(raw, str) and raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise ValueError("must be true or false")
    if tp in _NUMBERS:
        accepted, what = _NUMBERS[tp]
        if from_env and isinstance(raw, str):
            try:
                return tp(raw)
            except ValueError:
                raise ValueError(f"must be {what}") from None
        # TOML's true is not a number, though Python's bool is an int.
        if isinstance(raw, bool) or not isinstance(raw, accepted):
            raise ValueError(f"must be {what}")
        return tp(raw)
    if tp is Secret:
        if not isinstance(raw, str):
            raise ValueError("must be a string")
        return Secret(raw.strip())
    if tp is str:
        if not isinstance(raw, str):
            raise ValueError("must be a string")
        return raw
    raise TypeError(f"unsupported config type {tp!r}")  # a bug in this module, not the file


def show(value: Any, secret: bool) -> str:
    if secret:
        return "(hidden)"
    # Masked before clipping: a clipped URL could otherwise show the start of its password.
    text = mask_password(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


def build_section(
    name: str,
    cls: type[Any],
    table: Mapping[str, Any],
    env: Mapping[str, str],
    problems: list[str],
) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in known:
            problems.append(f"[{name}] {key}: unknown key (known keys: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        secret = tp is Secret
        env_name = f"{ENV_PREFIX}{name}__{f.name}".upper()
        sources: list[tuple[str, Any, bool]] = []
        if f.name in table:
            sources.append((f"[{name}] {f.name}", table[f.name], False))
        if env_name in env:
            sources.append((f"{env_name}", env[env_name], True))
        if not sources:
            continue
        where, raw, from_env = sources[-1]
        try:
            value = coerce(tp, raw, from_env)
        except ValueError as exc:
            problems.append(f"{where} = {show(raw, secret)}: {exc}; expected {describe(tp)}")
            continue
        check = check_of(f)
        if value is not None and check is not None and (msg := check(value)):
            problems.append(f"{where} = {show(raw, secret)}: {msg}")
            continue
        values[f.name] = value
    return cls(**values)


def example_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{x}"' for x in value) + "]"
    return repr(value)


def secret_from_env(env: Mapping[str, str], *names: str) -> Secret | None:
    if len(names) == 1:
        value = env.get(names[0], "").strip()
        return Secret(value) if value else None
    parts = [env.get(n, "").strip() for n in names]
    return Secret(":".join(parts)) if all(parts) else None
