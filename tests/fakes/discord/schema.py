"""Runtime validation of wire payloads against discord.py's own ``discord/types`` TypedDicts.

discord.py only imports ``discord.types`` under ``TYPE_CHECKING``: at runtime the package has
circular imports (``message`` -> ``channel`` -> ``threads`` -> ``message``) and cannot be imported
in any order. This module loads it anyway, with an import shim that lets a partially
initialised module hand out a forward reference for a name it has not defined yet; once every
module is loaded the forward references are replaced by the real objects. Nothing of discord.py
is modified: its source is executed as is, into fresh module objects.

The validator is strict where the fake is concerned: required keys must be present, values
must have the annotated types (``bool`` is not an ``int``), and keys the TypedDict does not
declare are reported too, since in a payload built by the fake they can only be typos.

Usage::

    from tests.fakes.discord.schema import validate, schema_type

    validate(payload, schema_type("message.Message"))   # raises PayloadError
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import pkgutil
import sys
import threading
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ForwardRef, Literal, NotRequired, Required, Union

import discord  # noqa: F401  (discord.types needs the discord package initialised)

__all__ = ["PayloadError", "schema_type", "validate"]


class PayloadError(ValueError):
    """A payload does not match the discord.py TypedDict it is sent as."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems[:10]))


#: Keys discord.py reads from a payload although its TypedDict does not declare them
#: (it uses ``# type: ignore`` there), with the type they must have.
_INTERACTION_EXTRAS: dict[str, Any] = {
    "member": "member.Member",
    "user": "user.User",
    "message": "message.Message",
}
#: ``List[Dict[Literal['message'], MessageSnapshot]]``, as discord.py annotates the argument.
_SNAPSHOT: Any = ForwardRef("MessageSnapshot")
_SNAPSHOTS: Any = list[dict[Literal["message"], _SNAPSHOT]]
KNOWN_UNDECLARED: dict[str, dict[str, Any]] = {
    **{
        name: _INTERACTION_EXTRAS
        for name in (
            "PingInteraction",
            "ApplicationCommandInteraction",
            "MessageComponentInteraction",
            "ModalSubmitInteraction",
        )
    },
    # A forward's snapshots: discord.py reads ``message_snapshots`` (``Message.__init__``)
    # without declaring it on the TypedDict.
    "Message": {"message_snapshots": _SNAPSHOTS},
    # Discord sends (and discord.py sends) ``required`` on every value option, but these
    # TypedDicts derive from the base without it.
    **{
        name: {"required": bool}
        for name in (
            "_StringApplicationCommandOption",
            "_IntegerApplicationCommandOption",
            "_NumberApplicationCommandOption",
            "_ChannelApplicationCommandOptionChoice",
        )
    },
}

#: discord.py types a message's components as ``List[ComponentBase]`` (just ``type``/``id``);
#: check them against the full component union instead.
SUBSTITUTES: dict[str, str] = {"ComponentBase": "components.Component"}

_lock = threading.Lock()
_modules: dict[str, types.ModuleType] | None = None
_hints_cache: dict[type, dict[str, tuple[Any, bool]]] = {}


