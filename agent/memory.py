"""Giving freed memory back to the system after the media engine's occasional work.

A thread that decodes a picture (agent/thumbnails.py) or encodes a slate
(agent/slate.py) allocates from a malloc arena of its own; glibc keeps what FFmpeg
frees there for the thread's next allocation instead of returning it. With stream
pictures every 10 s that held ~10 MB per worker process (N = 32 streams over two
workers: summed PSS 158-161 MB before, 152 MB after; docs/performance.md, Run K).
`malloc_trim` returns the free pages of every arena (the main one too) to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system (all threads' arenas); False where
    the C library cannot. Takes each arena's lock briefly: call it after a burst of
    work, not per message."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
