"""Debian's Chromium for the browser tests, and nothing of it left running afterwards.

Playwright starts the browser; the browser starts zygote, GPU and renderer processes.
When the browser process dies first (seen once in CI: a zombie browser, its zygotes
spinning on both cores until the run timed out), `browser.close()` cannot reach them.
So every launch marks the browser's environment, which all its processes inherit, and
the fixtures kill whatever still carries that mark when the test ends.
"""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"  # Debian's; scripts/test installs it, Playwright never downloads one
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MARK_VARIABLE = "RIG_TEST_BROWSER"
LAUNCH_TIMEOUT_MS = 60_000
CLOSE_TIMEOUT_S = 30


def launch_options() -> tuple[str, dict[str, object]]:
    """A fresh mark, and the keyword arguments for `playwright.chromium.launch`."""
    mark = secrets.token_hex(8)
    options = {
        "executable_path": CHROMIUM,
        "args": CHROMIUM_ARGS,
        "env": {**os.environ, MARK_VARIABLE: mark},
        "timeout": LAUNCH_TIMEOUT_MS,
    }
    return mark, options


def kill_marked(mark: str) -> list[int]:
    """SIGKILL every process whose environment carries `mark`; returns their pids."""
    needle = f"{MARK_VARIABLE}={mark}".encode()
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:  # gone already, or a kernel thread
            continue
        if needle in environment.split(b"\0"):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except ProcessLookupError:
                pass
    return killed