def _forward_getattr(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return ForwardRef(name)


class _ShimLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        # PEP 562: ``from .partial import Name`` falls back to the module's __getattr__.
        module.__dict__["__getattr__"] = _forward_getattr
        try:
            self._inner.exec_module(module)
        finally:
            module.__dict__.pop("__getattr__", None)


class _ShimFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("discord.types."):
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec: importlib.machinery.ModuleSpec | None = find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _ShimLoader(spec.loader)
                return spec
        return None


def _load() -> dict[str, types.ModuleType]:
    global _modules
    with _lock:
        if _modules is not None:
            return _modules
        import discord.types as package

        finder = _ShimFinder()
        sys.meta_path.insert(0, finder)
        try:
            names = [info.name for info in pkgutil.iter_modules(package.__path__)]
            mods = {n: importlib.import_module(f"discord.types.{n}") for n in names}
        finally:
            sys.meta_path.remove(finder)
        # Replace the forward references handed out during the cycle by the real objects.
        for mod in mods.values():
            for key, value in list(vars(mod).items()):
                if type(value) is ForwardRef:
                    real = _find_definition(mods, value.__forward_arg__, exclude=mod)
                    if real is not None:
                        setattr(mod, key, real)
        _modules = mods
        return mods


def _find_definition(
    mods: Mapping[str, types.ModuleType], name: str, exclude: types.ModuleType | None = None
) -> Any:
    preferred = [m for m in mods.values() if m is not exclude]
    for mod in preferred:
        value = vars(mod).get(name)
        if value is not None and type(value) is not ForwardRef and _defined_in(value, mod):
            return value
    for mod in preferred:
        value = vars(mod).get(name)
        if value is not None and type(value) is not ForwardRef:
            return value
    if name in ("NotRequired", "Required"):
        return NotRequired if name == "NotRequired" else Required
    return None


def _defined_in(value: Any, mod: types.ModuleType) -> bool:
    return getattr(value, "__module__", None) == mod.__name__


def schema_type(dotted: str) -> Any:
    """The discord.py type ``module.Name`` from ``discord/types`` (e.g. ``"message.Message"``)."""
    mods = _load()
    module_name, _, name = dotted.partition(".")
    return getattr(mods[module_name], name)


def _type_hints(td: type) -> dict[str, tuple[Any, bool]]:
    """Key -> (type, required) for a TypedDict.

    ``__required_keys__`` is right except for keys wrapped in ``NotRequired``/``Required``
    inside string annotations (modules using ``from __future__ import annotations``), which
    Python cannot see at class creation; the resolved hints show those wrappers.
    """
    cached = _hints_cache.get(td)
    if cached is not None:
        return cached
    hints = _resolved_hints(td, _load())
    required_keys: frozenset[str] = getattr(td, "__required_keys__", frozenset())
    result: dict[str, tuple[Any, bool]] = {}
    for key, hint in hints.items():
        required = key in required_keys
        origin = typing.get_origin(hint)
        while origin in (Required, NotRequired, typing.Annotated):
            if origin is Required:
                required = True
            elif origin is NotRequired:
                required = False
            hint = typing.get_args(hint)[0]
            origin = typing.get_origin(hint)
        result[key] = (hint, required)
    _hints_cache[td] = result
    return result


def _resolved_hints(klass: type, mods: Mapping[str, types.ModuleType]) -> dict[str, Any]:
    module = sys.modules[klass.__module__]
    for _ in range(20):
        try:
            return typing.get_type_hints(klass, include_extras=True)
        except NameError as exc:
            # A name imported only under TYPE_CHECKING in discord.py: provide it.
            missing = exc.name
            real = _find_definition(mods, missing) if missing else None
            if real is None or missing is None:
                raise
            setattr(module, missing, real)
    raise RuntimeError(f"cannot resolve the annotations of {klass!r}")


def validate(value: Any, tp: Any, *, path: str = "$", extra_keys: bool = False) -> None:
    """Raise :class:`PayloadError` unless ``value`` matches the type ``tp``.

    ``extra_keys=True`` tolerates keys a TypedDict does not declare.
    """
    problems: list[str] = []
    _check(value, tp, path, problems, extra_keys)
    if problems:
        raise PayloadError(problems)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check(value: Any, tp: Any, path: str, problems: list[str], extra_keys: bool) -> None:
    if type(tp) is ForwardRef:
        tp = schema_type_any(tp.__forward_arg__)
    if tp is Any or tp is object:
        return
    if tp is None or tp is type(None):
        if value is not None:
            problems.append(f"{path}: expected null, got {_describe(value)}")
        return
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Required, NotRequired, typing.Annotated):
        _check(value, args[0], path, problems, extra_keys)
        return
    if origin is Union or origin is types.UnionType:
        best: list[str] | None = None
        for option in args:
            attempt: list[str] = []
            _check(value, option, path, attempt, extra_keys)
            if not attempt:
                return
            if best is None or len(attempt) < len(best):
                best = attempt
        if best is None:
            best = [f"{path}: no union member matches {_describe(value)}"]
        elif len(args) > 2:
            best = [f"{path}: matches none of {len(args)} union members; closest: {best[0]}"]
        problems.extend(best)
        return
    if origin is Literal:
        if not any(type(value) is type(a) and value == a for a in args):
            problems.append(f"{path}: expected one of {list(args)!r}, got {_describe(value)}")
        return
    if origin in (list, Sequence, typing.List):  # noqa: UP006
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {_describe(value)}")
            return
        (item_type,) = args or (Any,)
        for index, item in enumerate(value):
            _check(item, item_type, f"{path}[{index}]", problems, extra_keys)
        return
    if origin in (dict, Mapping, typing.Dict):  # noqa: UP006
        if not isinstance(value, dict):
            problems.append(f"{path}: expected an object, got {_describe(value)}")
            return
        key_type, value_type = args or (Any, Any)
        for key, item in value.items():
            _check(key, key_type, f"{path}.<key {key!r}>", problems, extra_keys)
            _check(item, value_type, f"{path}.{key}", problems, extra_keys)
        return
    if (
        isinstance(tp, type)
        and tp.__name__ in SUBSTITUTES
        and tp.__module__.startswith("discord.types")
    ):
        _check(value, schema_type(SUBSTITUTES[tp.__name__]), path, problems, extra_keys)
        return
    if isinstance(tp, type) and typing.is_typeddict(tp):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected {tp.__name__} object, got {_describe(value)}")
            return
        hints = _type_hints(tp)
        undeclared = KNOWN_UNDECLARED.get(tp.__name__, {})
        for key, (hint, required) in hints.items():
            if key in value:
                _check(value[key], hint, f"{path}.{key}", problems, extra_keys)
            elif required:
                problems.append(f"{path}: missing required key {key!r} of {tp.__name__}")
        for key in value:
            if key in hints:
                continue
            if key in undeclared:
                expected = undeclared[key]
                if isinstance(expected, str):
                    expected = schema_type(expected)
                _check(value[key], expected, f"{path}.{key}", problems, extra_keys)
            elif not extra_keys:
                problems.append(f"{path}: key {key!r} is not part of {tp.__name__}")
        return
    if tp is bool:
        if type(value) is not bool:
            problems.append(f"{path}: expected bool, got {_describe(value)}")
        return
    if tp is int:
        if type(value) is not int:
            problems.append(f"{path}: expected int, got {_describe(value)}")
        return
    if tp is float:
        if type(value) not in (int, float):
            problems.append(f"{path}: expected number, got {_describe(value)}")
        return
    if tp is str:
        if type(value) is not str:
            problems.append(f"{path}: expected string, got {_describe(value)}")
        return
    if isinstance(tp, type):
        if not isinstance(value, tp):
            problems.append(f"{path}: expected {tp.__name__}, got {_describe(value)}")
        return
    problems.append(f"{path}: cannot check against {tp!r}")


def schema_type_any(name: str) -> Any:
    """Resolve a bare TypedDict name left as a forward reference (rare)."""
    real = _find_definition(_load(), name)
    if real is None:
        raise PayloadError([f"unknown type {name!r}"])
    return real


def validator(dotted: str) -> Callable[[Any], None]:
    """A function that validates a payload against ``discord/types`` type ``dotted``."""
    tp = schema_type(dotted)

    def check(value: Any) -> None:
        validate(value, tp)

    return check
