"""Freed heap handed back to the system after a burst.

glibc's allocator keeps memory freed by Python (the objects of hundreds of turns at once) in
its arenas for reuse: the process stays at its peak RSS long after the burst. ``malloc_trim``
returns what is free at the top of each arena and the whole unused pages within it. It
walks the heap, so it runs when a burst has ended, not after every turn.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from functools import cache

log = logging.getLogger(__name__)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None elsewhere (musl, macOS…: nothing to call)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def trim_heap() -> bool:
    """Return the allocator's free memory to the system; False where that is not glibc."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
