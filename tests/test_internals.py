"""The libraries' private parts, each in one module (bot/internals.py): every probe passes
on the releases installed, fails with one clear line when forced off, outside the checked
releases or when a part is gone, and pyproject.toml allows exactly the checked releases."""

from __future__ import annotations

import ast
import importlib
import logging
import re
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from types import ModuleType

import aiosqlite
import discord
import pytest
from discord.http import HTTPClient
from sqlalchemy import create_engine
from sqlalchemy.pool import Pool, QueuePool

from bot import internals
from bot.chat import discord_internals
from bot.storage import aiosqlite_internals, sqlalchemy_internals

ROOT = Path(__file__).resolve().parents[1]
MODULES = (aiosqlite_internals, sqlalchemy_internals, discord_internals)


@pytest.fixture(autouse=True)
def probed_afresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test probes anew, without the switch, and leaves no probe result behind."""
    monkeypatch.delenv(internals.FORCE_PUBLIC_API_ENV, raising=False)
    for module in MODULES:
        module.usable.cache_clear()
    yield
    for module in MODULES:
        module.usable.cache_clear()


def fallbacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bot.internals"]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.CHECKED.distribution)
def test_every_probe_passes_on_the_installed_release(
    module: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    # When this fails, a library changed what the bot reaches into: see the module.
    caplog.set_level(logging.INFO, logger="bot")
    assert module.CHECKED.problem() is None
    assert module.problem() is None
    assert module.usable()
    assert fallbacks(caplog) == []


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.CHECKED.distribution)
def test_forcing_the_public_api_fails_the_probe_with_one_line(
    module: ModuleType, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    monkeypatch.setenv(internals.FORCE_PUBLIC_API_ENV, "1")
    assert not module.usable()
    assert not module.usable()  # probed once
    [line] = fallbacks(caplog)
    assert line.startswith(f"{module.CHECKED.distribution}: private parts left alone (")
    assert internals.FORCE_PUBLIC_API_ENV in line


@pytest.mark.parametrize("value", ["", "0", "no", "off", "false"])
def test_the_switch_is_off_unless_set_to_a_yes(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(internals.FORCE_PUBLIC_API_ENV, value)
    assert not internals.forced_public()
    monkeypatch.setenv(internals.FORCE_PUBLIC_API_ENV, " Yes ")
    assert internals.forced_public()


def test_a_release_outside_the_checked_range_is_refused() -> None:
    checked = internals.Checked("aiosqlite", (0, 20), (0, 23))
    assert checked.problem("0.22.1") is None
    assert checked.problem("0.20.0") is None
    assert checked.problem("0.22.9rc1") is None
    assert checked.problem("0.23.0") == (
        "aiosqlite 0.23.0 is outside 0.20 to 0.23 (exclusive), the releases its probe was "
        "checked against"
    )
    assert checked.problem("0.19.9") is not None
    assert checked.problem("1.0") is not None
    assert internals.Checked("no-such-thing", (0,), (1,)).problem() is not None


def test_versions_are_read_as_their_leading_release() -> None:
    assert internals.parse_version("2.7.1") == (2, 7, 1)
    assert internals.parse_version("2.1.0b2") == (2, 1, 0)
    assert internals.parse_version("0.22.1.post1") == (0, 22, 1)
    assert internals.parse_version("2.0.30+local") == (2, 0, 30)


def test_a_newer_release_falls_back_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    monkeypatch.setattr(metadata, "version", lambda name: "0.23.0")
    assert not aiosqlite_internals.usable()
    [line] = fallbacks(caplog)
    assert "aiosqlite 0.23.0 is outside 0.20 to 0.23" in line
    assert "SQLAlchemy's public API" in line


@pytest.mark.parametrize(
    ("module", "owner", "name", "named"),
    [
        (aiosqlite_internals, aiosqlite.Connection, "_execute", "_execute"),
        (aiosqlite_internals, aiosqlite.Connection, "_conn", "_conn"),
        (sqlalchemy_internals, Pool, "_invalidate", "Pool._invalidate"),
        (discord_internals, HTTPClient, "_try_clear_expired_ratelimits", "HTTPClient."),
        (discord_internals, discord.Guild, "_add_thread", "Guild._add_thread"),
        (discord_internals, discord.Guild, "_remove_thread", "Guild._remove_thread"),
    ],
)
def test_a_private_part_gone_fails_the_probe_and_is_named(
    module: ModuleType,
    owner: type,
    name: str,
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    monkeypatch.delattr(owner, name)
    assert named in module.problem()
    assert not module.usable()
    [line] = fallbacks(caplog)
    assert named in line


def test_the_handle_exception_of_an_adapter_gone_fails_the_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection

    for owner in AsyncAdapt_asyncpg_connection.__mro__:  # its own and the one it inherits
        if "_handle_exception" in vars(owner):
            monkeypatch.delattr(owner, "_handle_exception")
    assert "AsyncAdapt_asyncpg_connection._handle_exception" in str(sqlalchemy_internals.problem())


def test_the_pool_overflow_is_read_only_when_the_probe_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = create_engine("sqlite://", poolclass=QueuePool, pool_size=3, max_overflow=4).pool
    assert sqlalchemy_internals.max_overflow(pool) == 4
    sqlalchemy_internals.usable.cache_clear()
    monkeypatch.setenv(internals.FORCE_PUBLIC_API_ENV, "1")
    assert sqlalchemy_internals.max_overflow(pool) == 0  # the gate then counts pool_size


def dependency_bounds() -> dict[str, tuple[str, str]]:
    """pyproject.toml's dependencies by name: their lower and upper bounds."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    bounds = {}
    for requirement in project["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement)
        low = re.search(r">=\s*([\d.]+)", requirement)
        high = re.search(r"<\s*([\d.]+)", requirement)
        assert name is not None
        bounds[name.group().lower()] = (
            low.group(1) if low else "",
            high.group(1) if high else "",
        )
    return bounds


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.CHECKED.distribution)
def test_pyproject_allows_exactly_the_checked_releases(module: ModuleType) -> None:
    checked = module.CHECKED
    low, high = dependency_bounds()[checked.distribution]
    assert internals.parse_version(low) == checked.low
    assert internals.parse_version(high) == checked.high


