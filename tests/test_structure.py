"""The shape of the code: ``bot/`` imports in one direction. Every import counts, wherever it
stands (inside a function, or under ``TYPE_CHECKING``): a lazy import must not hide a circle."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bot"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str], root: Path = ROOT) -> set[str]:
    """The modules of ``bot`` that ``path`` imports (``from bot.x import y`` counts as
    ``bot.x.y`` when that is a module, else ``bot.x``)."""
    found: set[str] = set()
    this = module_name(path, root)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
    return {m for m in found if m in modules and m != this}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "bot" / "x.py"
    source.parent.mkdir()
    source.write_text("def f():\n    from bot import y\n    import bot.z\n")
    found = imports_of(source, {"bot", "bot.x", "bot.y", "bot.z"}, tmp_path)
    assert found == {"bot.y", "bot.z"}


def test_bot_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 20  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        ("bot.chat.texts", "bot.chat.delivery"),
        ("bot.chat.splitter", "bot.chat.texts"),
        ("bot.chat.delivery", "bot.chat.controls"),
        ("bot.chat.delivery", "bot.chat.inbound"),
        ("bot.chat.inbound", "bot.chat.bot"),
        ("bot.chat.commands", "bot.chat.bot"),
        ("bot.chat.controls", "bot.chat.commands"),
    ],
)
def test_the_discord_layer_imports_downwards(lower: str, upper: str) -> None:
    """A lower room never reaches up: rendering knows no delivery, delivery no buttons,
    nothing below the bot class knows it."""
    graph = import_graph()
    reachable: set[str] = set()
    todo = [lower]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in reachable:
                reachable.add(nxt)
                todo.append(nxt)
    assert upper not in reachable


def test_every_package_of_bot_is_installed() -> None:
    """The README's first command installs with ``pip install .`` (not editable): a package
    of ``bot/`` missing from pyproject's list is left out of the install, and the bot fails
    to start on a fresh machine while every test (on the editable install) passes."""
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {module_name(init.parent / "__init__.py") for init in PACKAGE.rglob("__init__.py")}
    assert found - listed == set()
