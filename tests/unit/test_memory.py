"""agent/memory.py: freed C heap pages go back to the system."""

from __future__ import annotations

import ctypes
import threading

from agent.memory import release_free_memory

BLOCK = 32 * 1024  # below glibc's mmap threshold: from the thread's arena
BLOCKS = 1500  # ~48 MB


def anonymous_kb() -> int:
    """The process's resident anonymous memory (kB)."""
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    raise AssertionError("no Anonymous line in smaps_rollup")


def test_free_pages_of_a_threads_arena_are_returned() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    figures: dict[str, int] = {}

    def work() -> None:
        # As a decoder does: many buffers, written to, freed but for a few, so the
        # arena cannot simply shrink from its top.
        blocks = [libc.malloc(BLOCK) for _ in range(BLOCKS)]
        for block in blocks:
            ctypes.memset(block, 1, BLOCK)
        for i, block in enumerate(blocks):
            if i % 100 != 99:
                libc.free(block)
        figures["freed"] = anonymous_kb()
        assert release_free_memory()
        figures["released"] = anonymous_kb()
        for block in blocks[99::100]:
            libc.free(block)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    # ~47 MB were freed; without the trim glibc keeps nearly all of it resident.
    assert figures["freed"] - figures["released"] > 30_000, figures
