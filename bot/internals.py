"""What the modules that reach into a library's private parts share: the switch that forces
the public API, the check of a library's version against the range its probe was checked
against, and the one log line when a library falls back.

Each library reached into has one module of its own (``bot/storage/aiosqlite_internals.py``,
``bot/storage/sqlalchemy_internals.py``, ``bot/chat/discord_internals.py``): the only place
its private attributes are named. Each runs a probe once, at start-up: when the probe fails
(a release outside the checked range, an attribute gone, or ``SEED_BOT_FORCE_PUBLIC_API``
set) the bot takes the library's public API instead, slower but correct.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

log = logging.getLogger(__name__)

#: Set to 1 (or true/yes/on) to take every library's public API, as when its probe fails:
#: how the tests run the storage suite on the fallback.
FORCE_PUBLIC_API_ENV = "SEED_BOT_FORCE_PUBLIC_API"
_TRUE = frozenset({"1", "true", "yes", "on"})

Version = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Checked:
    """The releases of ``distribution`` a probe was checked against: ``low`` <= version <
    ``high``. pyproject.toml bounds the dependency the same way (a test compares them)."""

    distribution: str
    low: Version
    high: Version

    def problem(self, installed: str | None = None) -> str | None:
        """Why the installed release is not one the probe was checked against, or None."""
        try:
            found = installed if installed is not None else metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            return f"{self.distribution} is not installed as a distribution"
        version = parse_version(found)
        if not self.low <= version < self.high:
            return (
                f"{self.distribution} {found} is outside {_dotted(self.low)} to "
                f"{_dotted(self.high)} (exclusive), the releases its probe was checked against"
            )
        return None


def parse_version(text: str) -> Version:
    """The leading numeric release of ``text`` ("2.7.1" -> (2, 7, 1), "0.22.0rc1" ->
    (0, 22, 0)): enough to place it in a range of final releases."""
    parts: list[int] = []
    for piece in text.split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
        if digits.end() != len(piece):
            break
    return tuple(parts)


def _dotted(version: Version) -> str:
    return ".".join(map(str, version))


def forced_public() -> bool:
    return os.environ.get(FORCE_PUBLIC_API_ENV, "").strip().lower() in _TRUE


def probe(
    library: str, checked: Checked, checks: Callable[[], str | None], *, fallback: str
) -> bool:
    """True when ``library``'s private parts may be used: not forced off, its version within
    ``checked``, and ``checks`` (what the module reaches into) finding no problem. Otherwise
    one INFO line says why, and what is done instead (``fallback``)."""
    if forced_public():
        reason: str | None = f"{FORCE_PUBLIC_API_ENV} is set"
    else:
        reason = checked.problem()
        if reason is None:
            reason = checks()
    if reason is None:
        return True
    log.info("%s: private parts left alone (%s): %s", library, reason, fallback)
    return False