def test_an_adapter_module_gone_fails_the_probe_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.import_module

    def without_asyncpg_adapter(name: str, package: str | None = None) -> ModuleType:
        if name == "sqlalchemy.dialects.postgresql.asyncpg":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_asyncpg_adapter)
    assert "sqlalchemy.dialects.postgresql.asyncpg cannot be imported" in str(
        sqlalchemy_internals.problem()
    )


# A named tuple's own API (``_make``, ``_replace``…): public, despite the underscore.
NAMEDTUPLE_API = frozenset({"_make", "_replace", "_asdict", "_fields", "_field_defaults"})


def private_names_of_our_own(trees: dict[Path, ast.Module]) -> set[str]:
    """The underscored names bot/ defines itself: its functions, methods and attributes."""
    own: set[str] = set()
    for path, tree in trees.items():
        if path.name.endswith("_internals.py"):
            continue  # the names there are the libraries'
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id in ("self", "cls") and isinstance(node.ctx, ast.Store):
                    own.add(node.attr)
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
            ):
                own.update(
                    str(c.value) for c in ast.walk(node.value) if isinstance(c, ast.Constant)
                )
    return {name for name in own if name.startswith("_")}


def test_private_parts_of_libraries_are_reached_only_in_their_modules() -> None:
    # Library internals in one room: an underscored attribute of something that is not ours
    # is named in a *_internals.py module only (a getattr with a constant name counts too).
    trees = {p: ast.parse(p.read_text(encoding="utf-8")) for p in (ROOT / "bot").rglob("*.py")}
    own = private_names_of_our_own(trees) | NAMEDTUPLE_API
    found = []
    for path, tree in trees.items():
        if path.name.endswith("_internals.py"):
            continue
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Attribute) and not (
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            ):
                name = node.attr
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
            ):
                name = str(node.args[1].value)
            if name and name.startswith("_") and not name.startswith("__") and name not in own:
                where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
                found.append(f"{where}: {ast.unparse(node)}")
    assert found == [], "\n".join(found)
