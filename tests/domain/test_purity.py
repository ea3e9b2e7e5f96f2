"""The domain stays pure: no Discord, HTTP or SQL library reaches it."""

from __future__ import annotations

import ast
from pathlib import Path

import bot.domain

FORBIDDEN = ("discord", "aiohttp", "sqlalchemy", "alembic", "asyncpg", "aiosqlite", "yarl")


def test_domain_imports_no_edge_library() -> None:
    root = Path(bot.domain.__file__).parent
    offenders = []
    files = sorted(root.rglob("*.py"))
    assert len(files) >= 6  # the test sees the real package
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in FORBIDDEN or name.startswith(
                    ("bot.chat", "bot.fal", "bot.storage")
                ):
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []
