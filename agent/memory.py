"""glibc's allocator, tuned for the agent: at most two malloc arenas, and freed memory
given back to the system after the media engine's occasional work.

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

M_ARENA_MAX = -8  # glibc's malloc.h


def _libc_function(name: str) -> Callable[..., int] | None:
    """A function of glibc's, or None where the C library has none (musl, macOS)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or None), name)
    except (OSError, AttributeError):
        return None


_TRIM = _libc_function("malloc_trim")
_MALLOPT = _libc_function("mallopt")


def limit_malloc_arenas(count: int = 2) -> None:
    """Cap glibc's malloc arenas (call before any thread starts); no-op elsewhere.
    Without a cap every thread that allocates (the PyAV probe, asyncio's resolver
    threads) may get an arena of its own (up to 8 per core), each holding freed memory;
    2 are plenty for one event loop."""
    if _MALLOPT is not None:
        _MALLOPT(M_ARENA_MAX, count)


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system (all threads' arenas); False where
    the C library cannot. Takes each arena's lock briefly: call it after a burst of
    work, not per message."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
